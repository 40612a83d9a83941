-- The hash-chained audit trail: append-only, one row per state-changing action.

-- Each event's hash covers its content and the previous event's hash; seq has no gaps.
CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY CHECK (seq >= 1),
    at          TIMESTAMPTZ NOT NULL,
    actor_id    BIGINT,
    actor       TEXT NOT NULL,
    role        TEXT NOT NULL,
    action      TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_id   TEXT NOT NULL,
    request_id  TEXT NOT NULL,
    digest      TEXT NOT NULL,
    prev_hash   TEXT NOT NULL,
    hash        TEXT NOT NULL UNIQUE
);
CREATE INDEX audit_events_object ON audit_events (object_type, object_id);
CREATE INDEX audit_events_actor ON audit_events (actor, at);

-- Append-only. (The journal's cva_refuse_change() tells the caller to post a reversal, which
-- means nothing here.)
CREATE FUNCTION cva_refuse_audit_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'cva: audit_events is append-only: % refused', TG_OP
        USING ERRCODE = 'P0001';
END $$;

CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_audit_change();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_audit_change();
