//! A reader of server-sent events, for the tests that follow a job through
//! `GET /api/v1/jobs/{job_id}/events` (or a website's job page).

use std::time::Duration;

use serde_json::Value;

/// An open event stream.
pub struct Events {
    resp: reqwest::Response,
    /// Bytes read and not yet parsed (a chunk may end inside a character).
    buf: Vec<u8>,
}

/// One event: its name and its data, parsed as JSON.
pub type Event = (String, Value);

impl Events {
    /// Follows `job_id` on the scheduler at `base` with the frontend key
    /// `key`; panics unless the answer is 200 `text/event-stream`.
    pub async fn open(base: &str, key: &str, job_id: &impl std::fmt::Display) -> Events {
        let resp = Self::request(base, key, job_id).await;
        assert_eq!(resp.status(), reqwest::StatusCode::OK, "following {job_id}");
        let kind = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(kind.starts_with("text/event-stream"), "{kind}");
        Events {
            resp,
            buf: Vec::new(),
        }
    }

    /// Reads the events of an answer already received (a website's own
    /// event route, say).
    pub fn from_response(resp: reqwest::Response) -> Events {
        Events {
            resp,
            buf: Vec::new(),
        }
    }

    /// The raw answer to a follow request, for refusals.
    pub async fn request(
        base: &str,
        key: &str,
        job_id: &impl std::fmt::Display,
    ) -> reqwest::Response {
        reqwest::Client::new()
            .get(format!("{base}/api/v1/jobs/{job_id}/events"))
            .bearer_auth(key)
            .send()
            .await
            .expect("the follow request is answered")
    }

    /// The next event (keep-alive comments skipped), or `None` once the
    /// stream closed; panics after `wait` without either.
    pub async fn next_within(&mut self, wait: Duration) -> Option<Event> {
        tokio::time::timeout(wait, self.next_event())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no event within {wait:?}; holding {:?}",
                    String::from_utf8_lossy(&self.buf)
                )
            })
    }

    /// The next event within 10 s.
    pub async fn next(&mut self) -> Option<Event> {
        self.next_within(Duration::from_secs(10)).await
    }

    /// The next event of a name other than `skip`.
    pub async fn next_but(&mut self, skip: &str) -> Option<Event> {
        loop {
            match self.next().await {
                Some((name, _)) if name == skip => continue,
                other => return other,
            }
        }
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            while let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let block = String::from_utf8(block).expect("an event is UTF-8");
                let mut name = None;
                let mut data = String::new();
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        name = Some(v.trim_start().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        if !data.is_empty() {
                            data.push('\n');
                        }
                        data.push_str(v.strip_prefix(' ').unwrap_or(v));
                    }
                }
                if let Some(name) = name {
                    let value = serde_json::from_str(&data)
                        .unwrap_or_else(|e| panic!("event {name}: data is not JSON ({e}): {data}"));
                    return Some((name, value));
                }
            }
            match self.resp.chunk().await.expect("the stream reads") {
                Some(bytes) => self.buf.extend_from_slice(&bytes),
                None => return None,
            }
        }
    }
}
