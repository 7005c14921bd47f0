//! People: suspensions and bans, users' reports of outputs, the review
//! queue and the audit log.
//!
//! An operator suspends or bans a user (`/api/admin/users/{user_ref}/...`);
//! the sanction applies to the person, every user sharing the billing user
//! (a linked chat user and its website account). Frontends send their
//! users' reports (`POST /api/v1/jobs/{job_id}/reports`). Reports, withheld
//! outputs, repeated refusals and child-safety refusals open cases in the
//! review queue (`/api/admin/moderation/cases`), which an operator decides;
//! every moderation action lands in the audit log
//! (`/api/admin/moderation/audit`).

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use tessera_core::{ArtifactId, BotId, Capability, JobId, JobState, Platform, UserRef};

/// Longest reason, report or note, in characters.
pub const MAX_REASON_CHARS: usize = 500;

macro_rules! word_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident = $text:literal,)* }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vdoc])* $variant,)*
        }

        impl $name {
            /// As it travels and is stored.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text,)*
                }
            }
        }

        impl FromStr for $name {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok($name::$variant),)*
                    _ => Err(format!("not a {}: {s:?}", stringify!($name))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.pad(self.as_str())
            }
        }
    };
}

word_enum! {
    /// What a sanction does: both refuse every job create while they last.
    SanctionKind {
        /// For a while, or pending review.
        Suspension = "suspension",
        /// Usually for good.
        Ban = "ban",
    }
}

word_enum! {
    /// What opened a case.
    CaseKind {
        /// A user reported an output.
        Report = "report",
        /// An output was withheld by the output classifier.
        Withheld = "withheld",
        /// The user's prompts were refused repeatedly.
        Refusals = "refusals",
        /// The user hit the built-in child-safety rules (and was suspended).
        ChildSafety = "child_safety",
    }
}

word_enum! {
    /// Whether a case waits for a decision.
    CaseStatus {
        Open = "open",
        Decided = "decided",
    }
}

word_enum! {
    /// An operator's decision on a case.
    Decision {
        /// Nothing to do; a sanction the case placed stays (lift it apart).
        Dismiss = "dismiss",
        /// Suspend the case's user (until `until`, or with no end).
        Suspend = "suspend",
        /// Ban the case's user.
        Ban = "ban",
        /// Lift every sanction of the case's user (an automatic suspension
        /// found unwarranted).
        Lift = "lift",
    }
}

/// `POST /api/admin/users/{user_ref}/suspend` and `.../ban`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SanctionRequest {
    /// Why, for the audit log and the review (the user is not shown it).
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
    /// When it ends (in the future); none: until lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// The operator's name for the audit log (recorded as `admin:<name>`);
    /// none: `admin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9_.@-]{1,64}$")]
    pub actor: Option<String>,
}

/// `POST /api/admin/users/{user_ref}/lift`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LiftRequest {
    /// Why, for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 500)]
    pub reason: Option<String>,
    /// As in [`SanctionRequest::actor`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9_.@-]{1,64}$")]
    pub actor: Option<String>,
}

/// A suspension or ban.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SanctionView {
    pub sanction_id: i64,
    /// The user it was placed on; it applies to every user linked with them.
    #[schema(value_type = String)]
    pub user_ref: UserRef,
    pub kind: SanctionKind,
    pub reason: String,
    /// `admin`, `admin:<name>` or `system`.
    pub placed_by: String,
    /// The case it was placed for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<i64>,
    pub starts_at: DateTime<Utc>,
    /// None: until lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifted_by: Option<String>,
}

/// `GET /api/admin/users/{user_ref}/sanctions`: the person's sanctions.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct UserSanctions {
    #[schema(value_type = String)]
    pub user_ref: UserRef,
    /// The sanction that refuses the user's jobs now (a ban before a
    /// suspension, then the one that lasts longest).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active: Option<SanctionView>,
    /// Every sanction of the person, newest first.
    pub sanctions: Vec<SanctionView>,
}

/// What a lift ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LiftResult {
    #[schema(value_type = String)]
    pub user_ref: UserRef,
    pub lifted: Vec<SanctionView>,
}

/// `POST /api/v1/jobs/{job_id}/reports`: a user reports a job's output.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReportRequest {
    /// The reporter, a user of the key's platform.
    #[schema(value_type = String, pattern = "^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$")]
    pub user_ref: UserRef,
    /// What is wrong with it, in the user's words.
    #[schema(min_length = 1, max_length = 500)]
    pub reason: String,
}

/// A report, as recorded.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportView {
    pub report_id: i64,
    #[schema(value_type = String)]
    pub job_id: JobId,
    /// The case it opened or joined.
    pub case_id: i64,
    pub reason: String,
    pub created_at: DateTime<Utc>,
}

/// A case of the review queue.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CaseView {
    pub case_id: i64,
    pub kind: CaseKind,
    /// The user the case is about (a report's: the job's owner).
    #[schema(value_type = String)]
    pub user_ref: UserRef,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub job_id: Option<JobId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub artifact_id: Option<ArtifactId>,
    /// What opened it, in words.
    pub cause: String,
    pub status: CaseStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// Filters of `GET /api/admin/moderation/cases`: open cases first, oldest
/// first, then decided ones, newest decided first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListCasesQuery {
    /// Only cases of this kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, pattern = "^(report|withheld|refusals|child_safety)$")]
    pub kind: Option<CaseKind>,
    /// Only open or only decided cases.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, pattern = "^(open|decided)$")]
    pub status: Option<CaseStatus>,
    /// At most this many, 1 to 100 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CaseList {
    pub cases: Vec<CaseView>,
}

/// A refused prompt, as evidence: the excerpt that matched, never the prompt.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct RefusalEvidence {
    pub rule: String,
    pub code: String,
    pub excerpt: String,
    pub channel: Platform,
    #[schema(value_type = String)]
    pub bot_id: BotId,
    pub at: DateTime<Utc>,
}

/// A report, as evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportEvidence {
    pub report_id: i64,
    #[schema(value_type = String)]
    pub reporter: UserRef,
    pub channel: Platform,
    pub reason: String,
    pub at: DateTime<Utc>,
}

/// The job a case is about.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobEvidence {
    #[schema(value_type = String)]
    pub job_id: JobId,
    pub capability: Capability,
    pub status: JobState,
    #[schema(value_type = Object)]
    pub params: serde_json::Value,
    #[schema(value_type = Vec<String>)]
    pub artifact_ids: Vec<ArtifactId>,
}

/// `GET /api/admin/moderation/cases/{case_id}`: a case and its evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CaseDetail {
    pub case: CaseView,
    /// The sanction on the case's user now, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanction: Option<SanctionView>,
    /// The user's latest refused prompts (at most 20), newest first.
    pub refusals: Vec<RefusalEvidence>,
    /// The reports of a report case, oldest first.
    pub reports: Vec<ReportEvidence>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobEvidence>,
}

/// `POST /api/admin/moderation/cases/{case_id}/decision`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DecideRequest {
    pub decision: Decision,
    /// With `suspend`: when the suspension ends (in the future); none: until
    /// lifted. Refused with any other decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// Why, for the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(min_length = 1, max_length = 500)]
    pub note: Option<String>,
    /// As in [`SanctionRequest::actor`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(pattern = "^[A-Za-z0-9_.@-]{1,64}$")]
    pub actor: Option<String>,
}

/// What a decision did.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DecisionResult {
    pub case: CaseView,
    /// The sanction it placed (`suspend`, `ban`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanction: Option<SanctionView>,
    /// The sanctions it lifted (`lift`).
    pub lifted: Vec<SanctionView>,
}

/// One moderation action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: DateTime<Utc>,
    /// `admin`, `admin:<name>` or `system`.
    pub actor: String,
    /// `suspend`, `ban`, `lift`, `auto_suspend` or `decide`.
    pub action: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub user_ref: Option<UserRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sanction_id: Option<i64>,
    pub detail: String,
}

/// Filters of `GET /api/admin/moderation/audit`, newest first.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AuditQuery {
    /// Only actions on this user.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(value_type = Option<String>, pattern = "^(telegram|discord|web):[A-Za-z0-9_.@-]{1,64}$")]
    pub user_ref: Option<UserRef>,
    /// At most this many, 1 to 100 (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
    /// Only entries older than this id (the last `id` of the previous page).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[param(minimum = 1, maximum = 1_000_000_000_000_000_000_i64)]
    pub before: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AuditList {
    pub entries: Vec<AuditEntry>,
}
