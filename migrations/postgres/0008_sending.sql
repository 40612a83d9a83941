-- Sending batches to providers: every submission is recorded before it is sent, and each
-- line's outcome (with the provider's transaction id or failure code) only moves forward.

-- One submission of some of a batch's lines to the provider (a provider batch). The
-- correlation id is the X-CorrelationID of the request; it is written and committed before
-- the request leaves, so a restarted sender asks the provider about it before re-sending.
CREATE TABLE payment_attempts (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id              BIGINT NOT NULL REFERENCES batches (id),
    correlation_id        TEXT NOT NULL UNIQUE,
    adapter               TEXT NOT NULL CHECK (adapter IN ('gsma-mmapi', 'file')),
    -- recorded: written, perhaps sent; accepted: the provider has it (batch id known);
    -- settled: every line has an outcome; refused: the provider refused the whole request
    -- (nothing paid); unknown: we could not learn whether the provider has it.
    status                TEXT NOT NULL DEFAULT 'recorded'
                          CHECK (status IN ('recorded', 'accepted', 'settled', 'refused', 'unknown')),
    line_count            INTEGER NOT NULL CHECK (line_count > 0),
    tries                 INTEGER NOT NULL DEFAULT 0 CHECK (tries >= 0),
    server_correlation_id TEXT,
    provider_batch_id     TEXT,
    last_error            TEXT,
    created_at            TIMESTAMPTZ NOT NULL,
    updated_at            TIMESTAMPTZ NOT NULL
);
CREATE INDEX payment_attempts_batch ON payment_attempts (batch_id);
CREATE TRIGGER payment_attempts_no_delete BEFORE DELETE ON payment_attempts
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();

ALTER TABLE batch_lines ADD COLUMN attempt_id BIGINT REFERENCES payment_attempts (id);
ALTER TABLE batch_lines ADD COLUMN provider_transaction_id TEXT;
ALTER TABLE batch_lines ADD COLUMN failure_code TEXT;
ALTER TABLE batch_lines ADD COLUMN failure_reason TEXT;
-- provider (status query), file (result file), statement (reconciliation)
ALTER TABLE batch_lines ADD COLUMN resolved_by TEXT;
ALTER TABLE batch_lines ADD COLUMN resolved_at TIMESTAMPTZ;
CREATE INDEX batch_lines_attempt ON batch_lines (attempt_id);
-- One provider transaction confirms at most one line of a batch.
CREATE UNIQUE INDEX batch_lines_provider_tx ON batch_lines (batch_id, provider_transaction_id)
    WHERE provider_transaction_id IS NOT NULL;

-- A line's status only moves forward: pending → in_flight | cancelled; in_flight → completed
-- | failed | unknown; unknown → completed | failed; completed → failed only as a reversal by
-- the provider. What it pays (batch, entitlement, household, amount, fee) never changes.
CREATE FUNCTION cva_batch_line_forward() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.batch_id <> OLD.batch_id OR NEW.entitlement_id <> OLD.entitlement_id
       OR NEW.household_id <> OLD.household_id OR NEW.amount <> OLD.amount OR NEW.fee <> OLD.fee THEN
        RAISE EXCEPTION 'cva: a batch line''s batch, entitlement, household, amount and fee never change'
            USING ERRCODE = 'P0001';
    END IF;
    IF NEW.status <> OLD.status AND NOT (
           (OLD.status = 'pending' AND NEW.status IN ('in_flight', 'cancelled'))
        OR (OLD.status = 'in_flight' AND NEW.status IN ('completed', 'failed', 'unknown'))
        OR (OLD.status = 'unknown' AND NEW.status IN ('completed', 'failed'))
        OR (OLD.status = 'completed' AND NEW.status = 'failed' AND NEW.failure_code = 'reversed')) THEN
        RAISE EXCEPTION 'cva: a batch line cannot go from % to %', OLD.status, NEW.status
            USING ERRCODE = 'P0001';
    END IF;
    IF OLD.provider_transaction_id IS NOT NULL
       AND NEW.provider_transaction_id IS DISTINCT FROM OLD.provider_transaction_id THEN
        RAISE EXCEPTION 'cva: a batch line''s provider transaction id never changes once known'
            USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER batch_lines_forward BEFORE UPDATE ON batch_lines
    FOR EACH ROW EXECUTE FUNCTION cva_batch_line_forward();
