-- Ledger core: accounts with running totals, journal entries and their lines.
--
-- Invariants the database enforces by itself, whatever code or stray SQL writes here:
--  * lines and entries are append-only (UPDATE, DELETE and TRUNCATE are refused);
--  * every INSERT statement into journal_lines carries complete entries whose debits equal
--    their credits per currency (checked once per statement over the transition table);
--    a later line for an existing entry collides with its line numbers, so entries cannot grow;
--  * an entry header is accepted only after its lines, and must agree with them;
--  * account totals are maintained by the lines trigger, in one UPDATE per account per
--    statement, and cannot be changed directly; a must_not_go_negative account cannot end a
--    statement below zero (CHECK constraint);
--  * an entry is reversed at most once (UNIQUE on reverses).

CREATE TABLE accounts (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    code         TEXT NOT NULL UNIQUE,
    account_type TEXT NOT NULL CHECK (account_type IN ('asset', 'liability', 'fund', 'income', 'expense')),
    normal_side  CHAR(1) NOT NULL CHECK (normal_side IN ('D', 'C')),
    currency     CHAR(3) NOT NULL,
    balance_rule TEXT NOT NULL CHECK (balance_rule IN ('must_not_go_negative', 'may_overdraw')),
    debit_total  BIGINT NOT NULL DEFAULT 0 CHECK (debit_total >= 0),
    credit_total BIGINT NOT NULL DEFAULT 0 CHECK (credit_total >= 0),
    opened_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    CONSTRAINT normal_side_matches_type CHECK (
        (account_type IN ('asset', 'expense') AND normal_side = 'D')
        OR (account_type IN ('liability', 'fund', 'income') AND normal_side = 'C')),
    CONSTRAINT balance_rule_respected CHECK (
        balance_rule = 'may_overdraw'
        OR (normal_side = 'D' AND debit_total >= credit_total)
        OR (normal_side = 'C' AND credit_total >= debit_total))
) WITH (fillfactor = 70);  -- room on each page for HOT updates of the totals

CREATE TABLE journal_entries (
    id              UUID PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    content_digest  BYTEA NOT NULL CHECK (octet_length(content_digest) = 32),
    description     TEXT NOT NULL,
    effective_date  DATE NOT NULL,
    recorded_at     TIMESTAMPTZ NOT NULL,
    metadata        JSONB NOT NULL DEFAULT '{}'::jsonb CHECK (jsonb_typeof(metadata) = 'object'),
    line_count      SMALLINT NOT NULL CHECK (line_count >= 2),
    reverses        UUID UNIQUE
);

CREATE TABLE journal_lines (
    entry_id    UUID NOT NULL,
    line_no     SMALLINT NOT NULL,
    line_count  SMALLINT NOT NULL,
    account_id  BIGINT NOT NULL,
    side        CHAR(1) NOT NULL CHECK (side IN ('D', 'C')),
    amount      BIGINT NOT NULL CHECK (amount > 0),
    currency    CHAR(3) NOT NULL,
    recorded_at TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (entry_id, line_no),
    CHECK (line_count >= 2 AND line_no BETWEEN 1 AND line_count)
);

CREATE INDEX journal_lines_account_time ON journal_lines (account_id, recorded_at);

-- Append-only.
CREATE FUNCTION cva_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'cva: % is append-only: % refused (post a reversal instead)', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'P0001';
END $$;

CREATE TRIGGER journal_entries_append_only BEFORE UPDATE OR DELETE ON journal_entries
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER journal_lines_append_only BEFORE UPDATE OR DELETE ON journal_lines
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER journal_entries_no_truncate BEFORE TRUNCATE ON journal_entries
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER journal_lines_no_truncate BEFORE TRUNCATE ON journal_lines
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER accounts_no_truncate BEFORE TRUNCATE ON accounts
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();

-- Lines: complete, balanced entries per statement; totals maintained set-wise.
CREATE FUNCTION cva_lines_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
    expected BIGINT;
    updated BIGINT;
BEGIN
    -- One pass over the new lines: per entry and currency the net amount, per entry the count
    -- against the declared line_count.
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

    -- One UPDATE per account per statement. A line whose account is unknown or holds another
    -- currency matches no row, so the counts differ.
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
    SELECT (SELECT count(*) FROM agg), (SELECT count(*) FROM upd) INTO expected, updated;
    IF updated <> expected THEN
        RAISE EXCEPTION 'cva: a line names an unknown account or a currency other than its account''s'
            USING ERRCODE = 'P0004';
    END IF;
    RETURN NULL;
END $$
-- Plans of trigger queries are cached per session; never let a plan made while a table was
-- small scan it whole once it is large.
SET enable_seqscan = off;

CREATE TRIGGER journal_lines_checked AFTER INSERT ON journal_lines
    REFERENCING NEW TABLE AS new_lines
    FOR EACH STATEMENT EXECUTE FUNCTION cva_lines_inserted();

-- Entry headers come after their lines and must agree with them.
CREATE FUNCTION cva_entries_inserted() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad RECORD;
BEGIN
    SELECT e.id INTO bad FROM new_entries e
    LEFT JOIN journal_lines l ON l.entry_id = e.id AND l.line_no = 1
    WHERE l.entry_id IS NULL OR l.line_count <> e.line_count
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cva: entry % has no lines (lines are written before their entry)', bad.id
            USING ERRCODE = 'P0005';
    END IF;
    SELECT e.id INTO bad FROM new_entries e
    LEFT JOIN journal_entries t ON t.id = e.reverses
    WHERE e.reverses IS NOT NULL AND (t.id IS NULL OR t.reverses IS NOT NULL OR t.id = e.id)
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'cva: entry % reverses a missing entry or a reversal', bad.id
            USING ERRCODE = 'P0006';
    END IF;
    RETURN NULL;
END $$
SET enable_seqscan = off;

CREATE TRIGGER journal_entries_checked AFTER INSERT ON journal_entries
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION cva_entries_inserted();

-- Account identity is immutable; totals move only through the lines trigger.
CREATE FUNCTION cva_account_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.id <> OLD.id OR NEW.code <> OLD.code OR NEW.account_type <> OLD.account_type
       OR NEW.normal_side <> OLD.normal_side OR NEW.currency <> OLD.currency THEN
        RAISE EXCEPTION 'cva: account % identity is immutable', OLD.code USING ERRCODE = 'P0007';
    END IF;
    IF NEW.debit_total <> OLD.debit_total OR NEW.credit_total <> OLD.credit_total THEN
        RAISE EXCEPTION 'cva: account totals change only by posting lines' USING ERRCODE = 'P0008';
    END IF;
    RETURN NEW;
END $$;

-- Only updates made outside a trigger (depth 0) are checked: the lines trigger's own update of
-- the totals costs no function call per account.
CREATE TRIGGER accounts_guarded BEFORE UPDATE ON accounts
    FOR EACH ROW WHEN (pg_trigger_depth() = 0) EXECUTE FUNCTION cva_account_guard();

CREATE FUNCTION cva_account_opens_empty() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.debit_total <> 0 OR NEW.credit_total <> 0 THEN
        RAISE EXCEPTION 'cva: accounts open with zero totals' USING ERRCODE = 'P0009';
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER accounts_open_empty BEFORE INSERT ON accounts
    FOR EACH ROW WHEN (NEW.debit_total <> 0 OR NEW.credit_total <> 0)
    EXECUTE FUNCTION cva_account_opens_empty();
