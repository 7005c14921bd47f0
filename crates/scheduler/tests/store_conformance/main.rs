//! One behaviour suite for every storage backend: each test runs on PostgreSQL and
//! on SQLite and must pass unchanged on both.

mod accounts;
mod common;
mod developer_keys;
mod fair;
mod jobs;
mod keys;
mod payments;
mod queue;
mod refusals;
mod review;
mod schema;
mod stripe_customers;
mod timings;
mod users;
mod webhooks;
mod withheld;
mod workers;
