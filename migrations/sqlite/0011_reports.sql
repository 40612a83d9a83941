-- Reports produced for auditors: one row per file handed out (kind, parameters, format,
-- SHA-256 of the bytes). Never changed, never deleted.
-- Same rules as the PostgreSQL migration of the same number (see its comments).

CREATE TABLE reports (
    id           INTEGER PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('budget', 'household', 'trial-balance', 'journal',
                                               'reconciliation')),
    parameters   TEXT NOT NULL,
    format       TEXT NOT NULL CHECK (format IN ('csv', 'json')),
    sha256       TEXT NOT NULL
                 CHECK (length(sha256) = 64 AND sha256 NOT GLOB '*[^0-9a-f]*'),
    byte_len     BIGINT NOT NULL CHECK (byte_len >= 0),
    produced_by  TEXT NOT NULL CHECK (produced_by <> ''),
    produced_at  TEXT NOT NULL
);
CREATE INDEX reports_sha256 ON reports (sha256);

CREATE TRIGGER reports_no_update BEFORE UPDATE ON reports
BEGIN SELECT RAISE(ABORT, 'cva: reports is append-only: UPDATE refused'); END;
CREATE TRIGGER reports_no_delete BEFORE DELETE ON reports
BEGIN SELECT RAISE(ABORT, 'cva: reports is append-only: DELETE refused'); END;
