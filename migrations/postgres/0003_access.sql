-- Users, roles, programme scopes and sessions.

CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT NOT NULL UNIQUE CHECK (username ~ '^[a-z0-9][a-z0-9._-]{2,63}$'),
    password_hash TEXT NOT NULL,
    disabled      BOOLEAN NOT NULL DEFAULT false,
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE user_roles (
    user_id BIGINT NOT NULL REFERENCES users (id),
    role    TEXT NOT NULL CHECK (role IN ('admin', 'programme_officer', 'finance_officer', 'auditor')),
    PRIMARY KEY (user_id, role)
);

-- No row for a user means every programme.
CREATE TABLE user_programmes (
    user_id   BIGINT NOT NULL REFERENCES users (id),
    programme TEXT NOT NULL,
    PRIMARY KEY (user_id, programme)
);

CREATE TABLE sessions (
    id         UUID PRIMARY KEY,
    user_id    BIGINT NOT NULL REFERENCES users (id),
    created_at TIMESTAMPTZ NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL,
    revoked_at TIMESTAMPTZ
);
CREATE INDEX sessions_user ON sessions (user_id);
