-- Provider statements as imported: the file's identity (its SHA-256), the float balances and
-- period it reports, and every line as read. Never changed, never deleted.
-- Same rules as the PostgreSQL migration of the same number (see its comments).

CREATE TABLE statements (
    id               INTEGER PRIMARY KEY,
    provider         TEXT NOT NULL CHECK (provider <> ''),
    -- UNIQUE: a file already imported is refused by the database too.
    file_sha256      TEXT NOT NULL UNIQUE
                     CHECK (length(file_sha256) = 64 AND file_sha256 NOT GLOB '*[^0-9a-f]*'),
    mapping          TEXT NOT NULL,
    currency         TEXT NOT NULL,
    line_count       BIGINT NOT NULL CHECK (line_count >= 0),
    opening_balance  BIGINT,
    closing_balance  BIGINT,
    period_start     TEXT,
    period_end       TEXT,
    imported_by      TEXT NOT NULL,
    imported_at      TEXT NOT NULL,
    CHECK (period_start IS NULL OR period_start <= period_end)
);

-- The phone number is not stored, not even hashed (a plain hash of a phone number is easily
-- reversed); msisdn_index stays NULL, reserved for a keyed blind index.
CREATE TABLE statement_lines (
    id              INTEGER PRIMARY KEY,
    statement_id    BIGINT NOT NULL REFERENCES statements (id),
    row_no          BIGINT NOT NULL CHECK (row_no > 1),
    transaction_id  TEXT NOT NULL,
    reference       TEXT,
    msisdn_index    TEXT,
    amount          BIGINT NOT NULL,
    fee             BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status IN ('completed', 'failed', 'reversed', 'reversal', 'pending')),
    at              TEXT NOT NULL,
    balance_after   BIGINT,
    UNIQUE (statement_id, row_no)
);
CREATE INDEX statement_lines_transaction ON statement_lines (transaction_id);
CREATE INDEX statement_lines_reference ON statement_lines (reference);

CREATE TRIGGER statements_no_update BEFORE UPDATE ON statements
BEGIN SELECT RAISE(ABORT, 'cva: statements is append-only: UPDATE refused'); END;
CREATE TRIGGER statements_no_delete BEFORE DELETE ON statements
BEGIN SELECT RAISE(ABORT, 'cva: statements is append-only: DELETE refused'); END;
CREATE TRIGGER statement_lines_no_update BEFORE UPDATE ON statement_lines
BEGIN SELECT RAISE(ABORT, 'cva: statement_lines is append-only: UPDATE refused'); END;
CREATE TRIGGER statement_lines_no_delete BEFORE DELETE ON statement_lines
BEGIN SELECT RAISE(ABORT, 'cva: statement_lines is append-only: DELETE refused'); END;
