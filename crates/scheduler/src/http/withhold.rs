//! Outputs judged before delivery: what the worker's classifier found in a
//! result's pictures, and what a text answer says, against
//! `[moderation.outputs]` and the prompt rules.
//!
//! The classifier runs on the worker, which holds the bytes, so the
//! scheduler's request path never pays for a model run; the decision is
//! made here, because only the scheduler knows where the job came from and
//! what the operator allows there. A withheld job ends FAILED with
//! `content_withheld` and a message the user reads; its artifacts are kept,
//! marked withheld, for the admin to review (`GET /api/admin/artifacts/{id}`),
//! and no frontend key may fetch them.

use bytes::Bytes;

use tessera_api::internal::{ArtifactKind, ArtifactMeta, Classification, MAX_DETECTIONS};
use tessera_core::moderation::outputs::Withhold;
use tessera_core::moderation::Context;

use super::error::ApiError;
use super::AppState;
use crate::lifecycle::now_ms;
use crate::store::JobRecord;

/// Whether adult content is allowed for this job: decided at create from
/// the context its frontend's key may report (`http/adult`) and kept on the
/// job record.
fn adult_allowed(job: &JobRecord) -> bool {
    job.adult_allowed
}

/// Checks a classification as the worker sent it: a plain model name,
/// labels the classifier has, scores between 0 and 1.
pub fn validate(c: &Classification) -> Result<(), String> {
    let plain = |s: &str| {
        (1..=64).contains(&s.len())
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if !plain(&c.model) {
        return Err("a classification's model is 1-64 letters, digits, `.`, `_` or `-`".into());
    }
    if c.detections.len() > MAX_DETECTIONS {
        return Err(format!(
            "a classification has at most {MAX_DETECTIONS} detections"
        ));
    }
    if c.unclassified
        .as_ref()
        .is_some_and(|why| why.chars().count() > 500)
    {
        return Err("a classification's `unclassified` reason is at most 500 characters".into());
    }
    for d in &c.detections {
        if d.label.parse::<tessera_moderation::Label>().is_err() {
            return Err(format!(
                "`{}` is not a label the output classifier reports",
                d.label.chars().take(64).collect::<String>()
            ));
        }
        if !d.score.is_finite() || !(0.0..=1.0).contains(&d.score) {
            return Err("a detection's score is between 0 and 1".into());
        }
    }
    Ok(())
}

/// A result's verdict: why its outputs are withheld, and what the user reads.
pub struct Verdict {
    /// The metric label: the classifier's label, `unclassified`, or the
    /// prompt rule a text answer matched.
    pub label: String,
    pub message: String,
    /// Whether the job's tokens are given back.
    pub refund: bool,
}

/// Judges a completed result's outputs for `job`: `None` to deliver them.
pub async fn judge(
    state: &AppState,
    job: &JobRecord,
    metas: &[ArtifactMeta],
    parts: &[Bytes],
) -> Result<Option<Verdict>, ApiError> {
    let adult = adult_allowed(job);
    if adult {
        return Ok(None);
    }
    let policy = &state.config.moderation.outputs;
    let refund = policy.refund;
    let charged = |refund: bool| {
        if refund || job.cost_tokens == 0 {
            "Nothing was charged."
        } else {
            "Its tokens are not refunded."
        }
    };
    for (meta, bytes) in metas.iter().zip(parts) {
        let what = match meta.kind {
            ArtifactKind::Image => "image",
            ArtifactKind::Video => "video",
            ArtifactKind::Audio => continue,
            ArtifactKind::Text => {
                if let Some(rule) = text_refused(state, job, bytes).await? {
                    return Ok(Some(Verdict {
                        label: rule,
                        message: format!(
                            "Your answer was withheld: it said something not allowed here. {}",
                            charged(refund)
                        ),
                        refund,
                    }));
                }
                continue;
            }
        };
        let found = meta
            .classification
            .as_ref()
            .filter(|c| c.unclassified.is_none() && c.frames > 0)
            .map(|c| c.detections.iter().map(|d| (d.label.as_str(), d.score)));
        if let Some(reason) = policy.judge(found, adult) {
            let message = match &reason {
                Withhold::Found { .. } => format!(
                    "Your {what} was withheld: it showed content not allowed here. {}",
                    charged(refund)
                ),
                Withhold::Unclassified => format!(
                    "Your {what} was withheld: it could not be checked, and only checked outputs are delivered here. {}",
                    charged(refund)
                ),
            };
            return Ok(Some(Verdict {
                label: reason.label().to_owned(),
                message,
                refund,
            }));
        }
    }
    Ok(None)
}

/// The prompt rule a text answer matches (refuse, or adult content where
/// it is not allowed), if any. Rewrites do not apply to answers.
async fn text_refused(
    state: &AppState,
    job: &JobRecord,
    bytes: &Bytes,
) -> Result<Option<String>, ApiError> {
    let plan = state
        .store
        .quota(&job.user_ref, job.billing_day, now_ms())
        .await?
        .map(|q| q.plan.id)
        .unwrap_or_default();
    let context = Context {
        plan: &plan,
        channel: job.frontend,
        nsfw_allowed: adult_allowed(job),
    };
    let mut texts = vec![String::from_utf8_lossy(bytes).into_owned()];
    Ok(state
        .prompts
        .check_texts(&mut texts, &context)
        .err()
        .map(|refusal| refusal.rule))
}
