-- People: sanctions, reports, the review queue and the audit log.
--
-- moderation_sanctions: suspensions and bans. A sanction names one user
-- (user_id, and user_ref as given) but applies to the person: every user
-- sharing its billing user (COALESCE(account_id, id), migration 0007), so
-- banning a linked chat user blocks its website account and the other way
-- round. kind is 'suspension' or 'ban'; ends_at NULL means no end (a ban,
-- or a suspension pending review); lifted_at/lifted_by once lifted.
-- placed_by is who placed it ('admin', a CLI --actor name, 'system').
CREATE TABLE moderation_sanctions (
    id         INTEGER PRIMARY KEY,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    user_ref   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    reason     TEXT NOT NULL,
    placed_by  TEXT NOT NULL,
    case_id    INTEGER,
    starts_at  INTEGER NOT NULL,
    ends_at    INTEGER,
    lifted_at  INTEGER,
    lifted_by  TEXT
);
CREATE INDEX moderation_sanctions_live ON moderation_sanctions (user_id) WHERE lifted_at IS NULL;

-- moderation_cases: the review queue. kind is 'report', 'withheld',
-- 'refusals' or 'child_safety'; user_ref the user the case is about (a
-- report's: the job's owner); job_id and artifact_id when there is one;
-- cause what opened it, in words. status 'open' or 'decided'; decision
-- ('dismiss', 'suspend', 'ban', 'lift'), decided_by, decided_at and note
-- once decided. At most one open case per kind, user and job: a second
-- report of a job joins the first's case.
CREATE TABLE moderation_cases (
    id          INTEGER PRIMARY KEY,
    kind        TEXT NOT NULL,
    user_ref    TEXT NOT NULL,
    job_id      TEXT,
    artifact_id TEXT,
    cause       TEXT NOT NULL,
    status      TEXT NOT NULL,
    decision    TEXT,
    decided_by  TEXT,
    decided_at  INTEGER,
    note        TEXT,
    created_at  INTEGER NOT NULL
);
CREATE UNIQUE INDEX moderation_cases_one_open
    ON moderation_cases (kind, user_ref, COALESCE(job_id, '')) WHERE status = 'open';
CREATE INDEX moderation_cases_queue ON moderation_cases (status, created_at);

-- moderation_reports: users reporting an output. One per reporter and job
-- (a repeat changes nothing); each belongs to the case it opened or joined.
CREATE TABLE moderation_reports (
    id         INTEGER PRIMARY KEY,
    job_id     TEXT NOT NULL,
    reporter   TEXT NOT NULL,
    bot_id     TEXT NOT NULL,
    channel    TEXT NOT NULL,
    reason     TEXT NOT NULL,
    case_id    INTEGER NOT NULL REFERENCES moderation_cases (id),
    created_at INTEGER NOT NULL,
    UNIQUE (job_id, reporter)
);
CREATE INDEX moderation_reports_by_case ON moderation_reports (case_id);

-- moderation_audit: every moderation action and who took it, append-only
-- (the triggers below refuse UPDATE and DELETE). action is 'suspend',
-- 'ban', 'lift', 'auto_suspend' or 'decide'; actor 'admin', a CLI --actor
-- name or 'system'; detail says what was done, in words.
CREATE TABLE moderation_audit (
    id          INTEGER PRIMARY KEY,
    at          INTEGER NOT NULL,
    actor       TEXT NOT NULL,
    action      TEXT NOT NULL,
    user_ref    TEXT,
    case_id     INTEGER,
    sanction_id INTEGER,
    detail      TEXT NOT NULL
);
CREATE INDEX moderation_audit_by_user ON moderation_audit (user_ref, id);

CREATE TRIGGER moderation_audit_no_update BEFORE UPDATE ON moderation_audit
BEGIN
    SELECT RAISE(ABORT, 'moderation_audit is append-only');
END;
CREATE TRIGGER moderation_audit_no_delete BEFORE DELETE ON moderation_audit
BEGIN
    SELECT RAISE(ABORT, 'moderation_audit is append-only');
END;
