-- Sending batches to providers: every submission is recorded before it is sent, and each
-- line's outcome (with the provider's transaction id or failure code) only moves forward.
-- Same rules as the PostgreSQL migration of the same number.

CREATE TABLE payment_attempts (
    id                    INTEGER PRIMARY KEY,
    batch_id              BIGINT NOT NULL REFERENCES batches (id),
    correlation_id        TEXT NOT NULL UNIQUE,
    adapter               TEXT NOT NULL CHECK (adapter IN ('gsma-mmapi', 'file')),
    status                TEXT NOT NULL DEFAULT 'recorded'
                          CHECK (status IN ('recorded', 'accepted', 'settled', 'refused', 'unknown')),
    line_count            INTEGER NOT NULL CHECK (line_count > 0),
    tries                 INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0),
    server_correlation_id TEXT,
    provider_batch_id     TEXT,
    last_error            TEXT,
    created_at            TEXT NOT NULL,
    updated_at            TEXT NOT NULL
);
CREATE INDEX payment_attempts_batch ON payment_attempts (batch_id);
CREATE TRIGGER payment_attempts_no_delete BEFORE DELETE ON payment_attempts
BEGIN SELECT RAISE(ABORT, 'cva: payment_attempts is append-only: DELETE refused'); END;

ALTER TABLE batch_lines ADD COLUMN attempt_id BIGINT REFERENCES payment_attempts (id);
ALTER TABLE batch_lines ADD COLUMN provider_transaction_id TEXT;
ALTER TABLE batch_lines ADD COLUMN failure_code TEXT;
ALTER TABLE batch_lines ADD COLUMN failure_reason TEXT;
ALTER TABLE batch_lines ADD COLUMN resolved_by TEXT;
ALTER TABLE batch_lines ADD COLUMN resolved_at TEXT;
CREATE INDEX batch_lines_attempt ON batch_lines (attempt_id);
CREATE UNIQUE INDEX batch_lines_provider_tx ON batch_lines (batch_id, provider_transaction_id)
    WHERE provider_transaction_id IS NOT NULL;

CREATE TRIGGER batch_lines_fixed BEFORE UPDATE OF batch_id, entitlement_id, household_id, amount, fee
    ON batch_lines
    WHEN NEW.batch_id <> OLD.batch_id OR NEW.entitlement_id <> OLD.entitlement_id
      OR NEW.household_id <> OLD.household_id OR NEW.amount <> OLD.amount OR NEW.fee <> OLD.fee
BEGIN
    SELECT RAISE(ABORT, 'cva: a batch line''s batch, entitlement, household, amount and fee never change');
END;
CREATE TRIGGER batch_lines_forward BEFORE UPDATE OF status ON batch_lines
    WHEN NEW.status <> OLD.status AND NOT (
           (OLD.status = 'pending' AND NEW.status IN ('in_flight', 'cancelled'))
        OR (OLD.status = 'in_flight' AND NEW.status IN ('completed', 'failed', 'unknown'))
        OR (OLD.status = 'unknown' AND NEW.status IN ('completed', 'failed'))
        OR (OLD.status = 'completed' AND NEW.status = 'failed' AND NEW.failure_code = 'reversed'))
BEGIN
    SELECT RAISE(ABORT, 'cva: a batch line cannot go back to an earlier status');
END;
CREATE TRIGGER batch_lines_provider_tx_fixed BEFORE UPDATE OF provider_transaction_id ON batch_lines
    WHEN OLD.provider_transaction_id IS NOT NULL
      AND (NEW.provider_transaction_id IS NULL OR NEW.provider_transaction_id <> OLD.provider_transaction_id)
BEGIN
    SELECT RAISE(ABORT, 'cva: a batch line''s provider transaction id never changes once known');
END;
