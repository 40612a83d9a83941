-- Ledger core for SQLite (the embedded default). Same invariants as the PostgreSQL schema,
-- with SQLite's row-level triggers:
--  * lines and entries are append-only (UPDATE and DELETE are refused);
--  * lines are written before their entry header; a line for an entry whose header exists is
--    refused, so a posted entry cannot grow;
--  * a line must name an existing account of the same currency;
--  * account totals are maintained by a trigger on every line;
--  * the header insert checks that the entry has all its lines, balances per currency, and
--    leaves no must_not_go_negative account below zero; it is the moment the entry posts;
--  * an entry is reversed at most once (UNIQUE on reverses).
-- Times are INTEGER microseconds since the Unix epoch (UTC); ids are 16-byte UUID blobs.

CREATE TABLE accounts (
    id           INTEGER PRIMARY KEY,
    code         TEXT NOT NULL UNIQUE,
    account_type TEXT NOT NULL CHECK (account_type IN ('asset', 'liability', 'fund', 'income', 'expense')),
    normal_side  TEXT NOT NULL CHECK (normal_side IN ('D', 'C')),
    currency     TEXT NOT NULL CHECK (length(currency) = 3),
    balance_rule TEXT NOT NULL CHECK (balance_rule IN ('must_not_go_negative', 'may_overdraw')),
    debit_total  INTEGER NOT NULL DEFAULT 0 CHECK (debit_total >= 0),
    credit_total INTEGER NOT NULL DEFAULT 0 CHECK (credit_total >= 0),
    opened_at    INTEGER NOT NULL,
    CHECK ((account_type IN ('asset', 'expense') AND normal_side = 'D')
        OR (account_type IN ('liability', 'fund', 'income') AND normal_side = 'C'))
);

CREATE TABLE journal_entries (
    id              BLOB PRIMARY KEY CHECK (length(id) = 16),
    idempotency_key TEXT NOT NULL UNIQUE,
    content_digest  BLOB NOT NULL CHECK (length(content_digest) = 32),
    description     TEXT NOT NULL,
    effective_date  TEXT NOT NULL CHECK (date(effective_date) = effective_date),
    recorded_at     INTEGER NOT NULL,
    metadata        TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(metadata) AND json_type(metadata) = 'object'),
    line_count      INTEGER NOT NULL CHECK (line_count >= 2),
    reverses        BLOB UNIQUE
);

CREATE TABLE journal_lines (
    entry_id    BLOB NOT NULL,
    line_no     INTEGER NOT NULL,
    line_count  INTEGER NOT NULL,
    account_id  INTEGER NOT NULL,
    side        TEXT NOT NULL CHECK (side IN ('D', 'C')),
    amount      INTEGER NOT NULL CHECK (typeof(amount) = 'integer' AND amount > 0),
    currency    TEXT NOT NULL,
    recorded_at INTEGER NOT NULL,
    PRIMARY KEY (entry_id, line_no),
    CHECK (line_count >= 2 AND line_no BETWEEN 1 AND line_count)
);

CREATE INDEX journal_lines_account_time ON journal_lines (account_id, recorded_at);

CREATE TRIGGER journal_entries_no_update BEFORE UPDATE ON journal_entries
BEGIN SELECT RAISE(ABORT, 'cva: journal_entries is append-only: UPDATE refused (post a reversal instead)'); END;
CREATE TRIGGER journal_entries_no_delete BEFORE DELETE ON journal_entries
BEGIN SELECT RAISE(ABORT, 'cva: journal_entries is append-only: DELETE refused (post a reversal instead)'); END;
CREATE TRIGGER journal_lines_no_update BEFORE UPDATE ON journal_lines
BEGIN SELECT RAISE(ABORT, 'cva: journal_lines is append-only: UPDATE refused (post a reversal instead)'); END;
CREATE TRIGGER journal_lines_no_delete BEFORE DELETE ON journal_lines
BEGIN SELECT RAISE(ABORT, 'cva: journal_lines is append-only: DELETE refused (post a reversal instead)'); END;
CREATE TRIGGER accounts_no_delete BEFORE DELETE ON accounts
BEGIN SELECT RAISE(ABORT, 'cva: accounts cannot be deleted'); END;
CREATE TRIGGER accounts_identity_immutable BEFORE UPDATE OF id, code, account_type, normal_side, currency ON accounts
BEGIN SELECT RAISE(ABORT, 'cva: account identity is immutable'); END;
CREATE TRIGGER accounts_open_empty BEFORE INSERT ON accounts
WHEN NEW.debit_total <> 0 OR NEW.credit_total <> 0
BEGIN SELECT RAISE(ABORT, 'cva: accounts open with zero totals'); END;

CREATE TRIGGER journal_lines_checked BEFORE INSERT ON journal_lines
BEGIN
    SELECT RAISE(ABORT, 'cva: lines cannot be added to a posted entry')
     WHERE EXISTS (SELECT 1 FROM journal_entries WHERE id = NEW.entry_id);
    SELECT RAISE(ABORT, 'cva: a line names an unknown account or a currency other than its account''s')
     WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE id = NEW.account_id AND currency = NEW.currency);
END;

CREATE TRIGGER journal_lines_totals AFTER INSERT ON journal_lines
BEGIN
    UPDATE accounts
       SET debit_total = debit_total + CASE NEW.side WHEN 'D' THEN NEW.amount ELSE 0 END,
           credit_total = credit_total + CASE NEW.side WHEN 'C' THEN NEW.amount ELSE 0 END
     WHERE id = NEW.account_id;
END;

CREATE TRIGGER journal_entries_checked AFTER INSERT ON journal_entries
BEGIN
    SELECT RAISE(ABORT, 'cva: entry has an incomplete set of lines')
     WHERE (SELECT count(*) FROM journal_lines WHERE entry_id = NEW.id) <> NEW.line_count
        OR EXISTS (SELECT 1 FROM journal_lines WHERE entry_id = NEW.id AND line_count <> NEW.line_count);
    SELECT RAISE(ABORT, 'cva: entry is unbalanced')
     WHERE EXISTS (SELECT currency FROM journal_lines WHERE entry_id = NEW.id
                   GROUP BY currency HAVING sum(CASE side WHEN 'D' THEN amount ELSE -amount END) <> 0);
    SELECT RAISE(ABORT, 'cva: balance rule: a must_not_go_negative account would go negative')
     WHERE EXISTS (SELECT 1 FROM journal_lines l JOIN accounts a ON a.id = l.account_id
                   WHERE l.entry_id = NEW.id AND a.balance_rule = 'must_not_go_negative'
                     AND CASE a.normal_side WHEN 'D' THEN a.debit_total - a.credit_total
                                            ELSE a.credit_total - a.debit_total END < 0);
    SELECT RAISE(ABORT, 'cva: entry reverses a missing entry or a reversal')
     WHERE NEW.reverses IS NOT NULL AND NOT EXISTS (
           SELECT 1 FROM journal_entries t WHERE t.id = NEW.reverses AND t.reverses IS NULL AND t.id <> NEW.id);
END;
