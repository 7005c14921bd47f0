//! The OpenAPI document, generated from the handlers' annotations and the wire
//! types' schemas: it cannot drift from the code.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use tessera_api::{admin, internal as wire_internal, public, ApiErrorBody, ErrorDetail};
use tessera_core::{Capability, JobState, Plan, Platform, Priority};

use super::{accounts, admin as admin_http, files, internal, jobs, results, users};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tessera scheduler API",
        description = "Public API for frontends (/api/v1) and the operator's admin API (/api/admin). \
                       Every error is `{\"error\": {\"code\", \"message\"}}` with a stable code."
    ),
    paths(
        jobs::create, jobs::get, jobs::cancel, jobs::list, jobs::delivered,
        users::get, users::plans,
        accounts::create, accounts::sign_in, accounts::get, accounts::link_code, accounts::redeem,
        admin_http::create_key, admin_http::list_keys, admin_http::revoke_key,
        users::set_plan, jobs::list_jobs, jobs::cancel_job,
        admin_http::list_workers, internal::heartbeat,
        files::upload_input, files::artifact,
        files::download_link, files::redeem_download_link,
        results::progress, results::result, results::input,
    ),
    components(schemas(
        public::CreateJobRequest, public::CreateJobResponse, public::JobView, public::JobError,
        public::JobList, public::UserQuota, public::PlanList,
        public::Credentials, public::AccountView, public::LinkCodeRequest, public::LinkCode,
        public::RedeemLinkRequest,
        public::DownloadLink,
        admin::CreateKeyRequest, admin::CreatedKey, admin::KeyView, admin::KeyList, admin::SetPlanRequest,
        wire_internal::Heartbeat, wire_internal::HeartbeatAck, wire_internal::WorkerStatus,
        wire_internal::WorkerInfo, wire_internal::WorkerList,
        wire_internal::EngineReadiness,
        ApiErrorBody, ErrorDetail, Capability, JobState, Plan, Platform, Priority,
    )),
    modifiers(&Security),
    tags(
        (name = "jobs", description = "Create, follow and cancel jobs"),
        (name = "users", description = "Quotas and plans"),
        (name = "accounts", description = "Website accounts, and the bot users linked to them"),
        (name = "admin", description = "Keys, plans, jobs and workers, for operators"),
        (name = "files", description = "Audio inputs and job outputs"),
        (name = "internal", description = "Between the scheduler and its workers"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        for name in ["frontend_key", "admin_token", "internal_token"] {
            components.add_security_scheme(
                name,
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
            );
        }
    }
}

/// `GET /api/openapi.json`.
pub async fn document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
