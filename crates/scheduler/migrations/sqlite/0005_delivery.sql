-- When the frontend told the scheduler it had handed the job's outcome to the
-- user. A chat bot restarted mid-job lists its finished, undelivered jobs and
-- delivers them, so nobody waits forever for a reply lost with the process.
ALTER TABLE jobs ADD COLUMN delivered_at BIGINT;
CREATE INDEX jobs_undelivered ON jobs (frontend, bot_id, id DESC)
    WHERE delivered_at IS NULL AND status IN ('COMPLETED', 'FAILED', 'CANCELLED');
