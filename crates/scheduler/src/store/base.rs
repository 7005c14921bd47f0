//! The database itself: which one it is, whether it answers, its pool, the
//! gauges the metrics read at each scrape, and closing it.

use async_trait::async_trait;

use tessera_core::{Capability, Priority};

use super::StoreError;

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Postgres => "postgres",
            Backend::Sqlite => "sqlite",
        }
    }
}

/// What the metrics read from the database at each scrape.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreGauges {
    /// QUEUED jobs by capability and priority.
    pub queued: Vec<(Capability, Priority, i64)>,
    /// RUNNING jobs by capability.
    pub running: Vec<(Capability, i64)>,
    /// Billing users (accounts and users linked to none) by plan id: a
    /// person's linked bot users are counted once, with their account.
    pub users_per_plan: Vec<(String, i64)>,
    /// Money received in the 30 days before now, net of refunds and
    /// chargebacks, per provider, plan and currency (the payments ledger).
    pub revenue_30d: Vec<super::RevenueRow>,
}

/// The connection pool(s) of a store, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Connections open now.
    pub size: u32,
    /// Of those, the idle ones.
    pub idle: u32,
    /// The most the pool(s) may open.
    pub max: u32,
}

/// The database behind the store, for probes, metrics and shutdown.
#[async_trait]
pub trait Base {
    fn backend(&self) -> Backend;

    /// Succeeds when the database answers.
    async fn ping(&self) -> Result<(), StoreError>;

    /// The connection pool's state, for the metrics.
    fn pool_stats(&self) -> PoolStats;

    /// Queue depth, running jobs, users per plan (the plan that applies at
    /// `now`) and the last 30 days' revenue, for the metrics.
    async fn gauges(&self, now: tessera_core::Millis) -> Result<StoreGauges, StoreError>;

    async fn close(&self);
}

/// Implements [`Base`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_base {
    ($store:ty, $db:ty, $backend:expr) => {
        const _: () = {
            use tessera_core::{Capability, Priority};

            use $crate::store::{Backend, Base, PoolStats, StoreError, StoreGauges};

            #[async_trait::async_trait]
            impl Base for $store {
                fn backend(&self) -> Backend {
                    $backend
                }

                async fn ping(&self) -> Result<(), StoreError> {
                    sqlx::query("SELECT 1").execute(self.reader()).await?;
                    Ok(())
                }

                async fn close(&self) {
                    self.writer().close().await;
                    self.reader().close().await;
                }

                fn pool_stats(&self) -> PoolStats {
                    let stats = |pool: &sqlx::Pool<$db>| PoolStats {
                        size: pool.size(),
                        idle: u32::try_from(pool.num_idle()).unwrap_or(u32::MAX),
                        max: pool.options().get_max_connections(),
                    };
                    let writer = stats(self.writer());
                    if std::ptr::eq(self.writer(), self.reader()) {
                        return writer;
                    }
                    let reader = stats(self.reader());
                    PoolStats {
                        size: writer.size + reader.size,
                        idle: writer.idle + reader.idle,
                        max: writer.max + reader.max,
                    }
                }

                async fn gauges(
                    &self,
                    now: tessera_core::Millis,
                ) -> Result<StoreGauges, StoreError> {
                    let corrupt = |c: &str| StoreError::Corrupt(format!("capability {c:?}"));
                    let live: Vec<(String, String, i32, i64)> = sqlx::query_as(
                        "SELECT status, capability, priority, COUNT(*) FROM jobs \
                         WHERE status IN ('QUEUED', 'RUNNING') \
                         GROUP BY status, capability, priority",
                    )
                    .fetch_all(self.reader())
                    .await?;
                    let mut gauges = StoreGauges::default();
                    for (status, capability, priority, jobs) in live {
                        let capability: Capability =
                            capability.parse().map_err(|_| corrupt(&capability))?;
                        if status == "QUEUED" {
                            let priority = Priority(priority.clamp(0, 255) as u8);
                            gauges.queued.push((capability, priority, jobs));
                        } else {
                            match gauges.running.iter_mut().find(|(c, _)| *c == capability) {
                                Some((_, n)) => *n += jobs,
                                None => gauges.running.push((capability, jobs)),
                            }
                        }
                    }
                    // Billing users only (accounts and unlinked users): a person's
                    // linked bot users share the account's plan and are counted
                    // with it, once, as the plan's revenue is.
                    gauges.users_per_plan = sqlx::query_as(&format!(
                        "SELECT {} AS plan, COUNT(*) FROM users b WHERE b.account_id IS NULL \
                         GROUP BY 1 ORDER BY 1",
                        $crate::store::users::effective_plan(1)
                    ))
                    .bind(now)
                    .fetch_all(self.reader())
                    .await?;
                    const MONTH_MS: i64 = 30 * 24 * 3600 * 1000;
                    gauges.revenue_30d =
                        $crate::store::Payments::revenue_since(self, now - MONTH_MS).await?;
                    Ok(gauges)
                }
            }
        };
    };
}

pub(crate) use impl_base;
