//! Queue positions for status answers, from a short-lived snapshot of the queue.
//!
//! A position is advice to a waiting user, asked for on every status poll. Counting
//! the jobs ahead in the database on each poll costs a range scan as long as the
//! position (measured: it held PostgreSQL to about 500 reads/s with a few thousand
//! jobs queued). Instead the head of each capability's queue (the first
//! `queue.position_cap` jobs, one index-ordered scan) is kept for at most
//! `queue.position_refresh_ms` and positions are binary searches in it. One
//! caller refreshes a stale snapshot while the others wait for it, so the database
//! sees at most one scan per capability per period. A job beyond the snapshot is
//! reported at the cap.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tessera_core::policy::{jobs_ahead, QueuedJob};
use tessera_core::{Capability, JobId};

use crate::store::{JobRecord, Store, StoreError};

struct Snapshot {
    head: Vec<QueuedJob<JobId>>,
    taken: Instant,
}

pub struct QueuePositions {
    cap: u32,
    max_age: Duration,
    snapshots: Mutex<HashMap<Capability, Arc<Snapshot>>>,
    refresh: HashMap<Capability, tokio::sync::Mutex<()>>,
}

impl QueuePositions {
    pub fn new(cap: u32, max_age: Duration) -> Self {
        Self {
            cap,
            max_age,
            snapshots: Mutex::new(HashMap::new()),
            refresh: Capability::ALL
                .into_iter()
                .map(|c| (c, tokio::sync::Mutex::new(())))
                .collect(),
        }
    }

    fn fresh(&self, c: Capability) -> Option<Arc<Snapshot>> {
        let snaps = self.snapshots.lock().expect("queue snapshot lock");
        snaps
            .get(&c)
            .filter(|s| s.taken.elapsed() < self.max_age)
            .cloned()
    }

    async fn snapshot(
        &self,
        store: &dyn Store,
        c: Capability,
    ) -> Result<Arc<Snapshot>, StoreError> {
        if let Some(s) = self.fresh(c) {
            return Ok(s);
        }
        let _one_refresher = self.refresh[&c].lock().await;
        if let Some(s) = self.fresh(c) {
            return Ok(s);
        }
        let snap = Arc::new(Snapshot {
            head: store.queue_head(c, self.cap).await?,
            taken: Instant::now(),
        });
        self.snapshots
            .lock()
            .expect("queue snapshot lock")
            .insert(c, snap.clone());
        Ok(snap)
    }

    /// Jobs of the same capability that run before this queued job, up to the cap.
    pub async fn ahead_of(&self, store: &dyn Store, job: &JobRecord) -> Result<u64, StoreError> {
        let snap = self.snapshot(store, job.capability).await?;
        let me = QueuedJob {
            id: job.id.clone(),
            capability: job.capability,
            model: job.model.clone(),
            priority: job.priority,
            fair_tag: job.fair_tag,
            queued_at: job.queued_at.unwrap_or(job.created_at),
        };
        Ok((jobs_ahead(&snap.head, &me) as u64).min(u64::from(self.cap)))
    }
}
