-- Reports produced for auditors (crate cva-reports): one row per file handed out, naming the
-- report kind, its parameters, the format and the SHA-256 of the exact bytes. Whoever holds a
-- file can ask whether it was produced here, by whom and when (`cva reports verify`); the
-- `report.produce` audit event written in the same transaction ties the row into the audit
-- chain. A record is evidence: never changed, never deleted.

CREATE TABLE reports (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('budget', 'household', 'trial-balance', 'journal',
                                               'reconciliation')),
    -- The parameters as canonical JSON text (programme, statement, run, as_of, personal_data).
    parameters   TEXT NOT NULL,
    format       TEXT NOT NULL CHECK (format IN ('csv', 'json')),
    -- SHA-256 of the file's bytes, lower-case hex. Not unique: the same report of the same
    -- database state produced twice has the same bytes.
    sha256       TEXT NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    byte_len     BIGINT NOT NULL CHECK (byte_len >= 0),
    produced_by  TEXT NOT NULL CHECK (produced_by <> ''),
    produced_at  TIMESTAMPTZ NOT NULL
);
CREATE INDEX reports_sha256 ON reports (sha256);

CREATE TRIGGER reports_append_only BEFORE UPDATE OR DELETE ON reports
    FOR EACH ROW EXECUTE FUNCTION cva_refuse_change();
CREATE TRIGGER reports_no_truncate BEFORE TRUNCATE ON reports
    FOR EACH STATEMENT EXECUTE FUNCTION cva_refuse_change();
