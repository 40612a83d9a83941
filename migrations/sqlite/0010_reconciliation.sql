-- Reconciliation runs, float reconciliation, exceptions queue and adjusting entries.
-- Same rules as the PostgreSQL migration of the same number (comments there).

CREATE TABLE reconciliations (
    id                  INTEGER PRIMARY KEY,
    statement_id        BIGINT NOT NULL REFERENCES statements (id),
    run_no              INTEGER NOT NULL CHECK (run_no >= 1),
    provider            TEXT NOT NULL,
    currency            TEXT NOT NULL,
    window_seconds      BIGINT NOT NULL CHECK (window_seconds >= 0),
    payments_considered BIGINT NOT NULL CHECK (payments_considered >= 0),
    summary             TEXT NOT NULL,
    outcomes_posted     BIGINT NOT NULL CHECK (outcomes_posted >= 0),
    statement_opening   BIGINT,
    statement_closing   BIGINT,
    ledger_opening      BIGINT NOT NULL,
    ledger_closing      BIGINT NOT NULL,
    difference          BIGINT NOT NULL,
    explained           BIGINT NOT NULL,
    unexplained         BIGINT NOT NULL,
    run_by              TEXT NOT NULL,
    run_at              TEXT NOT NULL,
    UNIQUE (statement_id, run_no),
    CHECK (difference = explained + unexplained)
);

CREATE TABLE reconciliation_items (
    id                INTEGER PRIMARY KEY,
    reconciliation_id BIGINT NOT NULL REFERENCES reconciliations (id),
    category          TEXT NOT NULL CHECK (category IN ('matched', 'amount_mismatch',
                      'fee_mismatch', 'status_mismatch', 'missing_from_statement',
                      'unexpected_in_statement', 'duplicate_in_statement', 'reversed_by_provider')),
    rule              TEXT CHECK (rule IN ('provider_transaction_id', 'reference', 'payee_amount_date')),
    line_id           BIGINT,
    statement_rows    TEXT NOT NULL,
    float_effect      BIGINT NOT NULL,
    action            TEXT CHECK (action IN ('confirmed', 'failed', 'reversal_booked')),
    detail            TEXT NOT NULL
);
CREATE INDEX reconciliation_items_run ON reconciliation_items (reconciliation_id, category);

CREATE TABLE reconciliation_float_lines (
    id                INTEGER PRIMARY KEY,
    reconciliation_id BIGINT NOT NULL REFERENCES reconciliations (id),
    kind              TEXT NOT NULL CHECK (kind IN ('opening_difference', 'ledger_only',
                      'running_balance_break')),
    entry_id          TEXT,
    row_no            BIGINT,
    amount            BIGINT NOT NULL,
    detail            TEXT NOT NULL
);
CREATE INDEX reconciliation_float_lines_run ON reconciliation_float_lines (reconciliation_id);

CREATE TABLE exceptions (
    id                INTEGER PRIMARY KEY,
    statement_id      BIGINT NOT NULL REFERENCES statements (id),
    key               TEXT NOT NULL,
    first_run         BIGINT NOT NULL REFERENCES reconciliations (id),
    last_run          BIGINT NOT NULL REFERENCES reconciliations (id),
    category          TEXT NOT NULL CHECK (category IN ('amount_mismatch', 'fee_mismatch',
                      'status_mismatch', 'missing_from_statement', 'unexpected_in_statement',
                      'duplicate_in_statement', 'reversed_by_provider')),
    line_id           BIGINT,
    statement_rows    TEXT NOT NULL,
    currency          TEXT NOT NULL,
    amount            BIGINT NOT NULL,
    detail            TEXT NOT NULL,
    status            TEXT NOT NULL DEFAULT 'open'
                      CHECK (status IN ('open', 'assigned', 'awaiting_approval', 'resolved')),
    assignee          TEXT,
    resolution        TEXT,
    resolved_by       TEXT,
    resolved_at       TEXT,
    created_at        TEXT NOT NULL,
    UNIQUE (statement_id, key),
    CHECK ((status = 'resolved') = (resolved_by IS NOT NULL AND resolved_at IS NOT NULL
                                    AND resolution IS NOT NULL))
);
CREATE INDEX exceptions_status ON exceptions (status, id);

CREATE TABLE exception_events (
    id            INTEGER PRIMARY KEY,
    exception_id  BIGINT NOT NULL REFERENCES exceptions (id),
    action        TEXT NOT NULL CHECK (action IN ('opened', 'seen_again', 'assigned', 'commented',
                  'adjustment_proposed', 'adjustment_approved', 'adjustment_rejected', 'resolved')),
    actor         TEXT NOT NULL,
    note          TEXT,
    at            TEXT NOT NULL
);
CREATE INDEX exception_events_exception ON exception_events (exception_id, id);

CREATE TABLE adjustments (
    id            INTEGER PRIMARY KEY,
    exception_id  BIGINT NOT NULL REFERENCES exceptions (id),
    description   TEXT NOT NULL,
    lines         TEXT NOT NULL,
    currency      TEXT NOT NULL,
    status        TEXT NOT NULL DEFAULT 'proposed' CHECK (status IN ('proposed', 'approved', 'rejected')),
    proposed_by   TEXT NOT NULL,
    proposed_at   TEXT NOT NULL,
    decided_by    TEXT,
    decided_at    TEXT,
    decision_note TEXT,
    entry_id      TEXT UNIQUE,
    CHECK (decided_by IS NULL OR decided_by <> proposed_by),
    CHECK ((status = 'proposed') = (decided_by IS NULL)),
    CHECK ((status = 'approved') = (entry_id IS NOT NULL))
);
CREATE INDEX adjustments_exception ON adjustments (exception_id);

CREATE TRIGGER reconciliations_no_update BEFORE UPDATE ON reconciliations
BEGIN SELECT RAISE(ABORT, 'cva: reconciliations is append-only: UPDATE refused'); END;
CREATE TRIGGER reconciliations_no_delete BEFORE DELETE ON reconciliations
BEGIN SELECT RAISE(ABORT, 'cva: reconciliations is append-only: DELETE refused'); END;
CREATE TRIGGER reconciliation_items_no_update BEFORE UPDATE ON reconciliation_items
BEGIN SELECT RAISE(ABORT, 'cva: reconciliation_items is append-only: UPDATE refused'); END;
CREATE TRIGGER reconciliation_items_no_delete BEFORE DELETE ON reconciliation_items
BEGIN SELECT RAISE(ABORT, 'cva: reconciliation_items is append-only: DELETE refused'); END;
CREATE TRIGGER reconciliation_float_lines_no_update BEFORE UPDATE ON reconciliation_float_lines
BEGIN SELECT RAISE(ABORT, 'cva: reconciliation_float_lines is append-only: UPDATE refused'); END;
CREATE TRIGGER reconciliation_float_lines_no_delete BEFORE DELETE ON reconciliation_float_lines
BEGIN SELECT RAISE(ABORT, 'cva: reconciliation_float_lines is append-only: DELETE refused'); END;
CREATE TRIGGER exception_events_no_update BEFORE UPDATE ON exception_events
BEGIN SELECT RAISE(ABORT, 'cva: exception_events is append-only: UPDATE refused'); END;
CREATE TRIGGER exception_events_no_delete BEFORE DELETE ON exception_events
BEGIN SELECT RAISE(ABORT, 'cva: exception_events is append-only: DELETE refused'); END;
CREATE TRIGGER exceptions_no_delete BEFORE DELETE ON exceptions
BEGIN SELECT RAISE(ABORT, 'cva: exceptions are never deleted'); END;
CREATE TRIGGER adjustments_no_delete BEFORE DELETE ON adjustments
BEGIN SELECT RAISE(ABORT, 'cva: adjustments are never deleted'); END;

CREATE TRIGGER exceptions_identity BEFORE UPDATE ON exceptions
    WHEN NEW.statement_id IS NOT OLD.statement_id OR NEW.key IS NOT OLD.key
      OR NEW.first_run IS NOT OLD.first_run OR NEW.category IS NOT OLD.category
      OR NEW.amount IS NOT OLD.amount OR NEW.currency IS NOT OLD.currency
BEGIN SELECT RAISE(ABORT, 'cva: an exception''s identity never changes'); END;
CREATE TRIGGER exceptions_resolved_final BEFORE UPDATE ON exceptions
    WHEN OLD.status = 'resolved' AND (NEW.status <> 'resolved'
      OR NEW.resolution IS NOT OLD.resolution OR NEW.resolved_by IS NOT OLD.resolved_by)
BEGIN SELECT RAISE(ABORT, 'cva: a resolved exception stays resolved'); END;
CREATE TRIGGER adjustments_decided_once BEFORE UPDATE ON adjustments
    WHEN OLD.status <> 'proposed'
      OR NEW.exception_id IS NOT OLD.exception_id OR NEW.description IS NOT OLD.description
      OR NEW.lines IS NOT OLD.lines OR NEW.currency IS NOT OLD.currency
      OR NEW.proposed_by IS NOT OLD.proposed_by OR NEW.proposed_at IS NOT OLD.proposed_at
BEGIN SELECT RAISE(ABORT, 'cva: an adjustment is decided once and never changed'); END;
