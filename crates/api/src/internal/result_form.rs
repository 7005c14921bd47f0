//! The multipart body of `POST /api/internal/jobs/{job_id}/result`, defined once.
//!
//! A worker's result is one request: first a part named `result` holding a
//! [`JobResult`] as JSON (`application/json`), then one part per artifact,
//! named `artifact-0`, `artifact-1`... in the order the result lists them
//! (`application/octet-stream`, with the part's name as its file name). The
//! worker writes it with [`ResultForm`]; the scheduler reads it with
//! [`PartOrder`] (and the `result` part as the [`JobResult`] it is), so
//! neither side spells a part name or an order of its own and the two cannot
//! drift apart.

use bytes::Bytes;

use super::JobResult;

/// Name of the first part, the [`JobResult`].
pub const RESULT_PART: &str = "result";
/// Content type of the `result` part.
pub const RESULT_CONTENT_TYPE: &str = "application/json";
/// Prefix of the artifact parts' names: `artifact-0`, `artifact-1`...
pub const ARTIFACT_PART_PREFIX: &str = "artifact-";
/// Content type of every artifact part.
pub const ARTIFACT_CONTENT_TYPE: &str = "application/octet-stream";

/// The name of the artifact part at `index` (from 0).
pub fn artifact_part(index: usize) -> String {
    format!("{ARTIFACT_PART_PREFIX}{index}")
}

/// A result ready to upload: its JSON and its artifacts' bytes, kept so the
/// upload can be retried (each try needs a fresh [`reqwest::multipart::Form`]).
#[derive(Clone, Debug)]
pub struct ResultForm {
    result: Bytes,
    artifacts: Vec<Bytes>,
}

impl ResultForm {
    /// `artifacts` are the bytes of the artifacts `result.artifacts` describes, in order.
    pub fn new(result: &JobResult, artifacts: Vec<Bytes>) -> Self {
        Self {
            result: Bytes::from(serde_json::to_vec(result).expect("a result serializes")),
            artifacts,
        }
    }

    /// The multipart body: `result`, then `artifact-0`, `artifact-1`...
    pub fn to_multipart(&self) -> reqwest::multipart::Form {
        let mut form = reqwest::multipart::Form::new().part(
            RESULT_PART,
            reqwest::multipart::Part::stream(self.result.clone())
                .mime_str(RESULT_CONTENT_TYPE)
                .expect("static mime type"),
        );
        for (i, bytes) in self.artifacts.iter().enumerate() {
            form = form.part(
                artifact_part(i),
                reqwest::multipart::Part::stream(bytes.clone())
                    .file_name(artifact_part(i))
                    .mime_str(ARTIFACT_CONTENT_TYPE)
                    .expect("static mime type"),
            );
        }
        form
    }
}

/// What a part of a result upload is, by its place in the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    /// The `result` part: a [`JobResult`] as JSON.
    Result,
    /// The artifact at this index.
    Artifact(usize),
}

/// A part out of place: not `result` first, or not the next artifact.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unexpected part {0:?}: send `result` first, then `artifact-0`, `artifact-1`...")]
pub struct UnexpectedPart(pub String);

/// Checks the order of a result upload's parts as they are read: feed it each
/// part's name in turn.
#[derive(Clone, Debug, Default)]
pub struct PartOrder {
    result_seen: bool,
    artifacts: usize,
}

impl PartOrder {
    /// What the part called `name`, coming next, is; an error when it is out of place.
    pub fn next(&mut self, name: &str) -> Result<Part, UnexpectedPart> {
        if !self.result_seen && name == RESULT_PART {
            self.result_seen = true;
            return Ok(Part::Result);
        }
        if self.result_seen && name == artifact_part(self.artifacts) {
            self.artifacts += 1;
            return Ok(Part::Artifact(self.artifacts - 1));
        }
        Err(UnexpectedPart(name.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::internal::{ArtifactKind, ArtifactMeta, Outcome};

    fn result(artifacts: usize) -> JobResult {
        JobResult {
            worker_id: "worker-gpu-0".parse().unwrap(),
            attempt: 2,
            outcome: Outcome::Completed,
            artifacts: (0..artifacts)
                .map(|_| ArtifactMeta {
                    kind: ArtifactKind::Image,
                    format: "png".into(),
                    width: Some(8),
                    height: Some(8),
                    classification: None,
                    usage: None,
                })
                .collect(),
            error: None,
            timing: None,
        }
    }

    #[test]
    fn parts_come_in_order() {
        let mut order = PartOrder::default();
        assert_eq!(order.next("result"), Ok(Part::Result));
        assert_eq!(order.next("artifact-0"), Ok(Part::Artifact(0)));
        assert_eq!(order.next("artifact-1"), Ok(Part::Artifact(1)));
        assert_eq!(
            order.next("artifact-3"),
            Err(UnexpectedPart("artifact-3".into()))
        );
    }

    #[test]
    fn artifacts_before_the_result_or_a_second_result_are_refused() {
        let mut order = PartOrder::default();
        assert!(order.next("artifact-0").is_err());
        assert_eq!(order.next("result"), Ok(Part::Result));
        assert!(order.next("result").is_err());
        assert_eq!(
            UnexpectedPart("x".into()).to_string(),
            "unexpected part \"x\": send `result` first, then `artifact-0`, `artifact-1`..."
        );
    }

    #[test]
    fn the_result_part_round_trips() {
        let form = ResultForm::new(&result(1), vec![Bytes::from_static(b"png")]);
        assert_eq!(
            serde_json::from_slice::<JobResult>(&form.result).unwrap(),
            result(1)
        );
        assert_eq!(form.artifacts.len(), 1);
    }
}
