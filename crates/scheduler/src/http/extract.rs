//! Extractors that parse requests once, at the edge, and reject with
//! [`ApiError`] (the JSON envelope) instead of axum's plain text.
//!
//! Bodies and query strings deserialise straight into `tessera-api`'s wire
//! types, whose ids (`BotId`, `WorkerId`, `PlanId`, `UserRef`, `JobId`...)
//! validate themselves, so a handler only ever sees well-formed values. A
//! value that does not parse is refused with the path of the field at fault
//! (`serde_path_to_error`), and each body type says which code that refusal
//! carries ([`Refusal`]): a heartbeat's bad `worker_id` is `invalid_heartbeat`,
//! a key's bad `bot_id` is `invalid_bot_id`, a plan id that cannot exist is the
//! `plan_not_found` any unknown plan is.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use serde::de::DeserializeOwned;
use tessera_api::ErrorCode;

use super::error::ApiError;

/// How a body type's fields are refused when they do not parse.
pub trait Refusal {
    /// The error for the value at `field` (a dotted path, `params.prompt`),
    /// which did not parse for `message`. By default `invalid_request`.
    fn refuse(field: &str, message: String) -> ApiError {
        ApiError::invalid(ErrorCode::InvalidRequest, message).with_field(field)
    }

    /// The error for a body that is not JSON at all. By default 400
    /// `malformed_request`.
    fn malformed(message: String) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::MalformedRequest,
            message,
        )
    }
}

/// A JSON body of type `T`, parsed once.
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Refusal,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers()) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                ErrorCode::UnsupportedMediaType,
                "Expected request with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|r| super::error::rejection(r.status(), r.body_text()))?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body as `T`, refusing as `T` says.
///
/// A JSON number is a number: `2.0` is the integer `2` (JSON Schema says so,
/// and the document's integer fields with it), though serde takes only `2`
/// where it reads an integer. A body refused for a value that does not fit
/// is read again with every whole number written as an integer, and
/// refused for what is still wrong, if anything.
pub fn parse_json<T: DeserializeOwned + Refusal>(bytes: &[u8]) -> Result<T, ApiError> {
    // Every body is an object; serde would also read a struct from an array
    // of its fields in order (`[null]` for a body of optional fields).
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
        let mut error = T::refuse(".", "the body must be a JSON object".into());
        error.field = None;
        return Err(error);
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let mut e = match serde_path_to_error::deserialize(de) {
        Ok(parsed) => return Ok(parsed),
        Err(e) => e,
    };
    if e.inner().classify() == serde_json::error::Category::Data {
        if let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes) {
            if whole_numbers(&mut value) {
                // Refused again: for what is still wrong.
                match serde_path_to_error::deserialize(value) {
                    Ok(parsed) => return Ok(parsed),
                    Err(again) => e = again,
                }
            }
        }
    }
    let field = e.path().to_string();
    let inner = e.into_inner();
    Err(match inner.classify() {
        serde_json::error::Category::Data => {
            let mut error = T::refuse(&field, refusal_message(&field, &inner));
            if field == "." {
                // The body as a whole is of the wrong shape: no field to name.
                error.field = None;
            }
            error
        }
        _ => T::malformed(format!("the body is not valid JSON: {inner}")),
    })
}

/// Writes every whole number of `value` held as a float (`2.0`) as the
/// integer it is; says whether it changed anything.
fn whole_numbers(value: &mut serde_json::Value) -> bool {
    use serde_json::Value;
    /// Past 2^53 a float no longer spells one integer.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    match value {
        Value::Number(n) if !n.is_i64() && !n.is_u64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() <= EXACT => {
                // In range, so the cast is exact.
                *value = Value::from(f as i64);
                true
            }
            _ => false,
        },
        Value::Array(items) => items.iter_mut().fold(false, |c, v| whole_numbers(v) | c),
        Value::Object(map) => map.values_mut().fold(false, |c, v| whole_numbers(v) | c),
        _ => false,
    }
}

/// A query string of type `T`, parsed once; refusals are `invalid_query`
/// naming the parameter.
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or_default();
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let field = e.path().to_string();
                let message = refusal_message(&field, e.inner());
                let error = ApiError::invalid(ErrorCode::InvalidQuery, message);
                if field == "." {
                    error
                } else {
                    error.with_field(field)
                }
            })
    }
}

/// `axum::extract::Path`, rejecting with the JSON error envelope.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    essence.eq_ignore_ascii_case("application/json")
        || essence
            .rsplit_once('+')
            .is_some_and(|(_, suffix)| suffix.eq_ignore_ascii_case("json"))
}

/// The deserialiser's message, with the field named where it does not say it.
fn refusal_message(field: &str, e: &dyn std::fmt::Display) -> String {
    let text = e.to_string();
    if field == "." || text.starts_with(field) {
        text
    } else {
        format!("{field}: {text}")
    }
}
