-- moderation_refusals: every job the prompt rules refused at create, for
-- review (the review queue reads it; the counter metric
-- tessera_moderation_refusals_total only counts). user_ref is the user as
-- the request named them (a refused create may be their first request);
-- rule the rule's name; channel the frontend (telegram, discord, web);
-- code prompt_refused or content_not_allowed; excerpt what matched, in the
-- rules' normalised spelling, at most 200 characters (never the whole
-- prompt).
CREATE TABLE moderation_refusals (
    id         INTEGER PRIMARY KEY,
    user_ref   TEXT NOT NULL,
    bot_id     TEXT NOT NULL,
    channel    TEXT NOT NULL,
    rule       TEXT NOT NULL,
    code       TEXT NOT NULL,
    excerpt    TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX moderation_refusals_by_user ON moderation_refusals (user_ref, created_at);
