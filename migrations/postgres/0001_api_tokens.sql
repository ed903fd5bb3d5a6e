-- The tables of `PostgresStore` (src/store/postgres/mod.rs), which documents the
-- encoding: the same as SQLite's, so the two stores read alike.
-- Applied migrations are checksummed: never edit this file once released; add a
-- new numbered migration instead.

-- Token records. Only the SHA-256 of a token is kept, never the token.
-- Ids and hashes compare byte-wise (COLLATE "C") whatever the database's
-- collation, so `ORDER BY id` is the order of `Uuid`.
CREATE TABLE api_tokens (
    id           TEXT COLLATE "C" NOT NULL PRIMARY KEY,  -- UUID, hyphenated lower case
    user_id      TEXT COLLATE "C" NOT NULL,              -- no foreign key: the Directory may live elsewhere
    hash         TEXT COLLATE "C" NOT NULL UNIQUE
                 CHECK (hash ~ '^[0-9a-f]{64}$'),
    hint         TEXT   NOT NULL,
    issued_at    BIGINT NOT NULL,                        -- Unix time in nanoseconds
    expires_at   BIGINT,
    revoked_at   BIGINT,
    last_used_at BIGINT
);

-- `list`, newest first: for everyone, and for one user.
CREATE INDEX api_tokens_by_issue ON api_tokens (issued_at, id);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id, issued_at, id);

-- Users of the built-in Directory. Passwords only as Argon2id PHC strings.
CREATE TABLE api_token_users (
    id                TEXT COLLATE "C" NOT NULL PRIMARY KEY,
    username          TEXT NOT NULL UNIQUE,
    roles             TEXT NOT NULL CHECK (jsonb_typeof(roles::jsonb) = 'array'),
    identity_provider TEXT NOT NULL,
    password_hash     TEXT NOT NULL
);

-- The administrator's policy: one row, its JSON form and a version that only grows.
CREATE TABLE api_token_policy (
    id      INTEGER NOT NULL PRIMARY KEY CHECK (id = 1),
    policy  TEXT    NOT NULL CHECK (jsonb_typeof(policy::jsonb) = 'object'),
    version BIGINT  NOT NULL CHECK (version > 0)
);
