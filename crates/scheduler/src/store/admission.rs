//! What admission control reads at a create ([`crate::admission`]): the
//! queue of one capability and model by priority, the capability's whole
//! queue by priority, and one user's queued jobs.

use async_trait::async_trait;

use tessera_core::{Capability, Millis, Priority, UserRef};

use super::StoreError;

/// Counting the queue a new job would join.
#[async_trait]
pub trait Admission {
    /// Queued jobs of a capability and model, counted per priority: one
    /// range of the `jobs_queue_by_model` index, which holds QUEUED rows only.
    async fn queued_by_priority(
        &self,
        capability: Capability,
        model: &str,
    ) -> Result<Vec<(Priority, i64)>, StoreError>;

    /// Queued jobs of a capability, every model, counted per priority, with
    /// when the oldest of each priority was queued: the capability's ranges
    /// of the same index.
    async fn queued_by_priority_all_models(
        &self,
        capability: Capability,
    ) -> Result<Vec<(Priority, i64, Option<Millis>)>, StoreError>;

    /// The person's queued jobs: the user's and those of every user linked
    /// with it (a website account and its chat users), each read from the
    /// partial index `jobs_queued_by_user`.
    async fn queued_of_user(&self, user_ref: &UserRef) -> Result<i64, StoreError>;
}

/// Implements [`Admission`] for a backend with a `reader()` pool.
macro_rules! impl_admission {
    ($store:ty) => {
        const _: () = {
            use tessera_core::{Capability, Millis, Priority, UserRef};

            use $crate::store::rows::capability_str;
            use $crate::store::{Admission, StoreError};

            #[async_trait::async_trait]
            impl Admission for $store {
                async fn queued_by_priority(
                    &self,
                    capability: Capability,
                    model: &str,
                ) -> Result<Vec<(Priority, i64)>, StoreError> {
                    let rows: Vec<(i32, i64)> = sqlx::query_as(
                        "SELECT priority, COUNT(*) FROM jobs \
                         WHERE status = 'QUEUED' AND capability = $1 AND model = $2 \
                         GROUP BY priority",
                    )
                    .bind(capability_str(capability))
                    .bind(model)
                    .fetch_all(self.reader())
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(p, n)| (Priority(p.clamp(0, 255) as u8), n))
                        .collect())
                }

                async fn queued_by_priority_all_models(
                    &self,
                    capability: Capability,
                ) -> Result<Vec<(Priority, i64, Option<Millis>)>, StoreError> {
                    let rows: Vec<(i32, i64, Option<i64>)> = sqlx::query_as(
                        "SELECT priority, COUNT(*), MIN(queued_at) FROM jobs \
                         WHERE status = 'QUEUED' AND capability = $1 \
                         GROUP BY priority",
                    )
                    .bind(capability_str(capability))
                    .fetch_all(self.reader())
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(p, n, oldest)| (Priority(p.clamp(0, 255) as u8), n, oldest))
                        .collect())
                }

                async fn queued_of_user(&self, user_ref: &UserRef) -> Result<i64, StoreError> {
                    // Every user of the person: the billing user
                    // (COALESCE(account_id, id)) and the users linked to it.
                    let (n,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) FROM jobs WHERE status = 'QUEUED' AND user_ref IN ( \
                           SELECT $1 \
                           UNION SELECT p.user_ref FROM users me JOIN users p \
                             ON p.id = COALESCE(me.account_id, me.id) \
                             OR p.account_id = COALESCE(me.account_id, me.id) \
                           WHERE me.user_ref = $1)",
                    )
                    .bind(user_ref.to_string())
                    .fetch_one(self.reader())
                    .await?;
                    Ok(n)
                }
            }
        };
    };
}

pub(crate) use impl_admission;
