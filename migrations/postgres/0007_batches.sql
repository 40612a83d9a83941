-- Payment batches: what is sent to which provider, who signed it off, and the rule that no
-- entitlement is ever in two live payments.

CREATE TABLE batches (
    id                      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    created_at              TIMESTAMPTZ NOT NULL,
    status_changed_at       TIMESTAMPTZ NOT NULL,
    CHECK (status IN ('draft', 'cancelled') OR approvals_required IS NOT NULL)
);

CREATE TABLE batch_lines (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    batch_id BIGINT NOT NULL REFERENCES batches (id),
    step     TEXT NOT NULL CHECK (step IN ('approve', 'authorise', 'release')),
    actor    TEXT NOT NULL,
    at       TIMESTAMPTZ NOT NULL,
    UNIQUE (batch_id, actor)
);

CREATE FUNCTION cva_signoff_not_preparer() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM batches b WHERE b.id = NEW.batch_id AND b.prepared_by = NEW.actor) THEN
        RAISE EXCEPTION 'cva: the person who prepared a batch cannot sign it off' USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER batch_signoffs_four_eyes BEFORE INSERT ON batch_signoffs
    FOR EACH ROW EXECUTE FUNCTION cva_signoff_not_preparer();
CREATE TRIGGER batch_signoffs_append_only BEFORE UPDATE OR DELETE ON batch_signoffs
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER batches_no_delete BEFORE DELETE ON batches
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER batch_lines_no_delete BEFORE DELETE ON batch_lines
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
