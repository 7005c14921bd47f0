-- Whether each of a worker's engines can take a job now, as its heartbeat
-- reports it ([{"engine", "capability", "models", "ready", "since", "error"}]).
-- Workers that report none have every engine ready.
ALTER TABLE workers ADD COLUMN engines TEXT NOT NULL DEFAULT '[]';
