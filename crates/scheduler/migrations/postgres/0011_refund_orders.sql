-- Refunds operators order, and which Telegram bot took each Stars payment.
--
-- telegram_charges: the bot (bot_id of the Telegram key) that relayed each
-- Stars charge. Telegram lets only the bot that took a payment refund it,
-- so an operator's refund of a charge goes to that bot. Charges relayed
-- before this table existed have no row and cannot be refunded this way.
CREATE TABLE telegram_charges (
    charge_id  TEXT PRIMARY KEY,
    bot_id     TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

-- refund_orders: an operator's refund of a Telegram Stars payment, which the
-- scheduler cannot make itself (it holds no bot token). The bot named by
-- bot_id asks for its pending orders, calls refundStarPayment, and reports:
-- done (the refund is then in the ledger, recorded once through the bot's
-- refund relay) or failed with Telegram's error. One order per payment
-- (payment_id is the ledger's id of the charge); ordering a failed one again
-- makes it pending again. state: pending, done, failed.
CREATE TABLE refund_orders (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    payment_id   BIGINT NOT NULL UNIQUE REFERENCES payment_events (id),
    charge_id    TEXT NOT NULL,
    user_ref     TEXT NOT NULL,
    bot_id       TEXT NOT NULL,
    amount_minor BIGINT NOT NULL,
    state        TEXT NOT NULL,
    error        TEXT,
    created_at   BIGINT NOT NULL,
    updated_at   BIGINT NOT NULL
);
CREATE INDEX refund_orders_by_bot ON refund_orders (bot_id, state);
CREATE INDEX refund_orders_by_charge ON refund_orders (charge_id);
