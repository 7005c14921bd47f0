//! The client's calls for people: suspensions and bans, users' reports,
//! the review queue and the audit log (see [`crate::review`]).

use reqwest::Method;

use super::{Client, ClientError};
use crate::review::{
    AuditList, AuditQuery, CaseDetail, CaseList, DecideRequest, DecisionResult, LiftRequest,
    LiftResult, ListCasesQuery, ReportRequest, ReportView, SanctionKind, SanctionRequest,
    SanctionView, UserSanctions,
};
use tessera_core::{JobId, UserRef};

impl Client {
    /// `POST /api/admin/users/{user_ref}/suspend` or `.../ban`.
    pub async fn sanction_user(
        &self,
        user_ref: &UserRef,
        kind: SanctionKind,
        body: &SanctionRequest,
    ) -> Result<SanctionView, ClientError> {
        let verb = match kind {
            SanctionKind::Suspension => "suspend",
            SanctionKind::Ban => "ban",
        };
        let rb = self.request(Method::POST, &format!("api/admin/users/{user_ref}/{verb}"))?;
        Self::send(Self::json(rb, body)).await
    }

    /// `POST /api/admin/users/{user_ref}/lift`.
    pub async fn lift_sanctions(
        &self,
        user_ref: &UserRef,
        body: &LiftRequest,
    ) -> Result<LiftResult, ClientError> {
        let rb = self.request(Method::POST, &format!("api/admin/users/{user_ref}/lift"))?;
        Self::send(Self::json(rb, body)).await
    }

    /// `GET /api/admin/users/{user_ref}/sanctions`.
    pub async fn user_sanctions(&self, user_ref: &UserRef) -> Result<UserSanctions, ClientError> {
        Self::send(self.request(
            Method::GET,
            &format!("api/admin/users/{user_ref}/sanctions"),
        )?)
        .await
    }

    /// `POST /api/v1/jobs/{job_id}/reports`: a user reports a job's output.
    pub async fn report_job(
        &self,
        job_id: &JobId,
        body: &ReportRequest,
    ) -> Result<ReportView, ClientError> {
        let rb = self.request(Method::POST, &format!("api/v1/jobs/{job_id}/reports"))?;
        Self::send(Self::json(rb, body)).await
    }

    /// `GET /api/admin/moderation/cases`: the review queue.
    pub async fn list_cases(&self, query: &ListCasesQuery) -> Result<CaseList, ClientError> {
        Self::send(
            self.request(Method::GET, "api/admin/moderation/cases")?
                .query(query),
        )
        .await
    }

    /// `GET /api/admin/moderation/cases/{case_id}`: a case and its evidence.
    pub async fn get_case(&self, case_id: i64) -> Result<CaseDetail, ClientError> {
        Self::send(self.request(
            Method::GET,
            &format!("api/admin/moderation/cases/{case_id}"),
        )?)
        .await
    }

    /// `POST /api/admin/moderation/cases/{case_id}/decision`.
    pub async fn decide_case(
        &self,
        case_id: i64,
        body: &DecideRequest,
    ) -> Result<DecisionResult, ClientError> {
        let rb = self.request(
            Method::POST,
            &format!("api/admin/moderation/cases/{case_id}/decision"),
        )?;
        Self::send(Self::json(rb, body)).await
    }

    /// `GET /api/admin/moderation/audit`: the audit log, newest first.
    pub async fn audit_log(&self, query: &AuditQuery) -> Result<AuditList, ClientError> {
        Self::send(
            self.request(Method::GET, "api/admin/moderation/audit")?
                .query(query),
        )
        .await
    }
}
