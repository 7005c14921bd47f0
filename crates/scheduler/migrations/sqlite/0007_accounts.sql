-- Website accounts and the bot users linked to them. An account is a `web:`
-- user with an email and an Argon2id password hash (a PHC string). A Telegram
-- or Discord user linked to an account points at it with account_id, and is
-- billed as it: a user's billing user is COALESCE(account_id, id), whose plan
-- applies and whose usage_daily rows are charged. Links are one hop: only
-- accounts are pointed at, and an account points at nobody. home_bot is the
-- bot id of the web key that created the account (NULL for every other user):
-- each website is its own trust domain, and only keys of that bot id sign in
-- to, read, link into, create jobs for or read the quota of the account.
ALTER TABLE users ADD COLUMN password_hash TEXT;
ALTER TABLE users ADD COLUMN home_bot TEXT;
ALTER TABLE users ADD COLUMN account_id INTEGER REFERENCES users (id);
CREATE INDEX users_by_account ON users (account_id) WHERE account_id IS NOT NULL;

-- One-time codes a bot user asks for and enters on the website to link the
-- two. Only a SHA-256 of the code is kept; a user has at most one code, and
-- asking again replaces it.
CREATE TABLE link_codes (
    code_hash  BLOB PRIMARY KEY,
    user_id    INTEGER NOT NULL UNIQUE REFERENCES users (id),
    expires_at INTEGER NOT NULL
);
