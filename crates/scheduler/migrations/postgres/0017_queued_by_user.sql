-- Admission control counts a user's queued jobs at every create of a plan
-- with a cap (`admission.plans.<plan>.max_queued_per_user`). Without this
-- index the count reads every job the user ever made (jobs_by_user); with
-- it, only the queued ones.
CREATE INDEX jobs_queued_by_user ON jobs (user_ref) WHERE status = 'QUEUED';
