-- Programmes, budget lines, transfer-value rules, enrolled households, duplicate flags and
-- entitlements. Personal fields are stored sealed (AEAD, `v1.<key id>.<base64>`) with keyed
-- hashes (HMAC) for exact matching; no plaintext name, phone number or ID number is stored.

CREATE TABLE programmes (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code               TEXT NOT NULL UNIQUE CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9._-]{1,39}$'),
    name               TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    donor              TEXT NOT NULL,
    grant_ref          TEXT NOT NULL,
    currency           TEXT NOT NULL CHECK (currency ~ '^[A-Z]{3}$'),
    reporting_currency TEXT NOT NULL CHECK (reporting_currency ~ '^[A-Z]{3}$'),
    starts_on          DATE NOT NULL,
    ends_on            DATE NOT NULL CHECK (ends_on >= starts_on),
    regions            TEXT NOT NULL,   -- JSON array of p-codes
    created_at         TIMESTAMPTZ NOT NULL,
    created_by         TEXT NOT NULL
);

-- Dated exchange rates to the reporting currency; append-only (a wrong rate is superseded by a
-- later recording, never edited).
CREATE TABLE programme_rates (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    programme_id BIGINT NOT NULL REFERENCES programmes (id),
    rate_date    DATE NOT NULL,
    rate         TEXT NOT NULL,       -- decimal string: reporting units per programme unit
    source       TEXT NOT NULL CHECK (length(source) BETWEEN 1 AND 200),
    recorded_at  TIMESTAMPTZ NOT NULL,
    recorded_by  TEXT NOT NULL
);
CREATE INDEX programme_rates_date ON programme_rates (programme_id, rate_date);

CREATE TABLE budget_lines (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    programme_id BIGINT NOT NULL REFERENCES programmes (id),
    code         TEXT NOT NULL CHECK (code ~ '^[a-z0-9][a-z0-9._-]{0,39}$'),
    modality     TEXT NOT NULL CHECK (modality IN ('mpca', 'cash_for_work', 'shelter')),
    amount       BIGINT NOT NULL CHECK (amount > 0),
    account      TEXT NOT NULL UNIQUE,
    created_at   TIMESTAMPTZ NOT NULL,
    UNIQUE (programme_id, code)
);

-- Versioned rules; append-only: a change is a new version, and each entitlement names the
-- version it used.
CREATE TABLE transfer_rules (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    programme_id BIGINT NOT NULL REFERENCES programmes (id),
    modality     TEXT NOT NULL CHECK (modality IN ('mpca', 'cash_for_work', 'shelter')),
    version      INTEGER NOT NULL CHECK (version >= 1),
    rule         TEXT NOT NULL,       -- JSON
    created_at   TIMESTAMPTZ NOT NULL,
    created_by   TEXT NOT NULL,
    UNIQUE (programme_id, modality, version)
);

CREATE TABLE household_imports (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    programme_id BIGINT NOT NULL REFERENCES programmes (id),
    file_sha256  TEXT NOT NULL,
    rows         INTEGER NOT NULL,
    created      INTEGER NOT NULL,
    unchanged    INTEGER NOT NULL,
    summary      TEXT NOT NULL,       -- JSON: flags by kind
    imported_at  TIMESTAMPTZ NOT NULL,
    imported_by  TEXT NOT NULL
);

CREATE TABLE households (
    id                 BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    programme_id       BIGINT NOT NULL REFERENCES programmes (id),
    submission_id      TEXT NOT NULL,
    submitted_at       TIMESTAMPTZ NOT NULL,
    enumerator         TEXT NOT NULL,
    consent            BOOLEAN NOT NULL CHECK (consent),
    head_name          TEXT NOT NULL CHECK (head_name LIKE 'v1.%'),
    head_sex           TEXT NOT NULL CHECK (head_sex IN ('female', 'male')),
    head_birth_year    INTEGER NOT NULL,
    size               INTEGER NOT NULL CHECK (size BETWEEN 1 AND 50),
    displacement       TEXT NOT NULL CHECK (displacement IN ('idp', 'host', 'returnee')),
    region             TEXT NOT NULL,
    cercle             TEXT NOT NULL,
    commune            TEXT NOT NULL,
    msisdn             TEXT CHECK (msisdn LIKE 'v1.%'),
    msisdn_index       TEXT,
    operator           TEXT,
    national_id        TEXT CHECK (national_id LIKE 'v1.%'),
    national_id_index  TEXT,
    biometric_ref      TEXT CHECK (biometric_ref LIKE 'v1.%'),
    biometric_index    TEXT,
    status             TEXT NOT NULL DEFAULT 'registered'
                       CHECK (status IN ('registered', 'verified', 'suspended', 'withdrawn')),
    enrolled_by        TEXT NOT NULL,
    enrolled_at        TIMESTAMPTZ NOT NULL,
    import_id          BIGINT REFERENCES household_imports (id),
    verified_by        TEXT,
    verified_at        TIMESTAMPTZ,
    status_changed_at  TIMESTAMPTZ NOT NULL,
    status_reason      TEXT,
    UNIQUE (programme_id, submission_id),
    -- Four eyes: whoever enrolled a household cannot verify it.
    CHECK (verified_by IS NULL OR verified_by <> enrolled_by),
    CHECK (status = 'registered' OR status = 'withdrawn' OR verified_by IS NOT NULL)
);
CREATE INDEX households_msisdn ON households (msisdn_index);
CREATE INDEX households_national_id ON households (national_id_index);
CREATE INDEX households_biometric ON households (biometric_index);
CREATE INDEX households_commune ON households (programme_id, commune);

CREATE TABLE dedup_flags (
    id             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    household_a    BIGINT NOT NULL REFERENCES households (id),
    household_b    BIGINT NOT NULL REFERENCES households (id),
    kind           TEXT NOT NULL CHECK (kind IN ('same_national_id', 'same_biometric_ref', 'shared_phone', 'similar_name')),
    score_permille INTEGER,
    status         TEXT NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'distinct', 'duplicate')),
    created_at     TIMESTAMPTZ NOT NULL,
    import_id      BIGINT REFERENCES household_imports (id),
    resolved_by    TEXT,
    resolved_at    TIMESTAMPTZ,
    reason         TEXT,
    withdrawn      BIGINT REFERENCES households (id),
    UNIQUE (household_a, household_b, kind),
    CHECK (household_a <> household_b),
    CHECK ((status = 'open') = (resolved_by IS NULL)),
    CHECK (status <> 'duplicate' OR withdrawn IN (household_a, household_b))
);
CREATE INDEX dedup_flags_open_a ON dedup_flags (household_a) WHERE status = 'open';
CREATE INDEX dedup_flags_open_b ON dedup_flags (household_b) WHERE status = 'open';

-- Shelter milestones: reported by one person, verified by another.
CREATE TABLE milestones (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    household_id BIGINT NOT NULL REFERENCES households (id),
    milestone    TEXT NOT NULL CHECK (milestone ~ '^[a-z0-9_-]{1,40}$'),
    reported_on  DATE NOT NULL,
    reported_by  TEXT NOT NULL,
    verified_by  TEXT,
    verified_at  TIMESTAMPTZ,
    UNIQUE (household_id, milestone),
    CHECK (verified_by IS NULL OR verified_by <> reported_by)
);

-- Cash-for-work days per worker and cycle, from attendance sheets.
CREATE TABLE cfw_days (
    household_id BIGINT NOT NULL REFERENCES households (id),
    cycle        TEXT NOT NULL,
    worker       INTEGER NOT NULL CHECK (worker BETWEEN 1 AND 20),
    days         INTEGER NOT NULL CHECK (days >= 0),
    sheet_sha256 TEXT NOT NULL,
    PRIMARY KEY (household_id, cycle, worker)
);

CREATE TABLE entitlements (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    household_id    BIGINT NOT NULL REFERENCES households (id),
    programme_id    BIGINT NOT NULL REFERENCES programmes (id),
    budget_line_id  BIGINT NOT NULL REFERENCES budget_lines (id),
    modality        TEXT NOT NULL CHECK (modality IN ('mpca', 'cash_for_work', 'shelter')),
    cycle           TEXT NOT NULL CHECK (cycle ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,19}$'),
    tranche         INTEGER NOT NULL CHECK (tranche >= 1),
    amount          BIGINT NOT NULL CHECK (amount > 0),
    currency        TEXT NOT NULL,
    rule_version    INTEGER NOT NULL,
    entry_id        UUID NOT NULL UNIQUE,
    status          TEXT NOT NULL DEFAULT 'granted' CHECK (status IN ('granted', 'cancelled')),
    cancel_entry_id UUID UNIQUE,
    created_at      TIMESTAMPTZ NOT NULL,
    created_by      TEXT NOT NULL,
    UNIQUE (household_id, modality, cycle, tranche),
    CHECK ((status = 'cancelled') = (cancel_entry_id IS NOT NULL))
);

-- Only verified households without an open duplicate flag receive entitlements: checked here
-- too, so no code path can grant one to a household still in adjudication.
CREATE FUNCTION cva_entitlement_eligible() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM households h WHERE h.id = NEW.household_id AND h.status = 'verified') THEN
        RAISE EXCEPTION 'cva: household % is not verified', NEW.household_id USING ERRCODE = 'P0001';
    END IF;
    IF EXISTS (SELECT 1 FROM dedup_flags f JOIN households o ON o.id = f.household_b
               WHERE f.household_a = NEW.household_id AND f.status = 'open' AND o.status <> 'withdrawn')
       OR EXISTS (SELECT 1 FROM dedup_flags f JOIN households o ON o.id = f.household_a
               WHERE f.household_b = NEW.household_id AND f.status = 'open' AND o.status <> 'withdrawn') THEN
        RAISE EXCEPTION 'cva: household % has an open duplicate flag', NEW.household_id USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER entitlements_eligible BEFORE INSERT ON entitlements
    FOR EACH ROW EXECUTE FUNCTION cva_entitlement_eligible();

CREATE TRIGGER programme_rates_append_only BEFORE UPDATE OR DELETE ON programme_rates
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER transfer_rules_append_only BEFORE UPDATE OR DELETE ON transfer_rules
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER entitlements_no_delete BEFORE DELETE ON entitlements
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
