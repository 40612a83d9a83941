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
    SELECT n.budget_line_id INTO bad
    FROM (SELECT DISTINCT budget_line_id, programme_id FROM new_entitlements) n
    LEFT JOIN budget_lines b ON b.id = n.budget_line_id AND b.programme_id = n.programme_id
    WHERE b.id IS NULL
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cva: budget line % is not one of the entitlement''s programme', bad
            USING ERRCODE = 'P0001';
    END IF;
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

-- The budget line must be one of the entitlement's programme. All the rows of a generation
-- share one line, so the eligibility trigger checks each distinct (line, programme) pair once
-- instead of a foreign key probing budget_lines once per row; budget lines and programmes are
-- never deleted and a line never moves to another programme, which keeps that check true.
ALTER TABLE entitlements DROP CONSTRAINT entitlements_programme_id_fkey;
ALTER TABLE entitlements DROP CONSTRAINT entitlements_budget_line_id_fkey;
CREATE FUNCTION cva_budget_line_identity() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'cva: a budget line''s id and programme never change' USING ERRCODE = 'P0001';
END $$;
CREATE TRIGGER budget_lines_identity BEFORE UPDATE ON budget_lines
    FOR EACH ROW WHEN (NEW.id <> OLD.id OR NEW.programme_id <> OLD.programme_id)
    EXECUTE FUNCTION cva_budget_line_identity();
CREATE TRIGGER budget_lines_no_delete BEFORE DELETE ON budget_lines
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER budget_lines_no_truncate BEFORE TRUNCATE ON budget_lines
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER programmes_no_delete BEFORE DELETE ON programmes
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER programmes_no_truncate BEFORE TRUNCATE ON programmes
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();

-- Unique where set: cancel_entry_id (NULL until cancelled) and journal_entries.reverses (NULL
-- except on reversals).
ALTER TABLE entitlements DROP CONSTRAINT entitlements_cancel_entry_id_key;
CREATE UNIQUE INDEX entitlements_cancel_entry ON entitlements (cancel_entry_id)
    WHERE cancel_entry_id IS NOT NULL;
ALTER TABLE journal_entries DROP CONSTRAINT journal_entries_reverses_key;
CREATE UNIQUE INDEX journal_entries_reverses ON journal_entries (reverses)
    WHERE reverses IS NOT NULL;

-- Ledger lines: a bulk posting (an entitlement cycle opens and credits one account per
-- household) updates the totals of tens of thousands of accounts in one statement. Probing the
-- accounts' primary key once per account (the plan 0001 forces, right for small postings)
-- then costs more than reading the accounts table once and hash-joining, so above 5,000
-- accounts the same UPDATE runs with nested loops off. Each branch is a separate statement
-- with its own cached plan, made under the settings in force when it first runs; the settings
-- are the function's own (its SET clause), restored when it returns.
CREATE OR REPLACE FUNCTION cva_lines_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
    expected BIGINT;
    updated BIGINT;
BEGIN
    SELECT entry_id, bool_or(net <> 0) AS unbalanced INTO bad FROM (
        SELECT entry_id,
               sum(CASE side WHEN 'D' THEN amount ELSE -amount END) AS net,
               count(*) AS n, min(line_count) AS lc_min, max(line_count) AS lc_max
        FROM new_lines GROUP BY entry_id, currency) s
    GROUP BY entry_id
    HAVING bool_or(net <> 0) OR sum(n) <> min(lc_min) OR min(lc_min) <> max(lc_max)
    LIMIT 1;
    IF FOUND AND bad.unbalanced THEN
        RAISE EXCEPTION 'cva: entry % is unbalanced', bad.entry_id USING ERRCODE = 'P0002';
    ELSIF FOUND THEN
        RAISE EXCEPTION 'cva: entry % has an incomplete set of lines', bad.entry_id USING ERRCODE = 'P0003';
    END IF;

    SELECT count(DISTINCT account_id) INTO expected FROM new_lines;
    IF expected <= 5000 THEN
        WITH agg AS (
            SELECT account_id, min(currency) AS currency, max(currency) AS currency_max,
                   sum(CASE side WHEN 'D' THEN amount ELSE 0 END) AS d,
                   sum(CASE side WHEN 'C' THEN amount ELSE 0 END) AS c
            FROM new_lines GROUP BY account_id),
        upd AS (
            UPDATE accounts a
               SET debit_total = a.debit_total + agg.d, credit_total = a.credit_total + agg.c
              FROM agg
             WHERE a.id = agg.account_id AND a.currency = agg.currency AND agg.currency = agg.currency_max
            RETURNING 1)
        SELECT count(*) FROM upd INTO updated;
    ELSE
        PERFORM set_config('enable_seqscan', 'on', true);
        PERFORM set_config('enable_nestloop', 'off', true);
        WITH agg AS (
            SELECT account_id, min(currency) AS currency, max(currency) AS currency_max,
                   sum(CASE side WHEN 'D' THEN amount ELSE 0 END) AS d,
                   sum(CASE side WHEN 'C' THEN amount ELSE 0 END) AS c
            FROM new_lines GROUP BY account_id),
        upd AS (
            UPDATE accounts a
               SET debit_total = a.debit_total + agg.d, credit_total = a.credit_total + agg.c
              FROM agg
             WHERE a.id = agg.account_id AND a.currency = agg.currency AND agg.currency = agg.currency_max
            RETURNING 1)
        SELECT count(*) FROM upd INTO updated;
    END IF;
    -- A line whose account is unknown or holds another currency matches no row.
    IF updated <> expected THEN
        RAISE EXCEPTION 'cva: a line names an unknown account or a currency other than its account''s'
            USING ERRCODE = 'P0004';
    END IF;
    RETURN NULL;
END $$
SET enable_seqscan = off
SET enable_nestloop = on;

-- Identifier columns compare bytes: account codes, idempotency keys, submission ids, p-codes and
-- blind indexes are ASCII identifiers, not words to sort for a reader, and the database's
-- default collation (often a language's) would run a locale comparison for every index probe
-- and insert. For ASCII, byte order is also the order the C.UTF-8 or en_US locales give these
-- codes' lists, except case, which codes do not mix.
ALTER TABLE accounts ALTER COLUMN code TYPE TEXT COLLATE "C";
ALTER TABLE journal_entries ALTER COLUMN idempotency_key TYPE TEXT COLLATE "C";
ALTER TABLE households
    ALTER COLUMN submission_id TYPE TEXT COLLATE "C",
    ALTER COLUMN commune TYPE TEXT COLLATE "C",
    ALTER COLUMN msisdn_index TYPE TEXT COLLATE "C",
    ALTER COLUMN national_id_index TYPE TEXT COLLATE "C",
    ALTER COLUMN biometric_index TYPE TEXT COLLATE "C";
ALTER TABLE entitlements
    ALTER COLUMN modality TYPE TEXT COLLATE "C",
    ALTER COLUMN cycle TYPE TEXT COLLATE "C";
ALTER TABLE audit_events
    ALTER COLUMN object_type TYPE TEXT COLLATE "C",
    ALTER COLUMN object_id TYPE TEXT COLLATE "C",
    ALTER COLUMN actor TYPE TEXT COLLATE "C";
