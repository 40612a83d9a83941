-- The plain matches of a run, packed. A reconciliation of a million statement rows is mostly
-- pairs that agree in everything (same provider transaction id, amount, fee, status, currency,
-- no effect on the float): storing each as a `reconciliation_items` row made the run's write
-- ten times slower than its matching. Those pairs are kept here instead, in order, as chunks
-- of (payment line, statement row) pairs encoded by `cva_reconciliation::packed` (zig-zag
-- deltas as LEB128 varints). Every other item (any mismatch, a match by reference or by payee,
-- a line the run settled, a match with a float effect) stays a row of `reconciliation_items`.
-- Evidence like the rest of a run: never changed, never deleted.

CREATE TABLE reconciliation_matches (
    reconciliation_id BIGINT NOT NULL REFERENCES reconciliations (id),
    chunk_no          INTEGER NOT NULL CHECK (chunk_no >= 0),
    -- Pairs in this chunk, and how many came before it in the run.
    pairs             INTEGER NOT NULL CHECK (pairs > 0),
    first_pair        BIGINT NOT NULL CHECK (first_pair >= 0),
    data              BYTEA NOT NULL,
    PRIMARY KEY (reconciliation_id, chunk_no)
);

CREATE TRIGGER reconciliation_matches_append_only BEFORE UPDATE OR DELETE ON reconciliation_matches
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER reconciliation_matches_no_truncate BEFORE TRUNCATE ON reconciliation_matches
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
