-- Dispatch reads the queue as heads of (capability, model, priority) ranges of
-- jobs_queue_by_model, where queue order and age order agree, so the age-ordered
-- index is no longer read on the hot path; every job paid for it on creation,
-- and for its dead entries until vacuum. The unservable-job sweep reads
-- jobs_queue_by_model too.
DROP INDEX jobs_queue_by_model_age;
