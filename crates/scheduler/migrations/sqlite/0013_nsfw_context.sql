-- Where adult content may be allowed (the NSFW context).
--
-- jobs.adult_allowed: what the scheduler decided at create from the
-- request's context and the user's plan; output classification reads it
-- when the job's outputs arrive. users.age_confirmed_at: when a website
-- account's owner confirmed being 18 or older (NULL: never; only accounts
-- have it). chat_nsfw: a chat's setting that its admins change (today
-- Telegram groups: platform 'telegram', chat_id the chat's id as text),
-- with the user who last changed it and when; a chat without a row is off.
ALTER TABLE jobs ADD COLUMN adult_allowed INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN age_confirmed_at INTEGER;
CREATE TABLE chat_nsfw (
    platform TEXT    NOT NULL,
    chat_id  TEXT    NOT NULL,
    enabled  INTEGER NOT NULL,
    set_by   TEXT    NOT NULL,
    set_at   INTEGER  NOT NULL,
    PRIMARY KEY (platform, chat_id)
);
