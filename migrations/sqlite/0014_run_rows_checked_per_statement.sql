-- PostgreSQL's migration 0014 checks the keys of a run's rows once per statement instead of
-- once per row; SQLite keeps its foreign keys (an index lookup each, cheap here). Both now
-- also refuse a change of an exception's id: its events, adjustments and the audit trail
-- name it.
DROP TRIGGER exceptions_identity;
CREATE TRIGGER exceptions_identity BEFORE UPDATE ON exceptions
    WHEN NEW.id IS NOT OLD.id
      OR NEW.statement_id IS NOT OLD.statement_id OR NEW.key IS NOT OLD.key
      OR NEW.first_run IS NOT OLD.first_run OR NEW.category IS NOT OLD.category
      OR NEW.amount IS NOT OLD.amount OR NEW.currency IS NOT OLD.currency
BEGIN SELECT RAISE(ABORT, 'cva: an exception''s identity never changes'); END;
