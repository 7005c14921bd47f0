//! The job state machine (ARCHITECTURE.md), the one place that says which moves are legal.
//!
//! ```text
//! CREATED ─► QUEUED ─► RUNNING ─► COMPLETED
//!              │ ▲        ├─────► FAILED
//!              │ └────────┤       (requeue: worker lost, attempts left)
//!              ├──────────┴─────► CANCELLED
//!              └────────────────► FAILED (no worker can serve it in time)
//! ```
//!
//! The stores turn every [`Transition`] into a conditional update whose `WHERE`
//! clause lists [`Transition::from`], so an illegal move matches no row instead of
//! corrupting one. A job is written as QUEUED in the same transaction that
//! validates it and reserves its tokens: CREATED is never visible outside it.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Where a job is in its life. Stored and sent as the upper-case name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Created,
    Queued,
    Running,
    Completed,
    Failed,
    Cancelled,
}

impl JobState {
    pub const ALL: [JobState; 6] = [
        JobState::Created,
        JobState::Queued,
        JobState::Running,
        JobState::Completed,
        JobState::Failed,
        JobState::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            JobState::Created => "CREATED",
            JobState::Queued => "QUEUED",
            JobState::Running => "RUNNING",
            JobState::Completed => "COMPLETED",
            JobState::Failed => "FAILED",
            JobState::Cancelled => "CANCELLED",
        }
    }

    /// A final state: nothing moves a job out of it.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }

    /// Jobs that end here get their tokens back, in the transaction that ends them.
    pub const fn is_refunded(self) -> bool {
        matches!(self, JobState::Failed | JobState::Cancelled)
    }

    /// Whether `self -> to` is one of the machine's transitions.
    pub fn can_become(self, to: JobState) -> bool {
        Transition::ALL
            .iter()
            .any(|t| t.to() == to && t.from().contains(&self))
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The text names no job state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown job status {0:?}")]
pub struct UnknownState(pub String);

impl FromStr for JobState {
    type Err = UnknownState;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownState(s.to_owned()))
    }
}

/// A legal move of the state machine, named by what causes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transition {
    /// CREATED → QUEUED: validated and paid for.
    Enqueue,
    /// QUEUED → RUNNING: claimed for a worker; raises `attempts`.
    Dispatch,
    /// RUNNING → COMPLETED: the worker reported success with its artifacts.
    Complete,
    /// QUEUED or RUNNING → FAILED: an error, a timeout, the attempt limit, or no
    /// worker able to serve the job in time. Refunds.
    Fail,
    /// QUEUED or RUNNING → CANCELLED: asked by the user, a frontend or an admin. Refunds.
    Cancel,
    /// RUNNING → QUEUED: the worker was lost; the job waits for another.
    Requeue,
}

impl Transition {
    pub const ALL: [Transition; 6] = [
        Transition::Enqueue,
        Transition::Dispatch,
        Transition::Complete,
        Transition::Fail,
        Transition::Cancel,
        Transition::Requeue,
    ];

    /// The states this transition may start from.
    pub const fn from(self) -> &'static [JobState] {
        match self {
            Transition::Enqueue => &[JobState::Created],
            Transition::Dispatch => &[JobState::Queued],
            Transition::Complete => &[JobState::Running],
            Transition::Fail | Transition::Cancel => &[JobState::Queued, JobState::Running],
            Transition::Requeue => &[JobState::Running],
        }
    }

    /// The state it ends in.
    pub const fn to(self) -> JobState {
        match self {
            Transition::Enqueue => JobState::Queued,
            Transition::Dispatch => JobState::Running,
            Transition::Complete => JobState::Completed,
            Transition::Fail => JobState::Failed,
            Transition::Cancel => JobState::Cancelled,
            Transition::Requeue => JobState::Queued,
        }
    }

    /// `from` as a SQL list of quoted names, for the stores' conditional updates.
    pub fn from_sql_list(self) -> String {
        self.from()
            .iter()
            .map(|s| format!("'{}'", s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in JobState::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in JobState::ALL {
                assert!(!from.can_become(to), "{from} -> {to} must be illegal");
            }
        }
    }

    #[test]
    fn the_seed_transitions_are_legal_and_nothing_skips_the_queue() {
        use JobState::*;
        for (from, to) in [
            (Created, Queued),
            (Queued, Running),
            (Running, Completed),
            (Running, Failed),
            (Queued, Cancelled),
            (Running, Cancelled),
            (Running, Queued),
            (Queued, Failed),
        ] {
            assert!(from.can_become(to), "{from} -> {to} must be legal");
        }
        for (from, to) in [
            (Created, Running),
            (Queued, Completed),
            (Created, Completed),
            (Queued, Queued),
        ] {
            assert!(!from.can_become(to), "{from} -> {to} must be illegal");
        }
    }

    #[test]
    fn refunds_happen_exactly_on_failed_and_cancelled() {
        let refunded: Vec<_> = JobState::ALL
            .into_iter()
            .filter(|s| s.is_refunded())
            .collect();
        assert_eq!(refunded, vec![JobState::Failed, JobState::Cancelled]);
    }

    #[test]
    fn names_round_trip() {
        for s in JobState::ALL {
            assert_eq!(s.as_str().parse::<JobState>().unwrap(), s);
        }
        assert_eq!(Transition::Cancel.from_sql_list(), "'QUEUED', 'RUNNING'");
        assert_eq!(
            format!("[{:<9}]", JobState::Queued),
            "[QUEUED   ]",
            "tables pad"
        );
    }
}
