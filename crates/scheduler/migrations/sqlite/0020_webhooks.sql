-- Job webhooks (crates/scheduler/src/webhooks.rs). A job created with a
-- callback URL keeps it, and the id of the key that created it, whose
-- signing secret signs the delivery.
ALTER TABLE jobs ADD COLUMN callback_url TEXT;
ALTER TABLE jobs ADD COLUMN callback_key_id TEXT;

-- Each key's webhook signing secret (`whsec_...`), kept as it is: it signs,
-- so it must be read back. Keyed by the key's id as text, whatever kind of
-- key it is. Rotating replaces it.
CREATE TABLE webhook_secrets (
    key_id     TEXT PRIMARY KEY,
    secret     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- One delivery per job with a callback URL, written in the transaction that
-- ends the job. `id` is the webhook id every attempt sends
-- (`Tessera-Webhook-Id`); `state` is pending, delivered or abandoned. A
-- pending delivery is due at `due_at`: a claim moves `due_at` past the
-- attempt's timeout (the lease) and raises `attempts`, the fencing token its
-- outcome is recorded with.
CREATE TABLE webhook_deliveries (
    job_id           TEXT PRIMARY KEY REFERENCES jobs (id),
    id               TEXT NOT NULL UNIQUE,
    event            TEXT NOT NULL,
    url              TEXT NOT NULL,
    key_id           TEXT NOT NULL,
    state            TEXT NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    due_at           BIGINT NOT NULL,
    created_at       BIGINT NOT NULL,
    first_attempt_at BIGINT,
    last_attempt_at  BIGINT,
    last_status      INTEGER,
    last_error       TEXT,
    ended_at         BIGINT
);

CREATE INDEX webhook_deliveries_due ON webhook_deliveries (due_at) WHERE state = 'pending';
