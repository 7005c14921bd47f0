-- Fair share within a plan: start-time fair queuing over users
-- (tessera_core::fair). Each queue, a capability and a priority, orders its
-- jobs by a start tag fixed when the job is queued: the later of the queue's
-- virtual time and the finish tag of the same user's previous job there; the
-- job finishes at its start plus its cost (its tokens, at least 1).
--
-- jobs.fair_tag: the job's start tag. A job a lost worker gives back keeps it.
-- Jobs queued before this migration start level at 0, in arrival order.
ALTER TABLE jobs ADD COLUMN fair_tag INTEGER NOT NULL DEFAULT 0;

-- fair_clocks: each queue's virtual time. Creates read it; claims move it
-- to the smallest start tag they found queued (theirs included), never back.
-- A queue without a row is at 0.
CREATE TABLE fair_clocks (
    capability   TEXT NOT NULL,
    priority     INTEGER NOT NULL,
    virtual_time INTEGER NOT NULL,
    PRIMARY KEY (capability, priority)
);

-- fair_shares: the finish tag of each billing user's latest job in each
-- queue, updated by the create that queues the next one (an upsert: racing
-- creates of one user take turns on its row, so their tags differ).
CREATE TABLE fair_shares (
    user_id    INTEGER NOT NULL REFERENCES users (id),
    capability TEXT NOT NULL,
    priority   INTEGER NOT NULL,
    finish_tag INTEGER NOT NULL,
    PRIMARY KEY (user_id, capability, priority)
);

-- The queue's indexes, in the new order. Only QUEUED rows, as before.
-- jobs_queue_fair: per capability in queue order (priority, tag, age, id),
-- for queue positions and the head a claim moves the clock to.
-- jobs_queue_by_model_fair and jobs_queue_by_model_age: per capability,
-- model and priority in queue order and in age order. A dispatch window
-- reads the head of each range in both (the policy's candidates are first
-- in one or the other), as exact ranges; both hold every column the window
-- reads, so the reads are index-only. Age order also serves the wait bound's
-- oldest jobs, the unservable sweep and the queue's groups.
DROP INDEX jobs_queue_by_priority;
DROP INDEX jobs_queue_by_model;
CREATE INDEX jobs_queue_fair ON jobs (capability, priority DESC, fair_tag, queued_at, id)
    WHERE status = 'QUEUED';
CREATE INDEX jobs_queue_by_model_fair ON jobs (capability, model, priority DESC, fair_tag, queued_at, id)
    WHERE status = 'QUEUED';
CREATE INDEX jobs_queue_by_model_age ON jobs (capability, model, priority DESC, queued_at, id, fair_tag)
    WHERE status = 'QUEUED';
