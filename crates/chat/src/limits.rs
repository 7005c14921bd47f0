//! Per-user rate limits of one bot instance, in memory (ARCHITECTURE.md).
//!
//! Two token buckets per user: one for every command, a tighter one for
//! commands that create jobs. A limited user is told how long to wait, once
//! per wait. The buckets of users not seen for a while are dropped about once
//! a minute ([`Limits::forget_idle`]).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
    /// Until when each limited user has been told to slow down: one notice
    /// per wait, so a flood of messages does not become a flood of answers.
    told: Mutex<HashMap<String, Instant>>,
    last_sweep: Mutex<Instant>,
}

/// How often buckets of quiet users are dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

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
            told: Mutex::new(HashMap::new()),
            last_sweep: Mutex::new(Instant::now()),
        }
    }

    fn check(&self, limiter: &DefaultKeyedRateLimiter<String>, user: &UserRef) -> Result<(), u64> {
        self.sweep_now_and_then();
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

    /// Whether a user who must wait `wait_seconds` should be told so: yes
    /// the first time, then not again until that wait is over.
    pub fn should_tell(&self, user: &UserRef, wait_seconds: u64) -> bool {
        let now = Instant::now();
        let mut told = self.told.lock().unwrap_or_else(|p| p.into_inner());
        match told.get(&user.to_string()) {
            Some(until) if *until > now => false,
            _ => {
                told.insert(user.to_string(), now + Duration::from_secs(wait_seconds));
                true
            }
        }
    }

    /// Drops the buckets of users whose limits have fully recovered.
    pub fn forget_idle(&self) {
        self.jobs.retain_recent();
        self.commands.retain_recent();
        self.jobs.shrink_to_fit();
        self.commands.shrink_to_fit();
        let now = Instant::now();
        self.told
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, until| *until > now);
    }

    /// Forgets idle users about once a minute, whatever receives the messages.
    fn sweep_now_and_then(&self) {
        let mut last = self.last_sweep.lock().unwrap_or_else(|p| p.into_inner());
        if last.elapsed() >= SWEEP_EVERY {
            *last = Instant::now();
            drop(last);
            self.forget_idle();
        }
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
        assert!(limits.should_tell(&alice, wait));
        assert!(!limits.should_tell(&alice, wait), "told once per wait");
        assert!(limits.should_tell(&bob, wait));
    }
}
