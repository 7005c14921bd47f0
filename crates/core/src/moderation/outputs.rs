//! Output policy: which outputs a job may deliver, judged from what the
//! worker's classifier found in them (`[moderation.outputs]`).
//!
//! The classifier runs on the worker (it holds the bytes, and one image
//! costs tens of milliseconds of every core, which the scheduler's request
//! path must not pay); the decision is the scheduler's, from this
//! configuration: a label at or above its threshold, where adult content is
//! not allowed, withholds the job's outputs. Pure: the scheduler passes
//! what was found and whether adult content is allowed.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What to do with an image or video that came without a classification
/// (the worker has no classifier, or could not decode the file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unclassified {
    /// Deliver it: right for one machine without the model.
    Deliver,
    /// Withhold it for review: what a public service should set.
    Withhold,
}

/// The `[moderation.outputs]` section of the scheduler's configuration.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutputsConfig {
    /// Labels that count as adult content, each with the least score (0 to
    /// 1) at which it does. Labels are NudeNet's (`FEMALE_BREAST_EXPOSED`...).
    pub thresholds: BTreeMap<String, f32>,
    /// Whether the tokens of a job whose outputs were withheld are given back.
    pub refund: bool,
    /// What to do with an image or video that came unclassified.
    pub unclassified: Unclassified,
}

impl Default for OutputsConfig {
    fn default() -> Self {
        let thresholds = [
            ("ANUS_EXPOSED", 0.4),
            ("BUTTOCKS_EXPOSED", 0.5),
            ("FEMALE_BREAST_EXPOSED", 0.5),
            ("FEMALE_GENITALIA_EXPOSED", 0.4),
            ("MALE_GENITALIA_EXPOSED", 0.4),
        ]
        .into_iter()
        .map(|(label, score)| (label.to_owned(), score))
        .collect();
        Self {
            thresholds,
            refund: true,
            unclassified: Unclassified::Deliver,
        }
    }
}

/// Why an output is withheld.
#[derive(Clone, Debug, PartialEq)]
pub enum Withhold {
    /// A configured label scored at or above its threshold.
    Found { label: String, score: f32 },
    /// The output came without a classification and `unclassified` is
    /// `withhold`.
    Unclassified,
}

impl Withhold {
    /// The metric and record label: the classifier's label, or `unclassified`.
    pub fn label(&self) -> &str {
        match self {
            Withhold::Found { label, .. } => label,
            Withhold::Unclassified => "unclassified",
        }
    }
}

impl OutputsConfig {
    /// Checks scores (0 to 1) and, with `known`, label names.
    pub fn check(&self, known: impl Fn(&str) -> bool) -> Result<(), String> {
        for (label, score) in &self.thresholds {
            if !known(label) {
                return Err(format!(
                    "moderation.outputs.thresholds: `{label}` is not a label the classifier reports"
                ));
            }
            if !score.is_finite() || !(0.0..=1.0).contains(score) {
                return Err(format!(
                    "moderation.outputs.thresholds.{label} must be between 0 and 1, not {score}"
                ));
            }
        }
        Ok(())
    }

    /// Judges one picture output: `None` when it is classified and no
    /// configured label reaches its threshold (or adult content is allowed),
    /// else why it is withheld. `detections` is `None` when unclassified.
    pub fn judge<'a>(
        &self,
        detections: Option<impl IntoIterator<Item = (&'a str, f32)>>,
        adult_allowed: bool,
    ) -> Option<Withhold> {
        if adult_allowed {
            return None;
        }
        let Some(detections) = detections else {
            return (self.unclassified == Unclassified::Withhold).then_some(Withhold::Unclassified);
        };
        detections
            .into_iter()
            .filter(|(label, score)| self.thresholds.get(*label).is_some_and(|t| score >= t))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(label, score)| Withhold::Found {
                label: label.to_owned(),
                score,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_at_its_threshold_withholds_unless_adult_content_is_allowed() {
        let policy = OutputsConfig::default();
        let found = [("FACE_FEMALE", 0.9), ("BUTTOCKS_EXPOSED", 0.5)];
        assert_eq!(
            policy.judge(Some(found), false),
            Some(Withhold::Found {
                label: "BUTTOCKS_EXPOSED".into(),
                score: 0.5
            })
        );
        assert_eq!(policy.judge(Some(found), true), None);
        assert_eq!(
            policy.judge(Some([("BUTTOCKS_EXPOSED", 0.49)]), false),
            None
        );
        // Labels not configured never withhold, whatever their score.
        assert_eq!(policy.judge(Some([("FACE_FEMALE", 0.99)]), false), None);
    }

    #[test]
    fn unclassified_outputs_follow_the_policy() {
        let none: Option<[(&str, f32); 0]> = None;
        let mut policy = OutputsConfig::default();
        assert_eq!(policy.judge(none, false), None);
        policy.unclassified = Unclassified::Withhold;
        assert_eq!(policy.judge(none, false), Some(Withhold::Unclassified));
        assert_eq!(policy.judge(none, true), None);
    }

    #[test]
    fn bad_scores_and_unknown_labels_are_refused() {
        let mut policy = OutputsConfig::default();
        assert!(policy.check(|_| true).is_ok());
        assert!(policy
            .check(|l| l != "ANUS_EXPOSED")
            .unwrap_err()
            .contains("ANUS_EXPOSED"));
        policy.thresholds.insert("FACE_MALE".into(), 1.5);
        assert!(policy
            .check(|_| true)
            .unwrap_err()
            .contains("between 0 and 1"));
    }
}
