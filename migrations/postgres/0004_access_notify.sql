-- Announce every change that can end or alter a session, so that servers caching open sessions
-- (cva-access `session_cache`) drop them at commit. Statement-level: one notification per
-- statement, delivered only if the transaction commits. Session inserts (logins) change nothing
-- cached and are not announced.
CREATE FUNCTION cva_access_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('cva_access', TG_TABLE_NAME);
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_notify AFTER UPDATE OR DELETE OR TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION cva_access_changed();
CREATE TRIGGER sessions_notify AFTER UPDATE OR DELETE OR TRUNCATE ON sessions
    FOR EACH STATEMENT EXECUTE FUNCTION cva_access_changed();
CREATE TRIGGER user_roles_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON user_roles
    FOR EACH STATEMENT EXECUTE FUNCTION cva_access_changed();
CREATE TRIGGER user_programmes_notify AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON user_programmes
    FOR EACH STATEMENT EXECUTE FUNCTION cva_access_changed();
