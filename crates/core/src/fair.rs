//! Fair share within a plan: start-time fair queuing over users.
//!
//! Within one priority, jobs used to run in arrival order, so a user who
//! queued fifty jobs made everyone behind them wait for all fifty. Now each
//! queue (a capability and a priority: the jobs of one plan level competing
//! for the same workers) orders its jobs by a *start tag* fixed when the job
//! is queued, after start-time fair queuing (Goyal, Vin and Cheng, 1996):
//!
//! - the queue keeps a *virtual time* `v`;
//! - a user's job starts at `max(v, F)`, where `F` is the *finish tag* of the
//!   same user's previous job in that queue, and finishes at its start plus
//!   its cost.
//!
//! A user's jobs get increasing tags spaced by their costs, and a user with
//! nothing queued starts at the virtual time, level with the head of the
//! queue, however many jobs others have queued. The queue's order is then
//! priority, start tag, arrival, id ([`policy::queue_order`]).
//!
//! **The virtual time** moves when jobs are claimed, to the start tag at the
//! head of the queue as the claim found it (the smallest start tag queued,
//! the claimed jobs' included), and never back. Served in tag order that is
//! the start tag of the job just started, as the algorithm has it. When the
//! policy serves out of tag order (a job whose model is loaded, an overdue
//! job), the clock does not jump past the jobs still waiting, so newcomers are
//! not put behind them. Because it never goes back, a user who went quiet
//! returns at the current virtual time: idle time earns no credit, and past
//! use counts only while it is ahead of the clock. Every queued tag is at
//! least the clock (a job a lost worker gave back keeps its older tag, so it
//! keeps its place).
//!
//! **Cost** is the job's price in tokens ([`cost`]): fixed at creation from
//! the validated size (megapixels, seconds of video, tokens of text), so a
//! four-megapixel picture weighs what four one-megapixel pictures do, which
//! is about what a GPU spends on it. The estimated run time was the other
//! candidate; it is a mean per capability, blind to a job's size, and it
//! changes while jobs wait, where a tag needs a cost that is known and fixed
//! when the job is queued.
//!
//! What the order guarantees, each a property test below: over any stretch
//! in which two users both have jobs waiting, the work each is served differs
//! by at most one job's cost of each; a user with nothing queued waits behind
//! at most one job of each other user; no job waits behind more than its own
//! user's backlog allows, whatever the others queue; and priority across
//! plans is untouched, as are the wait bound and affinity, which the policy
//! applies as before ([`policy`]).
//!
//! The stores compute the same arithmetic in SQL, in the transaction that
//! queues the job (per-user finish tags in `fair_shares`, the clocks in
//! `fair_clocks`); [`FairQueue`] is the reference they are tested against.
//!
//! [`policy`]: crate::policy
//! [`policy::queue_order`]: crate::policy::queue_order

use std::collections::HashMap;
use std::hash::Hash;

/// A start or finish tag, or a queue's virtual time: cost units (tokens).
pub type Tag = i64;

/// The largest cost one job adds to its user's tags, so that tags cannot
/// overflow (a job's token price is unbounded configuration).
pub const MAX_COST: i64 = 1 << 20;

/// A job's cost in the fair queue: its price in tokens, at least 1 (a free
/// job still occupies a GPU) and at most [`MAX_COST`].
pub fn cost(tokens: i64) -> i64 {
    tokens.clamp(1, MAX_COST)
}

/// The start tag of a user's next job: at the queue's virtual time, or after
/// the user's previous job in the queue finishes, whichever is later.
pub fn start_tag(virtual_time: Tag, previous_finish: Option<Tag>) -> Tag {
    previous_finish.map_or(virtual_time, |f| f.max(virtual_time))
}

/// The finish tag of a job that starts at `start` and costs `cost` ([`cost`]).
pub fn finish_tag(start: Tag, cost: i64) -> Tag {
    start.saturating_add(cost)
}

/// The virtual time after a claim that found `head` at the head of the queue
/// (the smallest start tag queued, the claimed jobs' included).
pub fn advance(virtual_time: Tag, head: Tag) -> Tag {
    virtual_time.max(head)
}

/// One queue's fair-queuing state in memory: the reference the stores' SQL
/// follows, which the tests and the simulator run.
#[derive(Clone, Debug)]
pub struct FairQueue<U> {
    virtual_time: Tag,
    finish: HashMap<U, Tag>,
}

impl<U> Default for FairQueue<U> {
    fn default() -> Self {
        Self {
            virtual_time: 0,
            finish: HashMap::new(),
        }
    }
}

impl<U: Eq + Hash> FairQueue<U> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The queue's virtual time.
    pub fn virtual_time(&self) -> Tag {
        self.virtual_time
    }

    /// Queues a job of `user` priced `tokens`: its start tag.
    pub fn enqueue(&mut self, user: U, tokens: i64) -> Tag {
        let start = start_tag(self.virtual_time, self.finish.get(&user).copied());
        self.finish.insert(user, finish_tag(start, cost(tokens)));
        start
    }

    /// A claim found `head` at the head of the queue.
    pub fn claimed(&mut self, head: Tag) {
        self.virtual_time = advance(self.virtual_time, head);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;
    use crate::policy::{Policy, PolicyKind, QueuedJob, WorkerView};
    use crate::{Capability, Millis, Priority};

    #[test]
    fn tags_follow_the_user_and_the_clock() {
        let mut q = FairQueue::new();
        // A floods: tags spaced by cost (a free job costs 1).
        assert_eq!(
            [q.enqueue("a", 2), q.enqueue("a", 2), q.enqueue("a", 0)],
            [0, 2, 4]
        );
        // B arrives later and starts level with the head.
        assert_eq!(q.enqueue("b", 1), 0);
        q.claimed(0);
        q.claimed(0);
        q.claimed(2);
        assert_eq!(q.virtual_time(), 2);
        // C is new: at the clock, ahead of A's later jobs.
        assert_eq!(q.enqueue("c", 1), 2);
        // B ran one job at 0 and finished at 1, behind the clock: no credit.
        assert_eq!(q.enqueue("b", 1), 2);
        // A is still ahead of the clock.
        assert_eq!(q.enqueue("a", 1), 5);
        // The clock never goes back.
        q.claimed(1);
        assert_eq!(q.virtual_time(), 2);
        assert_eq!(cost(i64::MAX), MAX_COST);
        assert_eq!(cost(-3), 1);
    }

    /// What happened to one job in a run of [`serve`].
    #[derive(Clone, Debug)]
    struct Served {
        user: u8,
        cost: i64,
        tag: Tag,
        /// The virtual time when it was queued.
        clock_at_arrival: Tag,
        /// Jobs of other users served between its arrival and its start.
        others_before: usize,
        /// Other users with a job queued when it arrived.
        others_waiting: usize,
        /// Its user had nothing queued and was not ahead of the clock.
        newcomer: bool,
    }

    /// One step: a job arrives (user, tokens) or a worker takes the head.
    #[derive(Clone, Debug)]
    enum Step {
        Arrive(u8, i64),
        Serve,
    }

    fn arb_steps(users: u8) -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                3 => (0..users, 0i64..6).prop_map(|(u, t)| Step::Arrive(u, t)),
                2 => Just(Step::Serve),
            ],
            0..160,
        )
    }

    /// Runs one queue (one capability, priority and model) served one job at a
    /// time by the policy, with nothing overdue: the fair order alone. Answers
    /// the jobs in the order served and, for each serve, the users with a job
    /// queued just before it.
    fn serve(steps: &[Step]) -> (Vec<Served>, Vec<Vec<u8>>) {
        let policy = Policy {
            kind: PolicyKind::Tessera,
            max_wait_ms: Millis::MAX / 4,
            affinity_patience_ms: 0,
            locality_wait_ms: 0,
        };
        let models = vec!["m".to_owned()];
        let worker = WorkerView {
            capabilities: &[Capability::Image],
            models: &models,
            loaded_models: &[],
            load_ms: &[],
            warm_elsewhere: &[],
        };
        let mut fq = FairQueue::new();
        let mut queue: Vec<QueuedJob<usize>> = Vec::new();
        let mut jobs: Vec<Served> = Vec::new();
        let mut order = Vec::new();
        let mut backlogged = Vec::new();
        for (now, step) in steps.iter().enumerate() {
            let now = now as Millis;
            match *step {
                Step::Arrive(user, tokens) => {
                    let waiting: Vec<u8> = queue.iter().map(|j| jobs[j.id].user).collect();
                    let others_waiting = {
                        let mut others: Vec<u8> =
                            waiting.iter().copied().filter(|&u| u != user).collect();
                        others.sort_unstable();
                        others.dedup();
                        others.len()
                    };
                    let clock = fq.virtual_time();
                    let behind_clock = fq.finish.get(&user).is_none_or(|&f| f <= clock);
                    let tag = fq.enqueue(user, tokens);
                    jobs.push(Served {
                        user,
                        cost: cost(tokens),
                        tag,
                        clock_at_arrival: clock,
                        others_before: 0,
                        others_waiting,
                        newcomer: !waiting.contains(&user) && behind_clock,
                    });
                    queue.push(QueuedJob {
                        id: jobs.len() - 1,
                        capability: Capability::Image,
                        model: "m".into(),
                        priority: Priority::FREE,
                        fair_tag: tag,
                        queued_at: now,
                    });
                }
                Step::Serve => {
                    let Some((chosen, _)) = policy.choose_from_queue(&queue, &worker, now) else {
                        continue;
                    };
                    let id = chosen.id;
                    let head = queue.iter().map(|j| j.fair_tag).min().expect("a job");
                    fq.claimed(head);
                    let mut users: Vec<u8> = queue.iter().map(|j| jobs[j.id].user).collect();
                    users.sort_unstable();
                    users.dedup();
                    backlogged.push(users);
                    queue.retain(|j| j.id != id);
                    let user = jobs[id].user;
                    for j in &queue {
                        if jobs[j.id].user != user {
                            jobs[j.id].others_before += 1;
                        }
                    }
                    order.push(id);
                }
            }
        }
        // Jobs never served are left out: their waits are not over.
        let served = order.iter().map(|&i| jobs[i].clone()).collect();
        (served, backlogged)
    }

    proptest! {
        /// Over any run of serves during which two users both had jobs
        /// waiting, the work each got differs by at most one job's cost of
        /// each: a flooding user's share is bounded by the others' demand.
        #[test]
        fn two_waiting_users_get_equal_work_within_one_job_each(steps in arb_steps(4)) {
            let (served, backlogged) = serve(&steps);
            for a in 0..4u8 {
                for b in (a + 1)..4u8 {
                    let max_cost = |u: u8| served.iter().filter(|s| s.user == u).map(|s| s.cost).max().unwrap_or(0);
                    let bound = max_cost(a) + max_cost(b);
                    for i in 0..served.len() {
                        let (mut wa, mut wb) = (0i64, 0i64);
                        for j in i..served.len() {
                            if !(backlogged[j].contains(&a) && backlogged[j].contains(&b)) {
                                break;
                            }
                            match served[j].user {
                                u if u == a => wa += served[j].cost,
                                u if u == b => wb += served[j].cost,
                                _ => {}
                            }
                            prop_assert!(
                                (wa - wb).abs() <= bound,
                                "users {} and {} served {} and {} over serves {}..={} (bound {})",
                                a, b, wa, wb, i, j, bound
                            );
                        }
                    }
                }
            }
        }

        /// A user with nothing queued, not ahead of the clock, waits behind at
        /// most one job of each other user, however many they queued.
        #[test]
        fn a_newcomer_waits_behind_at_most_one_job_of_each_other_user(steps in arb_steps(4)) {
            let (served, _) = serve(&steps);
            for s in served.iter().filter(|s| s.newcomer) {
                prop_assert_eq!(s.tag, s.clock_at_arrival);
                prop_assert!(s.others_before <= s.others_waiting, "{:?}", s);
            }
        }

        /// No starvation: a job waits behind at most `tag - clock + 1` jobs of
        /// each other user, a bound set by its own user's backlog (the tag is
        /// the clock plus what that user queued ahead of it), not by how much
        /// the others queue.
        #[test]
        fn no_job_waits_behind_more_than_its_users_backlog_allows(steps in arb_steps(4)) {
            let (served, _) = serve(&steps);
            for s in &served {
                prop_assert!(s.tag >= s.clock_at_arrival);
                let per_user = usize::try_from(s.tag - s.clock_at_arrival + 1).unwrap();
                prop_assert!(s.others_before <= 3 * per_user, "{:?}", s);
            }
        }

        /// One user's tags are distinct and increasing, spaced by the costs.
        #[test]
        fn one_users_tags_increase_by_their_costs(
            steps in arb_steps(2),
        ) {
            let mut fq = FairQueue::new();
            let mut last: HashMap<u8, (Tag, i64)> = HashMap::new();
            for step in steps {
                match step {
                    Step::Arrive(u, tokens) => {
                        let tag = fq.enqueue(u, tokens);
                        if let Some((prev, prev_cost)) = last.get(&u) {
                            prop_assert!(tag >= prev + prev_cost);
                        }
                        last.insert(u, (tag, cost(tokens)));
                    }
                    Step::Serve => {
                        let head = last.values().map(|(t, _)| *t).min().unwrap_or(0);
                        fq.claimed(head);
                    }
                }
            }
        }

        /// Tags order jobs within a priority only: a flooding FREE user's tags
        /// never put a FREE job ahead of a PRO one, with fair queues per
        /// priority and the policy choosing, with no model loaded and nothing
        /// overdue.
        #[test]
        fn priority_across_plans_is_kept(
            arrivals in proptest::collection::vec((0u8..3, 0u8..4, 0i64..6, any::<bool>()), 0..120),
        ) {
            let policy = Policy { kind: PolicyKind::Tessera, max_wait_ms: Millis::MAX / 4, affinity_patience_ms: 0, locality_wait_ms: 0 };
            let models = vec!["m".to_owned()];
            let worker = WorkerView { capabilities: &[Capability::Image], models: &models, loaded_models: &[], load_ms: &[], warm_elsewhere: &[] };
            let mut queues: HashMap<Priority, FairQueue<u8>> = HashMap::new();
            let mut queue: Vec<QueuedJob<usize>> = Vec::new();
            for (now, (user, prio, tokens, serve_after)) in arrivals.into_iter().enumerate() {
                let priority = Priority(prio);
                let tag = queues.entry(priority).or_default().enqueue(user, tokens);
                queue.push(QueuedJob {
                    id: now,
                    capability: Capability::Image,
                    model: "m".into(),
                    priority,
                    fair_tag: tag,
                    queued_at: now as Millis,
                });
                if serve_after {
                    let (j, _) = policy.choose_from_queue(&queue, &worker, now as Millis).unwrap();
                    let top = queue.iter().map(|q| q.priority).max().unwrap();
                    prop_assert_eq!(j.priority, top);
                    for q in queue.iter().filter(|q| q.priority == top) {
                        prop_assert!((j.fair_tag, j.queued_at) <= (q.fair_tag, q.queued_at));
                    }
                    let head = queue.iter().filter(|q| q.priority == top).map(|q| q.fair_tag).min().unwrap();
                    queues.get_mut(&top).unwrap().claimed(head);
                    let id = j.id;
                    queue.retain(|q| q.id != id);
                }
            }
        }
    }
}
