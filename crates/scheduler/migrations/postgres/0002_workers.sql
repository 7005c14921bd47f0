-- Workers as their heartbeats describe them (seed section 5.3). Kept in the
-- database so that every scheduler replica sees every worker.
CREATE TABLE workers (
    id               TEXT PRIMARY KEY,                 -- worker-gpu-0
    address          TEXT NOT NULL,                    -- base URL of its API
    status           TEXT NOT NULL CHECK (status IN ('idle', 'busy', 'draining')),
    capabilities     JSONB NOT NULL,                    -- ["image", ...]
    models           JSONB NOT NULL,                    -- installed
    loaded_models    JSONB NOT NULL,                    -- in GPU memory
    current_job      TEXT,
    gpu_name         TEXT,
    gpu_memory_used  BIGINT,                            -- MiB
    gpu_memory_total BIGINT,                            -- MiB
    gpu_utilization  REAL,                             -- percent
    first_seen_at    BIGINT NOT NULL,
    last_seen_at     BIGINT NOT NULL
);
