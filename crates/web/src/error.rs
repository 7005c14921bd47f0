//! Everything that can go wrong, as a page a person understands.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use tessera_api::ClientError;

use crate::views;

/// A failed request, rendered by [`IntoResponse`] as an error page.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// The page needs an account: go to the sign-in page.
    #[error("sign in first")]
    SignInNeeded,
    /// A form came back without the session's CSRF token.
    #[error("the form expired")]
    Csrf,
    #[error("not found")]
    NotFound,
    /// A download link the scheduler did not sign (altered, cut short).
    #[error("the download link is not valid")]
    LinkInvalid,
    /// A download link past its lifetime.
    #[error("the download link has expired")]
    LinkExpired,
    /// The scheduler cannot be reached or is not ready.
    #[error("the scheduler is unavailable: {0}")]
    Unavailable(String),
    /// The scheduler refused a request the page made (not a form: those show
    /// their errors beside the fields); its words are shown.
    #[error("{0}")]
    Refused(String),
    /// The payment provider cannot be reached: nothing was charged.
    #[error("the payment provider is unavailable")]
    PaymentsDown,
    /// Too many jobs too fast; try again in this many seconds.
    #[error("slow down")]
    Slow(u64),
    /// Anything else: logged, and shown as a generic failure.
    #[error("{0}")]
    Internal(String),
}

impl From<ClientError> for WebError {
    fn from(e: ClientError) -> Self {
        match &e {
            ClientError::Transport(_) => WebError::Unavailable(e.to_string()),
            ClientError::Api { status, .. } | ClientError::Unexpected { status, .. }
                if *status == reqwest::StatusCode::SERVICE_UNAVAILABLE
                    || *status == reqwest::StatusCode::BAD_GATEWAY
                    || *status == reqwest::StatusCode::GATEWAY_TIMEOUT =>
            {
                WebError::Unavailable(e.to_string())
            }
            ClientError::Api { status, .. } if *status == reqwest::StatusCode::NOT_FOUND => {
                WebError::NotFound
            }
            // 401 and 403 mean the site's own key is wrong: its operator's problem.
            ClientError::Api { status, body }
                if status.is_client_error()
                    && *status != reqwest::StatusCode::UNAUTHORIZED
                    && *status != reqwest::StatusCode::FORBIDDEN =>
            {
                WebError::Refused(body.error.message.clone())
            }
            _ => WebError::Internal(e.to_string()),
        }
    }
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title, message): (StatusCode, &str, String) = match &self {
            WebError::SignInNeeded => return Redirect::to("/signin").into_response(),
            WebError::Csrf => (
                StatusCode::FORBIDDEN,
                "This form has expired",
                "The page was open too long or came from somewhere else. Go back, reload \
                 the page and send the form again."
                    .into(),
            ),
            WebError::NotFound => (
                StatusCode::NOT_FOUND,
                "Page not found",
                "There is nothing here. The link may be wrong, or the job belongs to \
                 another account."
                    .into(),
            ),
            WebError::LinkInvalid => (
                StatusCode::FORBIDDEN,
                "This download link is not valid",
                "The link was changed or cut short on its way here. Copy the whole link \
                 from the message the bot sent, or ask the bot for the output again."
                    .into(),
            ),
            WebError::LinkExpired => (
                StatusCode::GONE,
                "This download link has expired",
                "Download links work for a limited time, and this one's has passed. Run \
                 the request again to get a new one."
                    .into(),
            ),
            WebError::Unavailable(why) => {
                tracing::warn!(error = %why, "scheduler unavailable");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Tessera is unavailable right now",
                    "The service that runs the jobs cannot be reached at the moment. Your \
                     account and your jobs are safe. Please try again in a minute."
                        .into(),
                )
            }
            WebError::Refused(why) => (
                StatusCode::BAD_REQUEST,
                "That did not work",
                format!("The service refused the request: {why}"),
            ),
            WebError::PaymentsDown => (
                StatusCode::SERVICE_UNAVAILABLE,
                "Payments are unavailable right now",
                "Stripe, which takes our payments, cannot be reached at the moment. Nothing \
                 was charged and your plan is unchanged. Please try again in a few minutes."
                    .into(),
            ),
            WebError::Slow(secs) => (
                StatusCode::TOO_MANY_REQUESTS,
                "Slow down a little",
                format!("You are starting jobs faster than allowed. Try again in {secs} s."),
            ),
            WebError::Internal(why) => {
                tracing::error!(error = %why, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Something went wrong",
                    "The request failed on our side. It has been logged; please try again.".into(),
                )
            }
        };
        (status, views::error_page(status, title, &message)).into_response()
    }
}
