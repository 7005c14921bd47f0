//! Stripe customers and the users they pay for (migration
//! `0010_stripe_customers`). Stripe's webhooks name a customer, not a Tessera
//! user; the scheduler creates each customer itself at the user's first
//! checkout and records it here before the user reaches Stripe, so every
//! later webhook naming that customer resolves, in whatever order webhooks
//! arrive. A customer this map does not know is an unknown user to the
//! ledger, never a guess.

use async_trait::async_trait;

use tessera_core::{Millis, UserRef};

use super::StoreError;

/// The map between Stripe customers and users.
#[async_trait]
pub trait StripeCustomers {
    /// The user's Stripe customer, if one was recorded.
    async fn stripe_customer(&self, user_ref: &UserRef) -> Result<Option<String>, StoreError>;

    /// Records `customer_id` as the user's customer unless the user has one
    /// already; answers the user's customer as stored (the one recorded
    /// first, when two checkouts raced), or `None` when no such user exists.
    async fn put_stripe_customer(
        &self,
        user_ref: &UserRef,
        customer_id: &str,
        now: Millis,
    ) -> Result<Option<String>, StoreError>;

    /// The user a Stripe customer pays for, if the map knows the customer.
    async fn stripe_customer_user(&self, customer_id: &str) -> Result<Option<UserRef>, StoreError>;
}

/// Implements [`StripeCustomers`] for a backend with `writer()` and
/// `reader()` pools.
macro_rules! impl_stripe_customers {
    ($store:ty) => {
        const _: () = {
            use tessera_core::{Millis, UserRef};

            use $crate::store::rows::corrupt;
            use $crate::store::{StoreError, StripeCustomers};

            const BY_USER: &str = "SELECT c.customer_id FROM stripe_customers c \
                 JOIN users u ON u.id = c.user_id WHERE u.user_ref = $1";

            #[async_trait::async_trait]
            impl StripeCustomers for $store {
                async fn stripe_customer(
                    &self,
                    user_ref: &UserRef,
                ) -> Result<Option<String>, StoreError> {
                    let row: Option<(String,)> = sqlx::query_as(BY_USER)
                        .bind(user_ref.to_string())
                        .fetch_optional(self.reader())
                        .await?;
                    Ok(row.map(|(id,)| id))
                }

                async fn put_stripe_customer(
                    &self,
                    user_ref: &UserRef,
                    customer_id: &str,
                    now: Millis,
                ) -> Result<Option<String>, StoreError> {
                    let mut tx = self.writer().begin().await?;
                    sqlx::query(
                        "INSERT INTO stripe_customers (customer_id, user_id, created_at) \
                         SELECT $2, id, $3 FROM users WHERE user_ref = $1 \
                         ON CONFLICT DO NOTHING",
                    )
                    .bind(user_ref.to_string())
                    .bind(customer_id)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let row: Option<(String,)> = sqlx::query_as(BY_USER)
                        .bind(user_ref.to_string())
                        .fetch_optional(&mut *tx)
                        .await?;
                    tx.commit().await?;
                    Ok(row.map(|(id,)| id))
                }

                async fn stripe_customer_user(
                    &self,
                    customer_id: &str,
                ) -> Result<Option<UserRef>, StoreError> {
                    let row: Option<(String,)> = sqlx::query_as(
                        "SELECT u.user_ref FROM stripe_customers c \
                         JOIN users u ON u.id = c.user_id WHERE c.customer_id = $1",
                    )
                    .bind(customer_id)
                    .fetch_optional(self.reader())
                    .await?;
                    row.map(|(u,)| u.parse().map_err(|_| corrupt("user_ref", &u)))
                        .transpose()
                }
            }
        };
    };
}

pub(crate) use impl_stripe_customers;
