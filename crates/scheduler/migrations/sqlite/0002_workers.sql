-- Workers as their heartbeats describe them (seed section 5.3). Kept in the
-- database so that every scheduler replica sees every worker.
CREATE TABLE workers (
    id               TEXT PRIMARY KEY,                 -- worker-gpu-0
    address          TEXT NOT NULL,                    -- base URL of its API
    status           TEXT NOT NULL CHECK (status IN ('idle', 'busy', 'draining')),
    capabilities     TEXT NOT NULL,                    -- ["image", ...]
    models           TEXT NOT NULL,                    -- installed
    loaded_models    TEXT NOT NULL,                    -- in GPU memory
    current_job      TEXT,
    gpu_name         TEXT,
    gpu_memory_used  INTEGER,                            -- MiB
    gpu_memory_total INTEGER,                            -- MiB
    gpu_utilization  REAL,                             -- percent
    first_seen_at    INTEGER NOT NULL,
    last_seen_at     INTEGER NOT NULL
);
