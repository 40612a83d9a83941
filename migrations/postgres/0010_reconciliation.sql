-- Reconciliation runs of a statement against our payments, the float reconciliation that goes
-- with each run, and the exceptions queue with its adjusting entries (maker-checker).
--
-- A run is evidence like the statement it reads: its rows are never changed or deleted. A
-- statement may be reconciled again (after exceptions were worked, or a late outcome); each
-- run gets the next `run_no`, and a problem found again is the same exception (one per
-- statement and `key`), never a second one.

CREATE TABLE reconciliations (
    id                  BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    statement_id        BIGINT NOT NULL REFERENCES statements (id),
    run_no              INTEGER NOT NULL CHECK (run_no >= 1),
    provider            TEXT NOT NULL,
    currency            TEXT NOT NULL,
    -- The fallback rule's time window, seconds.
    window_seconds      BIGINT NOT NULL CHECK (window_seconds >= 0),
    payments_considered BIGINT NOT NULL CHECK (payments_considered >= 0),
    -- Items per category and the skipped counts (JSON object, see matching::Summary).
    summary             TEXT NOT NULL,
    -- Lines whose outcome this run posted (unknown/in flight resolved, reversals booked).
    outcomes_posted     BIGINT NOT NULL CHECK (outcomes_posted >= 0),
    -- Float reconciliation, minor units of `currency`: the ledger's float account (as of the
    -- statement's first line, and after this run's postings) against the statement's
    -- opening and closing balances; `explained` is the sum of the listed differences,
    -- `unexplained` what is left (difference − explained).
    statement_opening   BIGINT,
    statement_closing   BIGINT,
    ledger_opening      BIGINT NOT NULL,
    ledger_closing      BIGINT NOT NULL,
    difference          BIGINT NOT NULL,
    explained           BIGINT NOT NULL,
    unexplained         BIGINT NOT NULL,
    run_by              TEXT NOT NULL,
    run_at              TIMESTAMPTZ NOT NULL,
    UNIQUE (statement_id, run_no),
    CHECK (difference = explained + unexplained)
);

-- One result line of a run: a category, the payment line and statement rows it is about,
-- the rule that paired them, its effect on the float difference and what the run did.
CREATE TABLE reconciliation_items (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reconciliation_id BIGINT NOT NULL REFERENCES reconciliations (id),
    category          TEXT NOT NULL CHECK (category IN ('matched', 'amount_mismatch',
                      'fee_mismatch', 'status_mismatch', 'missing_from_statement',
                      'unexpected_in_statement', 'duplicate_in_statement', 'reversed_by_provider')),
    rule              TEXT CHECK (rule IN ('provider_transaction_id', 'reference', 'payee_amount_date')),
    -- batch_lines.id. No foreign key: lines are never deleted (0007) and the id was read in
    -- the run's own transaction; a million probes would double the run's write time.
    line_id           BIGINT,
    -- Statement row numbers (spreadsheet rows), comma-separated, ascending; '' for none.
    statement_rows    TEXT NOT NULL,
    -- This item's part of the float difference (ledger − statement), minor units.
    float_effect      BIGINT NOT NULL,
    -- What the run did about it: confirmed / failed (an open line resolved by the
    -- statement) or reversal_booked; NULL: nothing.
    action            TEXT CHECK (action IN ('confirmed', 'failed', 'reversal_booked')),
    detail            TEXT NOT NULL
);
CREATE INDEX reconciliation_items_run ON reconciliation_items (reconciliation_id, category);

-- Differences of the float reconciliation that are not items: the opening difference,
-- ledger movements of the float the statement does not show (fundings, adjustments,
-- payments outside it) and breaks in the statement's own running balance.
CREATE TABLE reconciliation_float_lines (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reconciliation_id BIGINT NOT NULL REFERENCES reconciliations (id),
    kind              TEXT NOT NULL CHECK (kind IN ('opening_difference', 'ledger_only',
                      'running_balance_break')),
    -- The ledger entry (ledger_only) or statement row (running_balance_break) it is about.
    entry_id          UUID,
    row_no            BIGINT,
    amount            BIGINT NOT NULL,
    detail            TEXT NOT NULL
);
CREATE INDEX reconciliation_float_lines_run ON reconciliation_float_lines (reconciliation_id);

-- The exceptions queue: each item that is not matched and that the run could not settle.
CREATE TABLE exceptions (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    statement_id      BIGINT NOT NULL REFERENCES statements (id),
    -- category:line:rows — the same problem found by a later run is this same exception.
    key               TEXT NOT NULL,
    first_run         BIGINT NOT NULL REFERENCES reconciliations (id),
    last_run          BIGINT NOT NULL REFERENCES reconciliations (id),
    category          TEXT NOT NULL CHECK (category IN ('amount_mismatch', 'fee_mismatch',
                      'status_mismatch', 'missing_from_statement', 'unexpected_in_statement',
                      'duplicate_in_statement', 'reversed_by_provider')),
    line_id           BIGINT,
    statement_rows    TEXT NOT NULL,
    currency          TEXT NOT NULL,
    -- The item's float effect when found (ledger − statement), minor units.
    amount            BIGINT NOT NULL,
    detail            TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'open'
                      CHECK (status IN ('open', 'assigned', 'awaiting_approval', 'resolved')),
    assignee          TEXT,
    resolution        TEXT,
    resolved_by       TEXT,
    resolved_at       TIMESTAMPTZ,
    created_at        TIMESTAMPTZ NOT NULL,
    UNIQUE (statement_id, key),
    CHECK ((status = 'resolved') = (resolved_by IS NOT NULL AND resolved_at IS NOT NULL
                                    AND resolution IS NOT NULL))
);
CREATE INDEX exceptions_status ON exceptions (status, id);

-- Every change of an exception, in order: who, when, what, and the note.
CREATE TABLE exception_events (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exception_id  BIGINT NOT NULL REFERENCES exceptions (id),
    action        TEXT NOT NULL CHECK (action IN ('opened', 'seen_again', 'assigned', 'commented',
                  'adjustment_proposed', 'adjustment_approved', 'adjustment_rejected', 'resolved')),
    actor         TEXT NOT NULL,
    note          TEXT,
    at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX exception_events_exception ON exception_events (exception_id, id);

-- Adjusting entries: proposed by one finance officer, posted only when a second approves.
CREATE TABLE adjustments (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    exception_id  BIGINT NOT NULL REFERENCES exceptions (id),
    description   TEXT NOT NULL,
    -- The entry's lines as JSON: [{"account": …, "side": "debit"|"credit", "amount": minor}].
    lines         TEXT NOT NULL,
    currency      TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'proposed' CHECK (status IN ('proposed', 'approved', 'rejected')),
    proposed_by   TEXT NOT NULL,
    proposed_at   TIMESTAMPTZ NOT NULL,
    decided_by    TEXT,
    decided_at    TIMESTAMPTZ,
    decision_note TEXT,
    entry_id      UUID UNIQUE,
    -- Maker-checker in the database as well: the person who proposed never decides.
    CHECK (decided_by IS NULL OR decided_by <> proposed_by),
    CHECK ((status = 'proposed') = (decided_by IS NULL)),
    CHECK ((status = 'approved') = (entry_id IS NOT NULL))
);
CREATE INDEX adjustments_exception ON adjustments (exception_id);

CREATE TRIGGER reconciliations_append_only BEFORE UPDATE OR DELETE ON reconciliations
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER reconciliations_no_truncate BEFORE TRUNCATE ON reconciliations
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER reconciliation_items_append_only BEFORE UPDATE OR DELETE ON reconciliation_items
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER reconciliation_items_no_truncate BEFORE TRUNCATE ON reconciliation_items
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER reconciliation_float_lines_append_only BEFORE UPDATE OR DELETE ON reconciliation_float_lines
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER reconciliation_float_lines_no_truncate BEFORE TRUNCATE ON reconciliation_float_lines
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER exceptions_no_truncate BEFORE TRUNCATE ON exceptions
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER exception_events_no_truncate BEFORE TRUNCATE ON exception_events
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER adjustments_no_truncate BEFORE TRUNCATE ON adjustments
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER exception_events_append_only BEFORE UPDATE OR DELETE ON exception_events
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER exceptions_no_delete BEFORE DELETE ON exceptions
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER adjustments_no_delete BEFORE DELETE ON adjustments
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();

-- An exception's identity never changes and a resolved one stays resolved; an adjustment
-- is decided once, and what it posts never changes.
CREATE FUNCTION cva_exception_rules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.statement_id, NEW.key, NEW.first_run, NEW.category, NEW.amount, NEW.currency)
       IS DISTINCT FROM (OLD.statement_id, OLD.key, OLD.first_run, OLD.category, OLD.amount, OLD.currency) THEN
        RAISE EXCEPTION 'cva: an exception''s identity never changes' USING ERRCODE = 'P0001';
    END IF;
    IF OLD.status = 'resolved' AND (NEW.status <> 'resolved' OR NEW.resolution IS DISTINCT FROM OLD.resolution
       OR NEW.resolved_by IS DISTINCT FROM OLD.resolved_by) THEN
        RAISE EXCEPTION 'cva: a resolved exception stays resolved' USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER exceptions_rules BEFORE UPDATE ON exceptions
    FOR EACH ROW EXECUTE FUNCTION cva_exception_rules();

CREATE FUNCTION cva_adjustment_rules() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.status <> 'proposed'
       OR (NEW.exception_id, NEW.description, NEW.lines, NEW.currency, NEW.proposed_by, NEW.proposed_at)
          IS DISTINCT FROM (OLD.exception_id, OLD.description, OLD.lines, OLD.currency, OLD.proposed_by, OLD.proposed_at) THEN
        RAISE EXCEPTION 'cva: an adjustment is decided once and never changed' USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER adjustments_rules BEFORE UPDATE ON adjustments
    FOR EACH ROW EXECUTE FUNCTION cva_adjustment_rules();
