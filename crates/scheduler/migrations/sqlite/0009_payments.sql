-- The payments ledger and the plans it grants.
--
-- payment_events: every payment event of every provider (stripe, telegram,
-- discord, admin), recorded once: (provider, event_id) is unique, so a
-- redelivered webhook finds its row and changes nothing. user_ref is the user
-- the event names; user_id is that user's billing user (the account a linked
-- bot user belongs to, or the user), NULL when no such user is known: such
-- events are kept and listed, never applied. Amounts are in the currency's
-- minor units (cents; Telegram Stars are whole), never negative: a refund or a
-- chargeback carries the money that went back. occurred_at is the provider's
-- event time, received_at when the scheduler recorded it; outcome is a short
-- code (applied, unchanged, unknown_user, unknown_plan) and effect the same
-- in words.
CREATE TABLE payment_events (
    id           INTEGER PRIMARY KEY,
    provider     TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    user_ref     TEXT,
    user_id      INTEGER REFERENCES users (id),
    plan_id      TEXT,
    amount_minor INTEGER NOT NULL CHECK (amount_minor >= 0),
    currency     TEXT,
    period_start INTEGER,
    period_end   INTEGER,
    reference    TEXT,
    occurred_at  INTEGER NOT NULL,
    outcome      TEXT NOT NULL,
    effect       TEXT NOT NULL,
    received_at  INTEGER NOT NULL,
    UNIQUE (provider, event_id)
);
CREATE INDEX payment_events_by_user ON payment_events (user_id, id);
CREATE INDEX payment_events_by_time ON payment_events (occurred_at);

-- What each subscription or charge (provider, reference) gives its billing
-- user: a plan until paid_until, while state is 'active'; 'ended' (refunded,
-- charged back, cancelled, revoked) is final for that reference, and ended_at
-- is the earliest such event's time. changed_at is the time of the newest
-- payment event that set plan_id (0 when none came yet), so an older event
-- delivered late never overwrites it, and paid_until only grows: the row is
-- the same whatever order the events came in. The plan that applies to a
-- user is the best (by priority) of their own plan_id and their live grants.
CREATE TABLE plan_grants (
    provider   TEXT NOT NULL,
    reference  TEXT NOT NULL,
    user_id    INTEGER NOT NULL REFERENCES users (id),
    plan_id    TEXT REFERENCES plans (id),
    paid_until INTEGER NOT NULL,
    state      TEXT NOT NULL CHECK (state IN ('active', 'ended')),
    changed_at INTEGER NOT NULL,
    ended_at   INTEGER,
    PRIMARY KEY (provider, reference)
);
CREATE INDEX plan_grants_by_user ON plan_grants (user_id);
