-- What each worker's engine runs of each model have taken, as the workers
-- report them with their results: the scheduler's learned run and load
-- times (crates/scheduler/src/timings.rs). `warm_ms` is the running mean of
-- runs that found the model loaded, `cold_ms` of runs that loaded it first;
-- their difference is the load. Each is a plain mean over its first five
-- runs, then moves a fifth of the way to each new one.
CREATE TABLE model_timings (
    worker_id  TEXT NOT NULL,
    capability TEXT NOT NULL,
    model      TEXT NOT NULL,
    warm_ms    REAL,
    warm_runs  BIGINT NOT NULL DEFAULT 0,
    cold_ms    REAL,
    cold_runs  BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (worker_id, capability, model)
);

-- Each loaded model's footprint in GPU memory, as the heartbeat reports it
-- ([{"model", "mib"}]).
ALTER TABLE workers ADD COLUMN model_memory TEXT NOT NULL DEFAULT '[]';
