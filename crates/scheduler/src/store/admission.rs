//! What admission control reads at a create ([`crate::admission`]): the
//! queue of one capability and model by priority, the capability's whole
//! queue by priority, and one user's queued jobs.

use async_trait::async_trait;

use tessera_core::{Capability, Priority, UserRef};

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

    /// Queued jobs of a capability, every model, counted per priority: the
    /// capability's ranges of the same index.
    async fn queued_by_priority_all_models(
        &self,
        capability: Capability,
    ) -> Result<Vec<(Priority, i64)>, StoreError>;

    /// The user's queued jobs (the user's rows of `jobs_by_user`, filtered).
    async fn queued_of_user(&self, user_ref: &UserRef) -> Result<i64, StoreError>;
}

/// Implements [`Admission`] for a backend with a `reader()` pool.
macro_rules! impl_admission {
    ($store:ty) => {
        const _: () = {
            use tessera_core::{Capability, Priority, UserRef};

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
                ) -> Result<Vec<(Priority, i64)>, StoreError> {
                    let rows: Vec<(i32, i64)> = sqlx::query_as(
                        "SELECT priority, COUNT(*) FROM jobs \
                         WHERE status = 'QUEUED' AND capability = $1 \
                         GROUP BY priority",
                    )
                    .bind(capability_str(capability))
                    .fetch_all(self.reader())
                    .await?;
                    Ok(rows
                        .into_iter()
                        .map(|(p, n)| (Priority(p.clamp(0, 255) as u8), n))
                        .collect())
                }

                async fn queued_of_user(&self, user_ref: &UserRef) -> Result<i64, StoreError> {
                    let (n,): (i64,) = sqlx::query_as(
                        "SELECT COUNT(*) FROM jobs WHERE user_ref = $1 AND status = 'QUEUED'",
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
