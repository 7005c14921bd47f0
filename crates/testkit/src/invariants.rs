//! The promises a fault must not break, checked on the database afterwards
//! (RELIABILITY.md): every job created is there, in exactly one state; no
//! job completed twice; the tokens charged to each user id on each day are
//! the costs of the jobs charged to it and not refunded; every completed job
//! has its artifacts, and their bytes.
//!
//! Used by the fault tests and the replica tests after they have done their
//! worst. [`check`] panics with every violation it found, or answers what it
//! checked (for the figures of RELIABILITY.md).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use tessera_core::{JobId, JobState};
use tessera_scheduler::store::{Inspect, JobFilter, JobRecord, Store};

/// What [`check`] looked at.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Checked {
    pub jobs: usize,
    pub by_state: BTreeMap<String, usize>,
    pub artifacts: usize,
    pub tokens_charged: i64,
    /// Jobs dispatched more than once (a worker or scheduler was lost under them).
    pub retried: usize,
}

/// Every job in the database, newest first.
pub async fn all_jobs(store: &dyn Store) -> Vec<JobRecord> {
    let mut jobs = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .list_jobs(&JobFilter {
                before: before.clone(),
                limit: 500,
                ..Default::default()
            })
            .await
            .expect("listing jobs");
        let Some(last) = page.last() else { break };
        before = Some(last.id.clone());
        jobs.extend(page);
    }
    jobs
}

/// Checks the invariants for the jobs in the database, `created` being the
/// ids the load generator was answered with (all must be there). With
/// `artifacts_dir` (a local artifact store), each artifact's bytes must be
/// there too, with the recorded size. `settled` demands that no job is still
/// QUEUED or RUNNING.
pub async fn check(
    store: &dyn Inspect,
    created: &[JobId],
    artifacts_dir: Option<&Path>,
    settled: bool,
) -> Checked {
    let jobs = all_jobs(store).await;
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    for j in &jobs {
        if !seen.insert(j.id.clone()) {
            problems.push(format!("{} listed twice", j.id));
        }
    }
    for id in created {
        if !seen.contains(id) {
            problems.push(format!("{id} was created but is gone"));
        }
    }
    let mut checked = Checked {
        jobs: jobs.len(),
        ..Default::default()
    };
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id.clone()).collect();
    let mut artifacts: HashMap<JobId, Vec<_>> = HashMap::new();
    for chunk in ids.chunks(200) {
        for a in store.artifacts_of(chunk).await.expect("reading artifacts") {
            artifacts.entry(a.job_id.clone()).or_default().push(a);
        }
    }
    // By the user id a job was charged to (its user's billing user when it
    // was created: a linked bot user's account), which refunds go back to.
    let mut charged: HashMap<(i64, chrono::NaiveDate), i64> = HashMap::new();
    let mut names: HashMap<i64, &tessera_core::UserRef> = HashMap::new();
    for j in &jobs {
        *checked.by_state.entry(j.status.to_string()).or_default() += 1;
        if j.attempts > 1 {
            checked.retried += 1;
        }
        let cost = if j.refunded { 0 } else { j.cost_tokens };
        *charged.entry((j.user_id, j.billing_day)).or_default() += cost;
        names.entry(j.user_id).or_insert(&j.user_ref);
        if settled && !j.status.is_terminal() {
            problems.push(format!("{} is still {}", j.id, j.status));
        }
        let mine = artifacts.get(&j.id).map(Vec::as_slice).unwrap_or(&[]);
        match j.status {
            JobState::Completed => {
                if j.refunded {
                    problems.push(format!("{} COMPLETED but refunded", j.id));
                }
                if mine.is_empty() {
                    problems.push(format!("{} COMPLETED without artifacts", j.id));
                }
                // One attempt's outputs only: a job completed twice would
                // hold the keys of two attempts.
                let attempt = format!("-{}-", j.attempts);
                for a in mine {
                    if !a.storage_key.contains(&attempt) {
                        problems.push(format!(
                            "{} completed by attempt {} holds {} of another attempt",
                            j.id, j.attempts, a.storage_key
                        ));
                    }
                    if let Some(dir) = artifacts_dir {
                        match std::fs::metadata(dir.join(&a.storage_key)) {
                            Ok(m) if m.len() == a.file_size => {}
                            Ok(m) => problems.push(format!(
                                "{} is {} bytes, recorded {}",
                                a.storage_key,
                                m.len(),
                                a.file_size
                            )),
                            Err(e) => problems.push(format!("{}: {e}", a.storage_key)),
                        }
                    }
                }
                checked.artifacts += mine.len();
            }
            JobState::Failed | JobState::Cancelled => {
                if !j.refunded && j.cost_tokens > 0 {
                    problems.push(format!("{} {} but not refunded", j.id, j.status));
                }
                if !mine.is_empty() {
                    problems.push(format!("{} {} with artifacts", j.id, j.status));
                }
            }
            _ => {
                if j.refunded {
                    problems.push(format!("{} {} but refunded", j.id, j.status));
                }
            }
        }
    }
    for ((user_id, day), expected) in &charged {
        let used = store
            .tokens_charged(*user_id, *day)
            .await
            .expect("reading usage");
        if used != *expected {
            problems.push(format!(
                "user {user_id} ({} ...) on {day}: {used} tokens charged, the jobs not refunded cost {expected}",
                names[user_id]
            ));
        }
        checked.tokens_charged += used;
    }
    assert!(
        problems.is_empty(),
        "{} broken promises:\n{}",
        problems.len(),
        problems.join("\n")
    );
    checked
}
