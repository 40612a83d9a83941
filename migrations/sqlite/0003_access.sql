-- Users, roles, programme scopes and sessions.

CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE CHECK (length(username) BETWEEN 3 AND 64),
    password_hash TEXT NOT NULL,
    disabled      INTEGER NOT NULL DEFAULT 0 CHECK (disabled IN (0, 1)),
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE user_roles (
    user_id INTEGER NOT NULL REFERENCES users (id),
    role    TEXT NOT NULL CHECK (role IN ('admin', 'programme_officer', 'finance_officer', 'auditor')),
    PRIMARY KEY (user_id, role)
);

CREATE TABLE user_programmes (
    user_id   INTEGER NOT NULL REFERENCES users (id),
    programme TEXT NOT NULL,
    PRIMARY KEY (user_id, programme)
);

CREATE TABLE sessions (
    id         BLOB PRIMARY KEY CHECK (length(id) = 16),
    user_id    INTEGER NOT NULL REFERENCES users (id),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX sessions_user ON sessions (user_id);
