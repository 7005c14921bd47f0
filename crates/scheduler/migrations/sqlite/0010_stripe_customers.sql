-- Stripe customers and the Tessera users they pay for. The scheduler creates
-- the Stripe customer itself at a user's first checkout and records it here
-- before sending the user to Stripe, so every later webhook naming the
-- customer finds its user, whatever order the webhooks arrive in. One
-- customer per user, one user per customer.
CREATE TABLE stripe_customers (
    customer_id TEXT PRIMARY KEY,
    user_id     INTEGER NOT NULL UNIQUE REFERENCES users (id),
    created_at  INTEGER NOT NULL
);
