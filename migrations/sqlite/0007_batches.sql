-- Payment batches: what is sent to which provider, who signed it off, and the rule that no
-- entitlement is ever in two live payments.

CREATE TABLE batches (
    id                      INTEGER PRIMARY KEY,
    programme_id            BIGINT NOT NULL REFERENCES programmes (id),
    provider                TEXT NOT NULL,
    currency                TEXT NOT NULL,
    status                  TEXT NOT NULL DEFAULT 'draft' CHECK (status IN ('draft', 'submitted',
                            'approved', 'authorised', 'released', 'sending', 'completed',
                            'partially_completed', 'failed', 'cancelled')),
    line_count              INTEGER NOT NULL CHECK (line_count > 0),
    total                   BIGINT NOT NULL CHECK (total > 0),
    fees                    BIGINT NOT NULL CHECK (fees >= 0),
    -- Set at submission from the programme's amount bands, so a later configuration change
    -- does not alter a batch already in its sign-off.
    approvals_required      INTEGER CHECK (approvals_required >= 1),
    authorisations_required INTEGER CHECK (authorisations_required >= 1),
    releases_required       INTEGER CHECK (releases_required >= 1),
    follow_up_of            BIGINT REFERENCES batches (id),
    filters                 TEXT NOT NULL,
    prepared_by             TEXT NOT NULL,
    created_at              TEXT NOT NULL,
    status_changed_at       TEXT NOT NULL,
    CHECK (status IN ('draft', 'cancelled') OR approvals_required IS NOT NULL)
);

CREATE TABLE batch_lines (
    id             INTEGER PRIMARY KEY,
    batch_id       BIGINT NOT NULL REFERENCES batches (id),
    entitlement_id BIGINT NOT NULL REFERENCES entitlements (id),
    household_id   BIGINT NOT NULL REFERENCES households (id),
    amount         BIGINT NOT NULL CHECK (amount > 0),
    fee            BIGINT NOT NULL CHECK (fee >= 0),
    status         TEXT NOT NULL DEFAULT 'pending'
                   CHECK (status IN ('pending', 'in_flight', 'completed', 'failed', 'unknown', 'cancelled'))
);
CREATE INDEX batch_lines_batch ON batch_lines (batch_id);
-- At most one live payment per entitlement: pending (in a batch not yet sent), in flight,
-- completed or unknown. Failed and cancelled lines free the entitlement for a follow-up batch.
CREATE UNIQUE INDEX batch_lines_one_live ON batch_lines (entitlement_id)
    WHERE status IN ('pending', 'in_flight', 'completed', 'unknown');

-- Sign-offs: approve, authorise, release. One person signs a batch at most once, and never a
-- batch they prepared (four eyes, in the database as well as in the service).
CREATE TABLE batch_signoffs (
    id       INTEGER PRIMARY KEY,
    batch_id BIGINT NOT NULL REFERENCES batches (id),
    step     TEXT NOT NULL CHECK (step IN ('approve', 'authorise', 'release')),
    actor    TEXT NOT NULL,
    at       TEXT NOT NULL,
    UNIQUE (batch_id, actor)
);

CREATE TRIGGER batch_signoffs_four_eyes BEFORE INSERT ON batch_signoffs
BEGIN
    SELECT RAISE(ABORT, 'cva: the person who prepared a batch cannot sign it off')
    WHERE EXISTS (SELECT 1 FROM batches b WHERE b.id = NEW.batch_id AND b.prepared_by = NEW.actor);
END;
CREATE TRIGGER batch_signoffs_no_update BEFORE UPDATE ON batch_signoffs
BEGIN SELECT RAISE(ABORT, 'cva: batch_signoffs is append-only: UPDATE refused'); END;
CREATE TRIGGER batch_signoffs_no_delete BEFORE DELETE ON batch_signoffs
BEGIN SELECT RAISE(ABORT, 'cva: batch_signoffs is append-only: DELETE refused'); END;
CREATE TRIGGER batches_no_delete BEFORE DELETE ON batches
BEGIN SELECT RAISE(ABORT, 'cva: batches is append-only: DELETE refused'); END;
CREATE TRIGGER batch_lines_no_delete BEFORE DELETE ON batch_lines
BEGIN SELECT RAISE(ABORT, 'cva: batch_lines is append-only: DELETE refused'); END;
