-- A reconciliation run writes its item, exception and event rows tens of thousands at a time,
-- one statement per table. A foreign key checks every row with a query of its own: on the
-- million-payment benchmark the three keys of 16,000 new exceptions took 0.5 s of a 0.8 s
-- insert. The parents of these keys never go away or change their id (statements and
-- reconciliations are append-only; an exception is never deleted, and now never changes its
-- id either), so all a key still guards is what is written: checked here once per statement,
-- over the rows it wrote, with a foreign key's error code (23503). SQLite keeps its foreign
-- keys (an index lookup each, cheap there).

-- TG_ARGV: pairs of (column, parent table); the parent's key is `id`.
CREATE FUNCTION cva_check_parents() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    missing BIGINT;
BEGIN
    FOR i IN 0 .. TG_NARGS / 2 - 1 LOOP
        EXECUTE format(
            'SELECT n.%1$I FROM new_rows n WHERE n.%1$I IS NOT NULL '
            'AND NOT EXISTS (SELECT 1 FROM %2$I p WHERE p.id = n.%1$I) LIMIT 1',
            TG_ARGV[2 * i], TG_ARGV[2 * i + 1]) INTO missing;
        IF missing IS NOT NULL THEN
            RAISE EXCEPTION 'cva: %.% = % names no row of %',
                TG_TABLE_NAME, TG_ARGV[2 * i], missing, TG_ARGV[2 * i + 1]
                USING ERRCODE = '23503';
        END IF;
    END LOOP;
    RETURN NULL;
END $$;

ALTER TABLE reconciliation_items DROP CONSTRAINT reconciliation_items_reconciliation_id_fkey;
CREATE TRIGGER reconciliation_items_parents AFTER INSERT ON reconciliation_items
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION cva_check_parents('reconciliation_id', 'reconciliations');

ALTER TABLE exceptions DROP CONSTRAINT exceptions_statement_id_fkey,
    DROP CONSTRAINT exceptions_first_run_fkey, DROP CONSTRAINT exceptions_last_run_fkey;
CREATE TRIGGER exceptions_parents_on_insert AFTER INSERT ON exceptions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION cva_check_parents('statement_id', 'statements', 'first_run',
        'reconciliations', 'last_run', 'reconciliations');
CREATE TRIGGER exceptions_parents_on_update AFTER UPDATE ON exceptions
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION cva_check_parents('statement_id', 'statements', 'first_run',
        'reconciliations', 'last_run', 'reconciliations');

ALTER TABLE exception_events DROP CONSTRAINT exception_events_exception_id_fkey;
CREATE TRIGGER exception_events_parents AFTER INSERT ON exception_events
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT
    EXECUTE FUNCTION cva_check_parents('exception_id', 'exceptions');

-- An exception's id is what its events, adjustments and the audit trail name.
CREATE OR REPLACE FUNCTION cva_exception_rules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.statement_id, NEW.key, NEW.first_run, NEW.category, NEW.amount, NEW.currency)
       IS DISTINCT FROM (OLD.id, OLD.statement_id, OLD.key, OLD.first_run, OLD.category, OLD.amount, OLD.currency) THEN
        RAISE EXCEPTION 'cva: an exception''s identity never changes' USING ERRCODE = 'P0001';
    END IF;
    IF OLD.status = 'resolved' AND (NEW.status <> 'resolved' OR NEW.resolution IS DISTINCT FROM OLD.resolution
       OR NEW.resolved_by IS DISTINCT FROM OLD.resolved_by) THEN
        RAISE EXCEPTION 'cva: a resolved exception stays resolved' USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END $$;
