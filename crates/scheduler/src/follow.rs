//! Following a job as it runs: its start, progress, output text and end, as
//! in-memory events, for the endpoints that stream them to frontends
//! (`GET /api/v1/jobs/{job_id}/events`, the OpenAI-compatible gateway).
//!
//! The [`Lifecycle`](crate::lifecycle::Lifecycle) owns one [`Follows`] and
//! publishes into it: [`JobEvent::Started`] when the dispatcher claims a job
//! (or when the first output of an attempt this replica did not dispatch
//! arrives), [`JobEvent::Progress`] from a worker's progress report,
//! [`JobEvent::Output`] from a worker's output piece
//! (`POST /api/internal/jobs/{job_id}/output`), and [`JobEvent::Ended`] from
//! every transition to an end state the lifecycle applies (results, cancels,
//! the health monitor). Nothing here is stored: the database holds the job,
//! these events only say sooner what it will say.
//!
//! **Output offsets.** A worker sends its output text in pieces, each with
//! `offset`: the number of UTF-8 bytes of the attempt's output sent before the
//! piece. The scheduler holds the text of the current attempt and takes only
//! what extends it: a piece it holds already (a retried post) is acknowledged
//! and ignored, one that overlaps is trimmed to its new tail, and one that
//! would leave a gap (`offset` past what is held, or an overlap that ends
//! inside a character) is refused with `output_gap`; the worker then sends
//! its whole text again from offset 0, which the trimming turns into exactly
//! the missing part. A replica that holds nothing for the job (it restarted,
//! or forgot an idle stream) refuses any piece that does not start at 0, so
//! it too gets the whole text.
//!
//! **A new attempt.** When a job is requeued (its worker lost) and dispatched
//! again, the text of the failed attempt is void: followers get
//! [`JobEvent::Started`] again, and every `Output` after it is the new
//! attempt's text from its start. A follower discards what it showed when it
//! sees `Started`; one that joined late gets the current attempt's text so
//! far with [`Follows::follow_output`].
//!
//! **Lifetime.** A job's stream is made lazily, by the first follower or the
//! first output piece, and removed when the job ends (after its `Ended` is
//! sent). A stream nobody follows and nothing fed for [`IDLE`] (the job ended
//! on another replica, or its worker stopped sending) is swept when the next
//! stream is made; a piece arriving after that starts over as above.
//!
//! **Replicas.** Events are per replica, in memory: a follower connected to
//! another replica than the one its job's worker posts to sees no output and
//! no progress, only the end, which it learns by re-reading the job from the
//! database at least every second (the events endpoint does). Workers post
//! to one scheduler address; a load balancer in front of several replicas
//! should keep a worker's posts on one replica, or the pieces alternate
//! between replicas that each refuse the other's offsets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, watch};

use tessera_core::{JobId, JobState};

/// What happens to a job, as its followers see it.
#[derive(Clone, Debug, PartialEq)]
pub enum JobEvent {
    /// The job was dispatched (an attempt started on a worker). Any output
    /// text seen before belongs to an earlier attempt and is void: the
    /// `Output` events after this one are the new attempt's text from its start.
    Started,
    /// Percent done, 0 to 100.
    Progress(f32),
    /// New output text, in order, following what came before (since the
    /// last `Started`).
    Output(String),
    /// The job reached an end state (completed, failed, cancelled, ...).
    Ended(JobState),
}

/// Events a follower may fall behind by before it misses some
/// ([`broadcast::error::RecvError::Lagged`]); it can catch up with
/// [`Follows::follow_output`].
pub const CAPACITY: usize = 1024;
/// How long a stream nobody follows is kept after its last event.
pub const IDLE: Duration = Duration::from_secs(60);
/// The most output text one attempt may stream: 8 MiB.
pub use tessera_api::internal::MAX_OUTPUT_BYTES;

/// A follower's start: the current attempt's output so far, and the events
/// after it.
pub struct Following {
    /// The attempt the text belongs to (0: none seen on this replica yet).
    pub attempt: i32,
    /// The attempt's output text so far.
    pub text: String,
    /// Every event after `text`.
    pub events: broadcast::Receiver<JobEvent>,
}

/// Why an output piece was not taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The piece would leave a gap: `held` bytes are held, the piece starts
    /// further on (or overlaps into the middle of a character).
    Gap { held: usize },
    /// The piece is of an attempt older than one already seen.
    Stale,
    /// The attempt's text would pass [`MAX_OUTPUT_BYTES`].
    TooLarge,
}

/// Every followed job's stream, in memory: one per scheduler.
#[derive(Clone)]
pub struct Follows {
    streams: Arc<Mutex<HashMap<JobId, Stream>>>,
    /// Turns true when the scheduler stops: followers end their streams.
    stopping: Arc<watch::Sender<bool>>,
}

impl Default for Follows {
    fn default() -> Self {
        Self {
            streams: Arc::default(),
            stopping: Arc::new(watch::channel(false).0),
        }
    }
}

struct Stream {
    tx: broadcast::Sender<JobEvent>,
    /// The attempt `text` is of; 0 before any.
    attempt: i32,
    text: String,
    touched: Instant,
}

impl Stream {
    fn new() -> Self {
        Self {
            tx: broadcast::channel(CAPACITY).0,
            attempt: 0,
            text: String::new(),
            touched: Instant::now(),
        }
    }

    fn send(&mut self, event: JobEvent) {
        self.touched = Instant::now();
        // No receiver is no error: nobody follows now.
        let _ = self.tx.send(event);
    }

    /// Moves the stream to `attempt`, voiding the earlier attempt's text.
    fn restart(&mut self, attempt: i32) {
        self.attempt = attempt;
        self.text.clear();
        self.send(JobEvent::Started);
    }
}

impl Follows {
    fn map(&self) -> MutexGuard<'_, HashMap<JobId, Stream>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tells every follower the scheduler is stopping, so that open event
    /// streams end and do not hold the shutdown.
    pub fn stop(&self) {
        self.stopping.send_replace(true);
    }

    /// Turns true when the scheduler stops.
    pub fn stopping(&self) -> watch::Receiver<bool> {
        self.stopping.subscribe()
    }

    /// The job's stream, made (and idle ones swept) if it has none.
    fn stream<'a>(map: &'a mut HashMap<JobId, Stream>, job: &JobId) -> &'a mut Stream {
        if !map.contains_key(job) {
            map.retain(|_, s| s.tx.receiver_count() > 0 || s.touched.elapsed() < IDLE);
        }
        map.entry(job.clone()).or_insert_with(Stream::new)
    }

    /// Events of this job from now on.
    pub fn follow(&self, job: &JobId) -> broadcast::Receiver<JobEvent> {
        Self::stream(&mut self.map(), job).tx.subscribe()
    }

    /// The current attempt's output so far and the events after it, taken
    /// together so nothing falls between them.
    pub fn follow_output(&self, job: &JobId) -> Following {
        let mut map = self.map();
        let stream = Self::stream(&mut map, job);
        Following {
            attempt: stream.attempt,
            text: stream.text.clone(),
            events: stream.tx.subscribe(),
        }
    }

    /// Attempt `attempt` of the job started (the dispatcher claimed it).
    /// Nothing to tell when nobody follows.
    pub fn started(&self, job: &JobId, attempt: i32) {
        if let Some(stream) = self.map().get_mut(job) {
            if attempt > stream.attempt {
                stream.restart(attempt);
            }
        }
    }

    /// The running attempt's progress.
    pub fn progressed(&self, job: &JobId, progress: f32) {
        if let Some(stream) = self.map().get_mut(job) {
            stream.send(JobEvent::Progress(progress));
        }
    }

    /// An output piece of `attempt` (fenced by the caller: the job's current
    /// attempt) starting `offset` bytes into its text. Answers how many bytes
    /// of the attempt's text are held after it, and how many of them it added.
    pub fn output(
        &self,
        job: &JobId,
        attempt: i32,
        offset: usize,
        text: &str,
    ) -> Result<(usize, usize), Refused> {
        let mut map = self.map();
        let stream = Self::stream(&mut map, job);
        if attempt < stream.attempt {
            return Err(Refused::Stale);
        }
        if attempt > stream.attempt {
            // The dispatch happened elsewhere (another replica) or before
            // anyone followed: the attempt starts here.
            stream.restart(attempt);
        }
        let held = stream.text.len();
        if offset > held {
            return Err(Refused::Gap { held });
        }
        let skip = held - offset;
        if skip >= text.len() {
            // Held already: a retried piece.
            return Ok((held, 0));
        }
        if !text.is_char_boundary(skip) {
            return Err(Refused::Gap { held });
        }
        let new = &text[skip..];
        if held + new.len() > MAX_OUTPUT_BYTES {
            return Err(Refused::TooLarge);
        }
        stream.text.push_str(new);
        stream.send(JobEvent::Output(new.to_owned()));
        Ok((held + new.len(), new.len()))
    }

    /// The job went back to the queue: its attempt's text is void (the
    /// next `Started` tells the followers).
    pub fn requeued(&self, job: &JobId) {
        if let Some(stream) = self.map().get_mut(job) {
            stream.text.clear();
        }
    }

    /// The job ended in `state`: its followers are told, and its stream is gone.
    pub fn ended(&self, job: &JobId, state: JobState) {
        if let Some(mut stream) = self.map().remove(job) {
            stream.send(JobEvent::Ended(state));
        }
    }

    /// How many jobs have a stream now.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no job has a stream now.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_arrive_in_order_and_the_stream_is_gone_after_the_end() {
        let follows = Follows::default();
        let job = JobId::generate();
        let mut events = follows.follow(&job);
        follows.started(&job, 1);
        assert_eq!(follows.output(&job, 1, 0, "Hello"), Ok((5, 5)));
        // A retried piece, then one that overlaps: only the new tail counts.
        assert_eq!(follows.output(&job, 1, 0, "Hello"), Ok((5, 0)));
        assert_eq!(follows.output(&job, 1, 3, "lo, wo"), Ok((9, 4)));
        assert_eq!(
            follows.output(&job, 1, 12, "rld"),
            Err(Refused::Gap { held: 9 })
        );
        follows.progressed(&job, 50.0);
        follows.ended(&job, JobState::Completed);
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e);
        }
        assert_eq!(
            seen,
            vec![
                JobEvent::Started,
                JobEvent::Output("Hello".into()),
                JobEvent::Output(", wo".into()),
                JobEvent::Progress(50.0),
                JobEvent::Ended(JobState::Completed),
            ]
        );
        assert!(follows.is_empty(), "the ended job's stream is gone");
    }

    #[test]
    fn a_new_attempt_restarts_the_text() {
        let follows = Follows::default();
        let job = JobId::generate();
        assert_eq!(follows.output(&job, 1, 0, "first"), Ok((5, 5)));
        follows.requeued(&job);
        let late = follows.follow_output(&job);
        assert_eq!((late.attempt, late.text.as_str()), (1, ""));
        let mut events = late.events;
        follows.started(&job, 2);
        assert_eq!(follows.output(&job, 1, 5, "more"), Err(Refused::Stale));
        assert_eq!(follows.output(&job, 2, 0, "second"), Ok((6, 6)));
        assert_eq!(events.try_recv(), Ok(JobEvent::Started));
        assert_eq!(events.try_recv(), Ok(JobEvent::Output("second".into())));
        // A piece that splits a character is a gap, not a broken string.
        assert_eq!(follows.output(&job, 2, 6, "é"), Ok((8, 2)));
        assert_eq!(
            follows.output(&job, 2, 7, "éa"),
            Err(Refused::Gap { held: 8 })
        );
    }

    #[test]
    fn a_replica_that_holds_nothing_asks_for_the_whole_text() {
        let follows = Follows::default();
        let job = JobId::generate();
        assert_eq!(
            follows.output(&job, 3, 10, "tail"),
            Err(Refused::Gap { held: 0 })
        );
        assert_eq!(follows.output(&job, 3, 0, "0123456789tail"), Ok((14, 14)));
    }

    #[test]
    fn idle_streams_nobody_follows_are_swept() {
        let follows = Follows::default();
        let job = JobId::generate();
        follows.output(&job, 1, 0, "x").unwrap();
        // A clock too young to go back past IDLE cannot show the sweep.
        if let Some(stale) = Instant::now().checked_sub(IDLE + Duration::from_secs(1)) {
            follows.map().get_mut(&job).unwrap().touched = stale;
            let followed = JobId::generate();
            let _events = follows.follow(&followed);
            assert_eq!(follows.len(), 1, "the idle stream was swept");
        }
    }
}
