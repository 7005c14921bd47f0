//! The orphan sweep: objects in the artifact store that no row names.
//!
//! An artifact's or input's bytes are written before the row that names them
//! commits, so a recorded file always has its bytes. A crash (or a lost
//! database) between the two leaves an object nothing will ever read; a
//! result refused after its objects were written deletes them itself, but
//! best effort only. This sweep finds the rest: it lists `jobs/` and
//! `inputs/`, asks the store which of those keys a row names, and deletes the
//! others, sparing any object younger than `artifacts.orphan_grace_secs`,
//! whose row may be committing right now. Keys that are not Tessera's shape
//! (no job or input id in them) are left alone: Tessera never wrote them.
//!
//! It runs right after start and then every `artifacts.orphan_sweep_secs`.
//! Several replicas may sweep at once: deleting an object already gone is
//! not an error.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tessera_core::{InputId, JobId, Millis};
use tokio::sync::watch;

use crate::artifacts::Blobs;
use crate::config::ArtifactsConfig;
use crate::store::Store;

/// Keys looked up in one query.
const BATCH: usize = 500;

/// The job an artifact key (`jobs/{job}-{attempt}-{position}.{format}`)
/// belongs to, when the key has Tessera's shape.
pub fn artifact_key_job(key: &str) -> Option<JobId> {
    let rest = key.strip_prefix("jobs/")?;
    let (job, rest) = rest.split_once('-')?;
    let (attempt, rest) = rest.split_once('-')?;
    let (position, format) = rest.split_once('.')?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let format_ok = (1..=8).contains(&format.len())
        && format
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !(digits(attempt) && digits(position) && format_ok) {
        return None;
    }
    job.parse().ok()
}

/// The input an input key (`inputs/{input}`) holds, when the key has
/// Tessera's shape.
pub fn input_key_input(key: &str) -> Option<InputId> {
    key.strip_prefix("inputs/")?.parse().ok()
}

/// One sweep at `now`: deletes the objects older than `grace_ms` that no row
/// names, and says how many it deleted.
pub async fn sweep(
    store: &dyn Store,
    blobs: &Blobs,
    now: Millis,
    grace_ms: i64,
) -> anyhow::Result<usize> {
    let mut deleted = 0;
    for folder in ["jobs", "inputs"] {
        let mut listing = blobs.list(folder).chunks(BATCH);
        while let Some(chunk) = listing.next().await {
            let mut old = Vec::with_capacity(chunk.len());
            for entry in chunk {
                let (key, written) = match entry {
                    Ok(entry) => entry,
                    // Deleted while listed (a refused result, another replica).
                    Err(object_store::Error::NotFound { .. }) => continue,
                    Err(e) => return Err(e.into()),
                };
                if written <= now - grace_ms {
                    old.push(key);
                }
            }
            let jobs: Vec<JobId> = old.iter().filter_map(|k| artifact_key_job(k)).collect();
            let inputs: Vec<InputId> = old.iter().filter_map(|k| input_key_input(k)).collect();
            if jobs.is_empty() && inputs.is_empty() {
                continue;
            }
            let named = store.named_keys(&jobs, &inputs).await?;
            for key in old {
                let ours = artifact_key_job(&key).is_some() || input_key_input(&key).is_some();
                if !ours || named.contains(&key) {
                    continue;
                }
                match blobs.delete(&key).await {
                    Ok(()) => {
                        tracing::info!(%key, "deleted an object no artifact or input names");
                        deleted += 1;
                    }
                    Err(e) => tracing::warn!(%key, error = %e, "could not delete an orphan object"),
                }
            }
        }
    }
    Ok(deleted)
}

/// Sweeps right away, then every `orphan_sweep_secs`, until `stop` is set.
pub fn spawn(
    store: Arc<dyn Store>,
    blobs: Blobs,
    config: &ArtifactsConfig,
    mut stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let every = config.orphan_sweep_secs;
    let grace_ms = i64::try_from(config.orphan_grace_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    tokio::spawn(async move {
        if every == 0 {
            return;
        }
        loop {
            match sweep(&*store, &blobs, crate::lifecycle::now_ms(), grace_ms).await {
                Ok(0) => {}
                Ok(deleted) => tracing::info!(deleted, "orphan sweep done"),
                Err(e) => {
                    tracing::warn!(error = %e, "orphan sweep stopped early; it runs again later")
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(every)) => {}
                _ = stop.wait_for(|stop| *stop) => return,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_of_tessera_shape_are_recognised() {
        let job = JobId::generate();
        let key = crate::artifacts::artifact_key(&job, 2, 0, "png");
        assert_eq!(artifact_key_job(&key), Some(job));
        let input = InputId::generate();
        assert_eq!(
            input_key_input(&crate::artifacts::input_key(&input)),
            Some(input)
        );
        for foreign in [
            "jobs/notes.txt",
            "jobs/job_x-1-0.png",
            &format!("jobs/{}-1-0.PNG", JobId::generate()),
            &format!("jobs/{}-1-0.png#3", JobId::generate()),
            &format!("jobs/{}-a-0.png", JobId::generate()),
            "inputs/readme",
            "other/thing",
        ] {
            assert_eq!(artifact_key_job(foreign), None, "{foreign}");
            assert_eq!(input_key_input(foreign), None, "{foreign}");
        }
    }
}
