-- Inputs frontends upload for jobs to read (the audio of a speech-to-text job).
-- The bytes live in the object store under storage_key.
CREATE TABLE inputs (
    id           TEXT PRIMARY KEY,                  -- inp_...
    frontend     TEXT NOT NULL,
    bot_id       TEXT NOT NULL,
    content_type TEXT NOT NULL,
    size         INTEGER NOT NULL CHECK (size >= 0),
    storage_key  TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);

-- An artifact's place among its job's outputs (0, 1, ...).
ALTER TABLE artifacts ADD COLUMN position INTEGER NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX artifacts_by_job_position ON artifacts (job_id, position);
DROP INDEX artifacts_by_job;

-- The running jobs, by worker: for reconciling heartbeats and restarts.
CREATE INDEX jobs_running ON jobs (worker_id) WHERE status = 'RUNNING';
