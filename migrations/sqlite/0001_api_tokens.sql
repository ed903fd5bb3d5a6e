-- The tables of `SqliteStore` (src/store/sqlite.rs), which documents the encoding.
-- Applied migrations are checksummed: never edit this file once released; add a
-- new numbered migration instead.

-- Token records. Only the SHA-256 of a token is kept, never the token.
CREATE TABLE api_tokens (
    id           TEXT    NOT NULL PRIMARY KEY,  -- UUID, hyphenated lower case
    user_id      TEXT    NOT NULL,              -- no foreign key: the Directory may live elsewhere
    hash         TEXT    NOT NULL UNIQUE
                 CHECK (length(hash) = 64 AND hash NOT GLOB '*[^0-9a-f]*'),
    hint         TEXT    NOT NULL,
    issued_at    INTEGER NOT NULL,              -- Unix time in nanoseconds
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
) STRICT;

-- `list`, newest first: for everyone, and for one user.
CREATE INDEX api_tokens_by_issue ON api_tokens (issued_at, id);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id, issued_at, id);

-- Users of the built-in Directory. Passwords only as Argon2id PHC strings.
CREATE TABLE api_token_users (
    id                TEXT NOT NULL PRIMARY KEY,
    username          TEXT NOT NULL UNIQUE,
    roles             TEXT NOT NULL CHECK (json_valid(roles) AND json_type(roles) = 'array'),
    identity_provider TEXT NOT NULL,
    password_hash     TEXT NOT NULL
) STRICT;

-- The administrator's policy: one row, its JSON form and a version that only grows.
CREATE TABLE api_token_policy (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    policy  TEXT    NOT NULL CHECK (json_valid(policy)),
    version INTEGER NOT NULL CHECK (version > 0)
) STRICT;
