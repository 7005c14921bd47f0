//! Every stable error code Tessera answers with, in one place.
//!
//! A code is the machine-readable half of an error: frontends switch on it
//! (a quota refusal is worded differently from a bad prompt), operators grep
//! logs and metrics for it, and a job that ended badly keeps it. Codes are part
//! of the API contract, so they are named once here and every role — the
//! scheduler answering, the worker reporting, the clients, bots and website
//! reading — names the variant instead of spelling the string. `tessera-api`
//! re-exports this enum; it lives in `tessera-core` because parameter
//! validation, which is core's, produces codes too.
//!
//! On the wire a code is a plain string (`"quota_exhausted"`): a client that
//! meets a code newer than itself still reads the error, it just cannot name it
//! ([`ErrorCode::from_str`] fails).

use std::fmt;
use std::str::FromStr;

macro_rules! error_codes {
    ($($(#[$doc:meta])* $variant:ident = $text:literal,)*) => {
        /// A stable error code; see the module documentation.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum ErrorCode {
            $($(#[$doc])* $variant,)*
        }

        impl ErrorCode {
            /// Every code, in declaration order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The code as it travels: `quota_exhausted`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $text,)*
                }
            }
        }

        impl FromStr for ErrorCode {
            type Err = UnknownCode;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(ErrorCode::$variant),)*
                    _ => Err(UnknownCode),
                }
            }
        }
    };
}

error_codes! {
    // Credentials.
    /// No credential, or not in the `Bearer <key>` form.
    Unauthorized = "unauthorized",
    /// A credential that no live key or token matches (unknown or revoked).
    InvalidCredentials = "invalid_credentials",
    /// A valid credential of the wrong kind for this endpoint.
    WrongCredential = "wrong_credential",
    /// The key's bot may not act for this bot.
    ForbiddenBot = "forbidden_bot",
    /// The key may not act for this user (another platform, another website's account).
    ForbiddenUserRef = "forbidden_user_ref",
    /// Only another kind of frontend may call this endpoint.
    ForbiddenFrontend = "forbidden_frontend",

    // Requests the framework refuses.
    /// The body does not fit the endpoint's shape.
    InvalidRequest = "invalid_request",
    /// The body is not JSON (or not the multipart the endpoint takes).
    MalformedRequest = "malformed_request",
    UnsupportedMediaType = "unsupported_media_type",
    BodyTooLarge = "body_too_large",
    /// A query string's filters or limits are out of range.
    InvalidQuery = "invalid_query",
    NotFound = "not_found",
    MethodNotAllowed = "method_not_allowed",
    /// The request took longer than the server allows.
    Timeout = "timeout",

    // Job creation and parameters.
    InvalidUserRef = "invalid_user_ref",
    InvalidBotId = "invalid_bot_id",
    InvalidParams = "invalid_params",
    UnknownParam = "unknown_param",
    MissingParam = "missing_param",
    PromptEmpty = "prompt_empty",
    PromptTooLong = "prompt_too_long",
    ResolutionNotAllowed = "resolution_not_allowed",
    ModelUnknown = "model_unknown",
    ModelNotAllowed = "model_not_allowed",
    CapabilityUnavailable = "capability_unavailable",
    ReplyContextTooLarge = "reply_context_too_large",
    InvalidIdempotencyKey = "invalid_idempotency_key",
    /// An `Idempotency-Key` already used for a different request.
    IdempotencyKeyReused = "idempotency_key_reused",
    /// The user's daily tokens are spent (the error carries `resets_at`).
    QuotaExhausted = "quota_exhausted",
    /// The plan's queue for this capability and model is longer than the
    /// plan's wait bound: the job was not accepted (the error carries
    /// `expected_wait_seconds` and `retry_after_seconds`; nothing charged).
    QueueFull = "queue_full",
    /// The user has as many queued jobs as their plan allows (the error
    /// carries `retry_after_seconds`; nothing charged).
    TooManyQueued = "too_many_queued",
    /// A prompt rule refused the job's text (the message says why).
    PromptRefused = "prompt_refused",
    /// The job's text asks for adult content, which is not allowed here.
    ContentNotAllowed = "content_not_allowed",
    /// The request's `context` names what only another kind of frontend may
    /// report (a Telegram key claiming a Discord channel is NSFW).
    ContextNotAllowed = "context_not_allowed",
    /// A `callback_url` whose host is (or resolves to) a private, loopback,
    /// link-local or otherwise non-public address the operator does not
    /// allow, or that does not resolve (422; nothing charged).
    CallbackNotAllowed = "callback_not_allowed",
    /// A create with a `callback_url` by a key that has no webhook secret
    /// yet: `POST /api/v1/webhook-secret` first (422; nothing charged).
    WebhookSecretMissing = "webhook_secret_missing",

    // Moderation: people.
    /// The user (or a user linked with them) is banned; the message says
    /// until when.
    UserBanned = "user_banned",
    /// The user (or a user linked with them) is suspended; the message says
    /// until when.
    UserSuspended = "user_suspended",
    /// No case of the review queue has this id.
    CaseNotFound = "case_not_found",
    /// The case was decided already; decisions are final.
    CaseDecided = "case_decided",
    /// A lift for a user who has no sanction in force.
    NoSanction = "no_sanction",

    // Jobs, inputs and outputs.
    JobNotFound = "job_not_found",
    /// The job already ended and cannot be cancelled.
    JobFinished = "job_finished",
    /// The job has not ended yet and cannot be acknowledged.
    JobNotFinished = "job_not_finished",
    /// An input id the job's parameters name is not one of the key's uploads.
    UnknownInput = "unknown_input",
    EmptyInput = "empty_input",
    PayloadTooLarge = "payload_too_large",
    InputNotFound = "input_not_found",
    ArtifactNotFound = "artifact_not_found",
    RangeNotSatisfiable = "range_not_satisfiable",
    /// A download link whose signature does not verify (forged, altered or
    /// cut short), or that names no artifact.
    DownloadLinkInvalid = "download_link_invalid",
    /// A download link past its lifetime.
    DownloadLinkExpired = "download_link_expired",
    /// The job's output showed content not allowed where it was asked for
    /// (or could not be checked where checking is required): it is kept for
    /// review only, and the job ended FAILED. Fetching such an artifact
    /// with a frontend key answers this too (403).
    ContentWithheld = "content_withheld",

    // Administration.
    KeyNotFound = "key_not_found",
    PlanNotFound = "plan_not_found",
    /// An operator's grant whose end is not in the future.
    InvalidPeriod = "invalid_period",
    /// A revoke for a user who holds no plan an operator granted.
    GrantNotFound = "grant_not_found",

    // Payments: Telegram Stars (plan_not_for_sale also Stripe's).
    /// The plan is not sold through this channel: no price configured (or no
    /// longer at that price), or a plan nobody buys (free, admin).
    PlanNotForSale = "plan_not_for_sale",
    /// A Stars invoice payload this scheduler did not sign for this user.
    PaymentPayloadInvalid = "payment_payload_invalid",
    /// A Stars invoice past its lifetime, at the pre-checkout.
    PaymentPayloadExpired = "payment_payload_expired",
    /// The currency or amount paid is not what the invoice asked.
    PaymentMismatch = "payment_mismatch",
    /// The user has no Telegram payment that may be refunded.
    NothingToRefund = "nothing_to_refund",

    // Accounts and links.
    InvalidEmail = "invalid_email",
    WeakPassword = "weak_password",
    EmailTaken = "email_taken",
    SignInFailed = "sign_in_failed",
    AccountNotFound = "account_not_found",
    NotLinkable = "not_linkable",
    InvalidLinkCode = "invalid_link_code",
    LinkCodeUnavailable = "link_code_unavailable",

    // Developer keys and the OpenAI-compatible gateway.
    /// The account holds as many live developer keys as it may.
    TooManyKeys = "too_many_keys",
    /// The developer key is limited to other capabilities (403).
    CapabilityNotAllowed = "capability_not_allowed",
    /// The gateway knows no model of this name, or the plan does not allow it (404).
    ModelNotFound = "model_not_found",

    // Payments: Stripe.
    /// The payment channel asked for is not configured on this scheduler (404).
    PaymentsNotConfigured = "payments_not_configured",
    /// The payment provider could not be reached or refused the call; nothing
    /// was made.
    PaymentProviderUnavailable = "payment_provider_unavailable",
    /// The user never started a checkout, so there is no subscription to manage.
    NoPaymentCustomer = "no_payment_customer",
    /// A payment webhook whose signature is missing, forged or altered.
    WebhookSignatureInvalid = "webhook_signature_invalid",
    /// A payment webhook signed longer ago than the tolerance allows.
    WebhookSignatureExpired = "webhook_signature_expired",
    /// A signed payment webhook whose body is not an event the channel reads.
    InvalidWebhookEvent = "invalid_webhook_event",

    // Payments: refunds operators make.
    /// No payment of the ledger has this id (404).
    PaymentNotFound = "payment_not_found",
    /// The ledger entry is no payment that took money (a refund, a cancel, an
    /// operator's grant, or an event that carried no amount).
    NotAPayment = "not_a_payment",
    /// The payment was refunded already, or its refund is under way.
    AlreadyRefunded = "already_refunded",
    /// The provider does not refund this way: Discord refunds its own
    /// payments, and a Stars payment whose bot is not known cannot be
    /// routed to it.
    RefundNotSupported = "refund_not_supported",
    /// A Telegram bot reported on a refund order that is not its pending one.
    RefundOrderNotFound = "refund_order_not_found",

    // Workers on the internal API.
    InvalidHeartbeat = "invalid_heartbeat",
    InvalidProgress = "invalid_progress",
    InvalidResult = "invalid_result",
    ResultTooLarge = "result_too_large",
    /// A worker's progress or result for an attempt the scheduler took back.
    StaleAttempt = "stale_attempt",
    /// A worker's output piece that is not one (or passes the attempt's bound).
    InvalidOutputPiece = "invalid_output_piece",
    /// A worker's output piece that does not follow the text the scheduler
    /// holds: the worker sends its whole text again from offset 0.
    OutputGap = "output_gap",

    // A worker's own API.
    /// Too much waiting work: the scheduler's password hashing, or a worker running another job.
    Busy = "busy",
    /// The worker is shutting down and takes no new job.
    Draining = "draining",
    UnsupportedModel = "unsupported_model",
    /// A `/run_job` body that is not a job.
    InvalidJob = "invalid_job",
    /// `/cancel_job` for a job the worker is not running.
    NotRunning = "not_running",
    /// The worker's `/readyz`: the scheduler has not accepted its last heartbeat.
    NotRegistered = "not_registered",

    // A frontend's own endpoints (readiness, webhooks, interactions).
    /// A bot's readiness probe: the scheduler cannot be reached.
    SchedulerUnavailable = "scheduler_unavailable",
    /// A webhook or interaction for a bot this process does not run.
    UnknownBot = "unknown_bot",
    /// A Telegram webhook call without the secret registered with it.
    InvalidSecret = "invalid_secret",
    /// A Discord interaction whose Ed25519 signature does not verify.
    InvalidSignature = "invalid_signature",
    /// A Discord interaction body that is not an interaction.
    InvalidInteraction = "invalid_interaction",
    /// A Discord interaction of a type the bot does not handle.
    UnsupportedInteraction = "unsupported_interaction",

    // Why a job ended FAILED or CANCELLED (`error_code` on the job).
    /// The engine could not be reached or was not ready.
    EngineUnavailable = "engine_unavailable",
    /// The engine refused or failed the job; running it again would fail again.
    EngineRejected = "engine_rejected",
    /// The engine process died while running the job.
    EngineCrashed = "engine_crashed",
    /// The engine answered with something Tessera cannot use.
    InvalidOutput = "invalid_output",
    /// The job was cancelled while a worker ran it.
    Cancelled = "cancelled",
    CancelledByUser = "cancelled_by_user",
    CancelledByAdmin = "cancelled_by_admin",
    /// The job ran longer than its capability allows.
    RunTimeout = "run_timeout",
    /// The job's worker was lost on every attempt.
    AttemptsExhausted = "attempts_exhausted",
    /// No online worker serves the job's capability and model.
    NoWorker = "no_worker",
    /// A streamed answer's worker was lost after text was sent; the job is
    /// cancelled and refunded.
    StreamInterrupted = "stream_interrupted",

    // The server itself.
    DatabaseUnavailable = "database_unavailable",
    StorageUnavailable = "storage_unavailable",
    InternalError = "internal_error",
}

impl ErrorCode {
    /// The caller's credential was refused: an operator must fix a key or a
    /// token, a user can do nothing about it.
    pub const fn is_credential(self) -> bool {
        matches!(
            self,
            ErrorCode::Unauthorized
                | ErrorCode::InvalidCredentials
                | ErrorCode::WrongCredential
                | ErrorCode::ForbiddenBot
                | ErrorCode::ForbiddenUserRef
                | ErrorCode::ForbiddenFrontend
        )
    }

    /// The server failed, not the request: the same request may succeed later.
    pub const fn is_server_side(self) -> bool {
        matches!(
            self,
            ErrorCode::InternalError
                | ErrorCode::DatabaseUnavailable
                | ErrorCode::StorageUnavailable
        )
    }
}

/// The text is not a code this version knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a known error code")]
pub struct UnknownCode;

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl From<ErrorCode> for String {
    fn from(code: ErrorCode) -> String {
        code.as_str().to_owned()
    }
}

impl PartialEq<str> for ErrorCode {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ErrorCode {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<ErrorCode> for str {
    fn eq(&self, other: &ErrorCode) -> bool {
        self == other.as_str()
    }
}

impl PartialEq<ErrorCode> for String {
    fn eq(&self, other: &ErrorCode) -> bool {
        self == other.as_str()
    }
}

impl serde::Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_is_snake_case_unique_and_parses_back() {
        let mut seen = std::collections::HashSet::new();
        for &code in ErrorCode::ALL {
            let s = code.as_str();
            assert!(seen.insert(s), "{s} twice");
            assert!(
                s.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{s}"
            );
            assert_eq!(s.parse::<ErrorCode>(), Ok(code));
            assert_eq!(code.to_string(), s);
        }
        assert_eq!("no_such_code".parse::<ErrorCode>(), Err(UnknownCode));
    }
}
