//! Per-user rate limits of one bot instance, in memory (seed section 4.1).
//!
//! Two token buckets per user: one for every command, a tighter one for
//! commands that create jobs. A limited user is told how long to wait. The
//! buckets of users not seen for a while are dropped by [`Limits::forget_idle`].

use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde::{Deserialize, Serialize};
use tessera_core::UserRef;

/// Rate limits of one bot instance, per user.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitConfig {
    /// Jobs a user may create per minute, on average.
    pub jobs_per_minute: u32,
    /// Jobs a user may create at once before the average applies.
    pub job_burst: u32,
    /// Commands of any kind a user may send per minute.
    pub commands_per_minute: u32,
}

impl Default for LimitConfig {
    fn default() -> Self {
        Self {
            jobs_per_minute: 6,
            job_burst: 3,
            commands_per_minute: 30,
        }
    }
}

pub struct Limits {
    jobs: DefaultKeyedRateLimiter<String>,
    commands: DefaultKeyedRateLimiter<String>,
    clock: DefaultClock,
}

fn nonzero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("at least 1")
}

impl Limits {
    pub fn new(c: &LimitConfig) -> Self {
        let jobs = Quota::per_minute(nonzero(c.jobs_per_minute)).allow_burst(nonzero(c.job_burst));
        let commands = Quota::per_minute(nonzero(c.commands_per_minute))
            .allow_burst(nonzero(c.commands_per_minute.div_ceil(3)));
        Self {
            jobs: RateLimiter::keyed(jobs),
            commands: RateLimiter::keyed(commands),
            clock: DefaultClock::default(),
        }
    }

    fn check(&self, limiter: &DefaultKeyedRateLimiter<String>, user: &UserRef) -> Result<(), u64> {
        limiter.check_key(&user.to_string()).map_err(|not_until| {
            not_until
                .wait_time_from(self.clock.now())
                .as_secs_f64()
                .ceil() as u64
        })
    }

    /// `Err(seconds to wait)` when the user sent too many commands.
    pub fn check_command(&self, user: &UserRef) -> Result<(), u64> {
        self.check(&self.commands, user)
    }

    /// `Err(seconds to wait)` when the user created too many jobs.
    pub fn check_job(&self, user: &UserRef) -> Result<(), u64> {
        self.check(&self.jobs, user)
    }

    /// Drops the buckets of users whose limits have fully recovered.
    pub fn forget_idle(&self) {
        self.jobs.retain_recent();
        self.commands.retain_recent();
        self.jobs.shrink_to_fit();
        self.commands.shrink_to_fit();
    }

    /// Users with a bucket now.
    pub fn tracked_users(&self) -> usize {
        self.commands.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_then_a_wait_per_user() {
        let limits = Limits::new(&LimitConfig {
            jobs_per_minute: 2,
            job_burst: 2,
            commands_per_minute: 30,
        });
        let alice: UserRef = "telegram:1".parse().unwrap();
        let bob: UserRef = "telegram:2".parse().unwrap();
        assert!(limits.check_job(&alice).is_ok());
        assert!(limits.check_job(&alice).is_ok());
        let wait = limits.check_job(&alice).unwrap_err();
        assert!((1..=30).contains(&wait), "{wait}");
        assert!(limits.check_job(&bob).is_ok(), "limits are per user");
    }
}
