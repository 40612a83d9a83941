-- Provider statements as imported: the file's identity (its SHA-256), what the provider says
-- about the float (opening and closing balances, the period covered) and every line, kept
-- as read so that matching against payments and float reconciliation can be re-run and
-- explained later. An import is evidence: it is never changed or deleted. A wrong import is
-- answered by the next statement or by an exception in reconciliation, never by editing it.

CREATE TABLE statements (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    provider         TEXT NOT NULL CHECK (provider <> ''),
    -- SHA-256 of the raw bytes, lower-case hex. UNIQUE: a file already imported is refused by
    -- the database as well as by the code, so two concurrent imports cannot both land.
    file_sha256      TEXT NOT NULL UNIQUE CHECK (file_sha256 ~ '^[0-9a-f]{64}$'),
    -- The column mapping the file was read with (simulator, generic, or a provider's own).
    mapping          TEXT NOT NULL,
    -- The currency of the balances: the lines' own when they all share one, else the
    -- import's default.
    currency         TEXT NOT NULL,
    line_count       BIGINT NOT NULL CHECK (line_count >= 0),
    -- Minor units; NULL when the statement gives no balance (or its lines mix currencies).
    opening_balance  BIGINT,
    closing_balance  BIGINT,
    -- Earliest and latest line time; NULL for a statement without lines.
    period_start     TIMESTAMPTZ,
    period_end       TIMESTAMPTZ,
    imported_by      TEXT NOT NULL,
    imported_at      TIMESTAMPTZ NOT NULL,
    CHECK (period_start IS NULL OR period_start <= period_end)
);

-- One line per statement row, as the provider wrote it. The phone number is NOT stored, not
-- even hashed: a phone number has too few digits for a plain hash to hide it (every number of
-- a country can be hashed in minutes), so a hash would be personal data under another name.
-- `msisdn_index` is kept for a keyed blind index (HMAC under the registry's PII key, as
-- households.msisdn_index) should matching ever need the number; until then it stays NULL.
CREATE TABLE statement_lines (
    id              BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    statement_id    BIGINT NOT NULL REFERENCES statements (id),
    -- Spreadsheet row number in the file (the header is row 1): what an exception points at.
    row_no          BIGINT NOT NULL CHECK (row_no > 1),
    transaction_id  TEXT NOT NULL,
    reference       TEXT,
    msisdn_index    TEXT,
    -- Minor units of `currency`; positive: paid out of the float, negative: back into it.
    amount          BIGINT NOT NULL,
    fee             BIGINT NOT NULL,
    currency        TEXT NOT NULL,
    status          TEXT NOT NULL
                    CHECK (status IN ('completed', 'failed', 'reversed', 'reversal', 'pending')),
    at              TIMESTAMPTZ NOT NULL,
    balance_after   BIGINT,
    UNIQUE (statement_id, row_no)
);
-- Matching looks lines up by the provider's transaction id and by our payment reference.
CREATE INDEX statement_lines_transaction ON statement_lines (transaction_id);
CREATE INDEX statement_lines_reference ON statement_lines (reference);

CREATE TRIGGER statements_append_only BEFORE UPDATE OR DELETE ON statements
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER statements_no_truncate BEFORE TRUNCATE ON statements
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER statement_lines_append_only BEFORE UPDATE OR DELETE ON statement_lines
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER statement_lines_no_truncate BEFORE TRUNCATE ON statement_lines
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
