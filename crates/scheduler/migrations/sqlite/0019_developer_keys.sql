-- Developer keys: personal API keys a website account makes for itself, to
-- call the OpenAI-compatible gateway (/v1) as that person. Only a SHA-256 of
-- the secret is kept. account_id is the account's user (a web user with an
-- email and a password); the key acts as that user, through its home bot.
-- capabilities is NULL for every capability, or a comma-separated list
-- (image,text,...). last_used_at is written at most once a minute per key.
CREATE TABLE developer_keys (
    id           TEXT PRIMARY KEY,
    account_id   INTEGER NOT NULL REFERENCES users (id),
    name         TEXT NOT NULL,
    secret_hash  BLOB NOT NULL UNIQUE,
    capabilities TEXT,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
);
CREATE INDEX developer_keys_by_account ON developer_keys (account_id, id);
