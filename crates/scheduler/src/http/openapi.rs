//! The OpenAPI document, generated from the handlers' annotations and the wire
//! types' schemas: it cannot drift from the code.
//!
//! Handlers document what is theirs to say (their answers, their own
//! refusals); what every operation of a kind answers is added here, once, by
//! [`Refusals`], from what each operation declares: a credential check's 401
//! and 403, a body's 400, 413, 415 and 422, a query's 422, a path's 404, and
//! the 500 and 503 anything may meet. A new operation gets them by being
//! listed. [`Flatten`] writes each `allOf` of the components as the one object
//! it is on the wire. `crates/scheduler/tests/schemathesis.rs` holds the
//! document and the server to each other.

use axum::Json;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{AdditionalProperties, Object, Schema, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, ObjectBuilder, Ref, RefOr, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use tessera_api::{admin, internal as wire_internal, public, ApiErrorBody, ErrorDetail};
use tessera_core::{Capability, JobState, Plan, Platform, Priority};

use super::{
    accounts, admin as admin_http, chats, developer_keys, entitlements, files, gateway, internal,
    jobs, payments, refunds, results, review, stars, stripe, users, webhooks,
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera scheduler API",
        description = "Public API for frontends (/api/v1) and the operator's admin API (/api/admin). \
                       Every error is `{\"error\": {\"code\", \"message\"}}` with a stable code."
    ),
    paths(
        jobs::create, jobs::get, jobs::events, jobs::cancel, jobs::list, jobs::delivered,
        webhooks::rotate,
        users::get, users::plans,
        accounts::create, accounts::sign_in, accounts::get, accounts::link_code, accounts::redeem,
        admin_http::create_key, admin_http::list_keys, admin_http::revoke_key,
        users::set_plan, jobs::list_jobs, jobs::cancel_job,
        admin_http::list_workers, payments::list, payments::grant, payments::revoke,
        internal::heartbeat,
        files::upload_input, files::artifact,
        files::download_link, files::redeem_download_link,
        files::review_artifact, files::artifact_content, files::review_job_artifacts,
        results::progress, results::output, results::result, results::input,
        entitlements::relay, entitlements::skus,
        stars::offers, stars::invoice, stars::pre_checkout, stars::payment,
        stars::refundable, stars::refunded,
        stripe::offers, stripe::checkout, stripe::portal, stripe::webhook,
        refunds::refund, refunds::list, refunds::orders, refunds::failed,
        chats::get, chats::set, accounts::confirm_age,
        developer_keys::create, developer_keys::list, developer_keys::revoke,
        gateway::models, gateway::chat_completions, gateway::images, gateway::speech,
        gateway::transcriptions, gateway::download,
        review::suspend, review::ban, review::lift, review::sanctions, review::report,
        review::cases, review::show_case, review::decide, review::audit,
    ),
    components(schemas(
        public::CreateJobRequest, public::CreateJobResponse, public::JobView, public::JobError,
        public::JobList, public::UserQuota, public::PlanList,
        public::Credentials, public::AccountView, public::LinkCodeRequest, public::LinkCode,
        public::RedeemLinkRequest,
        public::NewDeveloperKeyRequest, public::DeveloperKeyView, public::CreatedDeveloperKey,
        public::DeveloperKeyList,
        tessera_api::openai::OpenAiErrorBody, tessera_api::openai::OpenAiError,
        tessera_api::openai::ModelList, tessera_api::openai::Model,
        tessera_api::openai::ChatCompletionRequest, tessera_api::openai::StreamOptions,
        tessera_api::openai::ChatMessage, tessera_api::openai::ChatCompletion,
        tessera_api::openai::ChatChoice, tessera_api::openai::AssistantMessage,
        tessera_api::openai::Usage, tessera_api::openai::ChatCompletionChunk,
        tessera_api::openai::ChunkChoice, tessera_api::openai::Delta,
        tessera_api::openai::ImageRequest, tessera_api::openai::ImagesResponse,
        tessera_api::openai::ImageData, tessera_api::openai::SpeechRequest,
        tessera_api::openai::Transcription,
        public::DownloadLink, public::WebhookSecret, public::WebhookEvent,
        admin::CreateKeyRequest, admin::CreatedKey, admin::KeyView, admin::KeyList, admin::SetPlanRequest,
        admin::PaymentEventView, admin::PaymentList, admin::PaymentOutcome,
        admin::GrantPlanRequest, admin::RevokePlanRequest,
        admin::ArtifactReview, admin::ArtifactReviewList, wire_internal::Classification, wire_internal::ClassifiedDetection,
        wire_internal::Heartbeat, wire_internal::HeartbeatAck, wire_internal::WorkerStatus,
        wire_internal::WorkerInfo, wire_internal::WorkerList,
        wire_internal::EngineReadiness, wire_internal::ModelMemory, wire_internal::RunTiming,
        ApiErrorBody, ErrorDetail, Capability, JobState, Plan, Platform, Priority,
        tessera_core::PaymentKind, tessera_core::PaymentProvider,
        tessera_api::schema::StatusFilter,
        tessera_api::entitlements::DiscordEntitlement, tessera_api::entitlements::EntitlementSource,
        tessera_api::entitlements::EntitlementsRequest, tessera_api::entitlements::EntitlementsOutcome,
        tessera_api::entitlements::EntitlementOutcome, tessera_api::entitlements::EntitlementResult,
        tessera_api::entitlements::DiscordSku, tessera_api::entitlements::DiscordSkus,
        tessera_api::stars::StarsOffers, tessera_api::stars::StarsOffer,
        tessera_api::stars::StarsInvoiceRequest, tessera_api::stars::StarsInvoice,
        tessera_api::stars::StarsPreCheckout, tessera_api::stars::StarsPreCheckoutOk,
        tessera_api::stars::StarsPayment, tessera_api::stars::StarsPaymentOutcome,
        tessera_api::stars::StarsRefundRequest, tessera_api::stars::StarsRefundable,
        tessera_api::stars::StarsRefunded,
        tessera_api::stripe::StripeCheckoutRequest, tessera_api::stripe::StripePortalRequest,
        tessera_api::stripe::PaymentRedirect, tessera_api::stripe::StripeWebhookAck,
        tessera_api::stripe::StripeOffers, tessera_api::stripe::StripeOffer,
        tessera_api::refunds::RefundPaymentRequest, tessera_api::refunds::RefundAccepted,
        tessera_api::refunds::RefundState, tessera_api::refunds::RefundOrderView,
        tessera_api::refunds::RefundOrderList, tessera_api::refunds::StarsRefundOrder,
        tessera_api::refunds::StarsRefundOrders, tessera_api::refunds::StarsRefundFailure,
        tessera_api::nsfw::JobContext, tessera_api::nsfw::ChatNsfwRequest, tessera_api::nsfw::ChatNsfw,
        tessera_api::review::SanctionKind, tessera_api::review::CaseKind,
        tessera_api::review::CaseStatus, tessera_api::review::Decision,
        tessera_api::review::SanctionRequest, tessera_api::review::LiftRequest,
        tessera_api::review::SanctionView, tessera_api::review::UserSanctions,
        tessera_api::review::LiftResult, tessera_api::review::ReportRequest,
        tessera_api::review::ReportView, tessera_api::review::CaseView,
        tessera_api::review::CaseList, tessera_api::review::RefusalEvidence,
        tessera_api::review::ReportEvidence, tessera_api::review::JobEvidence,
        tessera_api::review::CaseDetail, tessera_api::review::DecideRequest,
        tessera_api::review::DecisionResult, tessera_api::review::AuditEntry,
        tessera_api::review::AuditList,
    )),
    modifiers(&Security, &Refusals, &Flatten),
    tags(
        (name = "jobs", description = "Create, follow and cancel jobs"),
        (name = "users", description = "Quotas and plans"),
        (name = "accounts", description = "Website accounts, and the bot users linked to them"),
        (name = "admin", description = "Keys, plans, jobs and workers, for operators"),
        (name = "files", description = "Audio inputs and job outputs"),
        (name = "internal", description = "Between the scheduler and its workers"),
        (name = "payments", description = "Plans bought through the website and the bots' platforms"),
        (name = "chats", description = "Telegram groups' NSFW settings, changed by their admins"),
        (name = "gateway", description = "OpenAI's API shapes under /v1, for developer keys"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in [
            "frontend_key",
            "admin_token",
            "internal_token",
            "developer_key",
        ] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// The refusals every operation of a kind may answer, added to each from what
/// it declares (its security, body, query and path), so no handler lists them
/// by hand and none can forget one. Where a handler already documents the
/// status, the sentence is added to its description.
struct Refusals;

impl Modify for Refusals {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for operation in operations.into_iter().flatten() {
                refusals(operation);
            }
        }
    }
}

fn refusals(op: &mut Operation) {
    if op.security.as_ref().is_some_and(|s| !s.is_empty()) {
        refusal(
            op,
            "401",
            "No `Authorization: Bearer` credential (`unauthorized`), or one that is nobody's: unknown or revoked (`invalid_credentials`).",
            Some(("WWW-Authenticate", "`Bearer`")),
        );
        refusal(
            op,
            "403",
            "A real credential of the wrong kind for this operation: a frontend key, the admin, internal or metrics token where another is needed (`wrong_credential`).",
            None,
        );
    }
    let media_types: Vec<String> = op
        .request_body
        .as_ref()
        .map(|body| body.content.keys().cloned().collect())
        .unwrap_or_default();
    if !media_types.is_empty() {
        let json = media_types.iter().any(|t| t == "application/json");
        let multipart = media_types.iter().any(|t| t.starts_with("multipart/"));
        if json || multipart {
            let what = if json { "JSON" } else { "a multipart form" };
            refusal(
                op,
                "400",
                &format!("The body is not {what} (`malformed_request`)."),
                None,
            );
        }
        refusal(
            op,
            "413",
            "The body is larger than the scheduler takes (`body_too_large`).",
            None,
        );
        refusal(
            op,
            "415",
            &format!(
                "The body's `Content-Type` is not {} (`unsupported_media_type`).",
                media_types.join(" or ")
            ),
            None,
        );
        if json || multipart {
            refusal(
                op,
                "422",
                "A field is missing, unknown or of the wrong type (`invalid_request`, or the operation's own code), naming it in `field`.",
                None,
            );
        }
    }
    let has = |op: &Operation, place: ParameterIn| {
        op.parameters
            .iter()
            .flatten()
            .any(|p| p.parameter_in == place)
    };
    if has(op, ParameterIn::Query) {
        refusal(
            op,
            "422",
            "A query parameter does not parse (`invalid_query`), naming it in `field`.",
            None,
        );
    }
    if has(op, ParameterIn::Path) {
        refusal(
            op,
            "404",
            "Nothing has this id (`not_found`, or the resource's own code).",
            None,
        );
    }
    refusal(
        op,
        "500",
        "Something unexpected failed (`internal_error`); the detail is logged on the scheduler, never sent.",
        None,
    );
    refusal(
        op,
        "503",
        "The database or the store of artifacts cannot be reached (`database_unavailable`, `storage_unavailable`), or the request outlived `server.request_timeout_secs` (`timeout`): retry after `Retry-After` seconds.",
        Some(("Retry-After", "Seconds to wait before retrying")),
    );
}

/// Documents `status` on `op` with the error envelope: adds the answer, or
/// adds `sentence` to the description of the one the handler wrote.
fn refusal(op: &mut Operation, status: &str, sentence: &str, header: Option<(&str, &str)>) {
    let answers = &mut op.responses.responses;
    match answers.get_mut(status) {
        Some(RefOr::T(answer)) => {
            let code = sentence.split('`').nth(1).unwrap_or(sentence);
            if !answer.description.contains(code) {
                answer.description = if answer.description.is_empty() {
                    sentence.to_owned()
                } else {
                    format!(
                        "{}. Or: {sentence}",
                        answer.description.trim_end_matches('.')
                    )
                };
            }
            if answer.content.is_empty() {
                answer
                    .content
                    .insert("application/json".into(), error_body());
            }
            if let Some((name, description)) = header {
                answer
                    .headers
                    .entry(name.to_owned())
                    .or_insert_with(|| text_header(description));
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let mut answer = ResponseBuilder::new()
                .description(sentence)
                .content("application/json", error_body());
            if let Some((name, description)) = header {
                answer = answer.header(name, text_header(description));
            }
            answers.insert(status.to_owned(), RefOr::T(answer.build()));
        }
    }
}

fn error_body() -> utoipa::openapi::Content {
    ContentBuilder::new()
        .schema(Some(Ref::from_schema_name("ApiErrorBody")))
        .build()
}

fn text_header(description: &str) -> utoipa::openapi::header::Header {
    HeaderBuilder::new()
        .schema(ObjectBuilder::new().schema_type(Type::String))
        .description(Some(description))
        .build()
}

/// Writes each component that is an `allOf` of objects (a type with a
/// `#[serde(flatten)]` field, such as `WorkerInfo` over `Heartbeat`) as the
/// one object it is on the wire: every property and requirement of its parts
/// in one list. Left as `allOf`, a part that refuses unknown fields (a
/// request type's `additionalProperties: false`) would refuse the other
/// parts' fields, and no answer could match.
struct Flatten;

impl Modify for Flatten {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let Some(components) = openapi.components.as_mut() else {
            return;
        };
        let names: Vec<String> = components.schemas.keys().cloned().collect();
        for name in names {
            let Some(RefOr::T(Schema::AllOf(all))) = components.schemas.get(&name) else {
                continue;
            };
            let mut merged = Object::new();
            merged.description = all.description.clone();
            let mut closed = false;
            let mut flat = true;
            for part in &all.items {
                let object = match part {
                    RefOr::T(Schema::Object(o)) => Some(o),
                    RefOr::Ref(r) => match components
                        .schemas
                        .get(r.ref_location.trim_start_matches("#/components/schemas/"))
                    {
                        Some(RefOr::T(Schema::Object(o))) => Some(o),
                        _ => None,
                    },
                    _ => None,
                };
                let Some(object) = object else {
                    flat = false;
                    break;
                };
                merged.schema_type = object.schema_type.clone();
                closed |= matches!(
                    object.additional_properties.as_deref(),
                    Some(AdditionalProperties::FreeForm(false))
                );
                for (key, value) in &object.properties {
                    merged.properties.insert(key.clone(), value.clone());
                }
                for key in &object.required {
                    if !merged.required.contains(key) {
                        merged.required.push(key.clone());
                    }
                }
            }
            if flat {
                if closed {
                    merged.additional_properties =
                        Some(Box::new(AdditionalProperties::FreeForm(false)));
                }
                components
                    .schemas
                    .insert(name, RefOr::T(Schema::Object(merged)));
            }
        }
    }
}

/// `GET /api/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
