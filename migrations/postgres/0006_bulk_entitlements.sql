-- Entitlement generation writes one row per household per cycle (100,000 in one statement is
-- normal). Row-by-row checks cost more than the rows themselves, so the checks of 0005 become
-- set-wise where that keeps the same guarantees, and unique constraints on columns that are
-- NULL for almost every row become partial indexes (an index entry per NULL bought nothing).

-- Eligibility: one statement-level check over the new rows (was a row trigger running three
-- subqueries per row). It also checks what the row trigger did not: the household belongs to
-- the entitlement's programme.
DROP TRIGGER entitlements_eligible ON entitlements;
DROP FUNCTION cva_entitlement_eligible();

CREATE FUNCTION cva_entitlements_eligible() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad BIGINT;
BEGIN
    SELECT n.household_id INTO bad FROM new_entitlements n
    LEFT JOIN households h ON h.id = n.household_id
    WHERE h.id IS NULL OR h.status <> 'verified' OR h.programme_id <> n.programme_id
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cva: household % is not verified in the entitlement''s programme', bad
            USING ERRCODE = 'P0001';
    END IF;
    SELECT n.household_id INTO bad FROM new_entitlements n
    JOIN dedup_flags f ON f.household_a = n.household_id AND f.status = 'open'
    JOIN households o ON o.id = f.household_b AND o.status <> 'withdrawn'
    LIMIT 1;
    IF NOT FOUND THEN
        SELECT n.household_id INTO bad FROM new_entitlements n
        JOIN dedup_flags f ON f.household_b = n.household_id AND f.status = 'open'
        JOIN households o ON o.id = f.household_a AND o.status <> 'withdrawn'
        LIMIT 1;
    END IF;
    IF FOUND THEN
        RAISE EXCEPTION 'cva: household % has an open duplicate flag', bad USING ERRCODE = 'P0001';
    END IF;
    RETURN NULL;
END $$
-- As for the ledger's triggers: a plan cached while the tables were small must not scan them
-- whole later; the checks are index probes per new row.
SET enable_seqscan = off;

CREATE TRIGGER entitlements_eligible AFTER INSERT ON entitlements
    REFERENCING NEW TABLE AS new_entitlements
    FOR EACH STATEMENT EXECUTE FUNCTION cva_entitlements_eligible();

-- An entitlement only ever changes from granted to cancelled (with its reversal); what it is
-- (household, programme, line, cycle, amount, entry) never changes. This also keeps the
-- eligibility check above sufficient: no UPDATE can move an entitlement to another household.
CREATE FUNCTION cva_entitlement_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (NEW.id, NEW.household_id, NEW.programme_id, NEW.budget_line_id, NEW.modality, NEW.cycle,
        NEW.tranche, NEW.amount, NEW.currency, NEW.rule_version, NEW.entry_id, NEW.created_at,
        NEW.created_by)
       IS DISTINCT FROM
       (OLD.id, OLD.household_id, OLD.programme_id, OLD.budget_line_id, OLD.modality, OLD.cycle,
        OLD.tranche, OLD.amount, OLD.currency, OLD.rule_version, OLD.entry_id, OLD.created_at,
        OLD.created_by)
       OR OLD.status <> 'granted' THEN
        RAISE EXCEPTION 'cva: an entitlement only changes from granted to cancelled' USING ERRCODE = 'P0001';
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER entitlements_guarded BEFORE UPDATE ON entitlements
    FOR EACH ROW EXECUTE FUNCTION cva_entitlement_guard();

-- Households are withdrawn, never deleted: their history (entitlements, audit) refers to them.
CREATE TRIGGER households_no_delete BEFORE DELETE ON households
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER households_no_truncate BEFORE TRUNCATE ON households
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();

-- A household's id and programme never change (they are what entitlements, flags and the audit
-- trail refer to).
CREATE FUNCTION cva_household_identity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'cva: a household''s id and programme never change' USING ERRCODE = 'P0001';
END $$;
CREATE TRIGGER households_identity BEFORE UPDATE ON households
    FOR EACH ROW WHEN (NEW.id <> OLD.id OR NEW.programme_id <> OLD.programme_id)
    EXECUTE FUNCTION cva_household_identity();

-- With households never deleted and their ids fixed, and the eligibility check above finding
-- each new entitlement's household (in its programme), the household foreign key checked the
-- same thing again, one lookup per row: dropped.
ALTER TABLE entitlements DROP CONSTRAINT entitlements_household_id_fkey;

-- The budget line must be one of the entitlement's programme: one composite foreign key
-- instead of two separate ones (one check per row fewer, and a stronger rule).
ALTER TABLE budget_lines ADD CONSTRAINT budget_lines_id_programme UNIQUE (id, programme_id);
ALTER TABLE entitlements DROP CONSTRAINT entitlements_programme_id_fkey;
ALTER TABLE entitlements DROP CONSTRAINT entitlements_budget_line_id_fkey;
ALTER TABLE entitlements ADD CONSTRAINT entitlements_line_of_programme
    FOREIGN KEY (budget_line_id, programme_id) REFERENCES budget_lines (id, programme_id);

-- Unique where set: cancel_entry_id (NULL until cancelled) and journal_entries.reverses (NULL
-- except on reversals).
ALTER TABLE entitlements DROP CONSTRAINT entitlements_cancel_entry_id_key;
CREATE UNIQUE INDEX entitlements_cancel_entry ON entitlements (cancel_entry_id)
    WHERE cancel_entry_id IS NOT NULL;
ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_reverses_key;
CREATE UNIQUE INDEX journal_entries_reverses ON journal_entries (reverses)
    WHERE reverses IS NOT NULL;
