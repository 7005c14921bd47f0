-- Tessera's schema on SQLite (seed section 12), kept column for column equal to PostgreSQL's.
-- Timestamps are INTEGER milliseconds since the Unix epoch (UTC), JSON is TEXT,
-- dates are TEXT 'YYYY-MM-DD', booleans 0/1: the same values PostgreSQL holds.

CREATE TABLE plans (
    id             TEXT PRIMARY KEY,
    name           TEXT NOT NULL UNIQUE,
    daily_tokens   INTEGER CHECK (daily_tokens IS NULL OR daily_tokens >= 0), -- NULL: unlimited
    priority       INTEGER NOT NULL CHECK (priority BETWEEN 0 AND 3),
    max_resolution INTEGER NOT NULL CHECK (max_resolution > 0),
    allowed_models TEXT NOT NULL,                                           -- ["model", ...] or ["*"]
    price_cents    INTEGER NOT NULL CHECK (price_cents >= 0)
);

INSERT INTO plans (id, name, daily_tokens, priority, max_resolution, allowed_models, price_cents) VALUES
    ('free',    'FREE',    20,   0, 1024, '["sdxl-1.0","wan-2.1","llama-3.2-3b","whisper-base","espeak-ng"]', 0),
    ('starter', 'STARTER', 120,  1, 1536, '["sdxl-1.0","wan-2.1","llama-3.2-3b","whisper-base","espeak-ng","flux-schnell"]', 500),
    ('pro',     'PRO',     300,  2, 2048, '["*"]', 1200),
    ('admin',   'ADMIN',   NULL, 3, 4096, '["*"]', 0);

CREATE TABLE users (
    id               INTEGER PRIMARY KEY,
    user_ref         TEXT NOT NULL UNIQUE,          -- platform:platform_user_id
    platform         TEXT NOT NULL CHECK (platform IN ('telegram', 'discord', 'web')),
    platform_user_id TEXT NOT NULL,
    plan_id          TEXT NOT NULL REFERENCES plans (id),
    email            TEXT UNIQUE,
    created_at       INTEGER NOT NULL
);

-- Frontend API keys: only a SHA-256 of the secret is kept.
CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    frontend    TEXT NOT NULL CHECK (frontend IN ('telegram', 'discord', 'web')),
    bot_id      TEXT NOT NULL,
    secret_hash BLOB NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE jobs (
    id              TEXT PRIMARY KEY,
    user_id         INTEGER NOT NULL REFERENCES users (id),
    user_ref        TEXT NOT NULL,
    frontend        TEXT NOT NULL,
    bot_id          TEXT NOT NULL,
    capability      TEXT NOT NULL,
    model           TEXT NOT NULL,
    priority        INTEGER NOT NULL,                 -- the plan's, when the job was created
    status          TEXT NOT NULL CHECK (status IN ('CREATED', 'QUEUED', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED')),
    params          TEXT NOT NULL,                   -- validated, defaults filled in
    reply_context   TEXT,
    cost_tokens     INTEGER NOT NULL CHECK (cost_tokens >= 0),
    billing_day     TEXT NOT NULL,                    -- the usage_daily row it was charged to
    refunded        INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    worker_id       TEXT,
    progress        REAL,
    error_code      TEXT,
    error_message   TEXT,
    idempotency_key TEXT,
    request_hash    BLOB,
    created_at      INTEGER NOT NULL,
    queued_at       INTEGER,
    started_at      INTEGER,
    ended_at        INTEGER
);

-- A retried create with the same key finds the first job.
CREATE UNIQUE INDEX jobs_idempotency ON jobs (frontend, bot_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- The queue. Only QUEUED rows are indexed, so each index stays as small as the
-- backlog. By capability in policy order, for queue positions; by capability and
-- model in policy order and in age order, so that every dispatch probe
-- (LIMIT 1, see store/common.rs) is an exact index range, whatever the mix.
CREATE INDEX jobs_queue_by_priority ON jobs (capability, priority DESC, queued_at, id)
    WHERE status = 'QUEUED';
CREATE INDEX jobs_queue_by_model ON jobs (capability, model, priority DESC, queued_at, id)
    WHERE status = 'QUEUED';
CREATE INDEX jobs_queue_by_model_age ON jobs (capability, model, queued_at, priority DESC, id)
    WHERE status = 'QUEUED';
-- Listing: per user, per bot, per frontend, newest first; live jobs for admins.
CREATE INDEX jobs_by_user ON jobs (user_ref, id DESC);
CREATE INDEX jobs_by_bot ON jobs (frontend, bot_id, id DESC);
CREATE INDEX jobs_by_frontend ON jobs (frontend, id DESC);
CREATE INDEX jobs_live ON jobs (status, id DESC) WHERE status IN ('QUEUED', 'RUNNING');
-- Recent run times, for estimates.
CREATE INDEX jobs_completed ON jobs (capability, ended_at DESC) WHERE status = 'COMPLETED';

-- Tokens spent per user per billing day. Each job touches only its own user's
-- row, so there is no row every job updates.
CREATE TABLE usage_daily (
    user_id      INTEGER NOT NULL REFERENCES users (id),
    day          TEXT NOT NULL,
    tokens_used  INTEGER NOT NULL CHECK (tokens_used >= 0),
    jobs_created INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user_id, day)
);

-- Generated outputs. storage_key is the seed's url: where the object store keeps it.
CREATE TABLE artifacts (
    id          TEXT PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs (id),
    type        TEXT NOT NULL CHECK (type IN ('image', 'video', 'audio', 'text')),
    storage_key TEXT NOT NULL,
    format      TEXT NOT NULL,
    width       INTEGER,
    height      INTEGER,
    file_size   INTEGER NOT NULL CHECK (file_size >= 0),
    created_at  INTEGER NOT NULL
);
CREATE INDEX artifacts_by_job ON artifacts (job_id);
