//! The client's calls for reviewing outputs: the artifacts of a job as
//! kept, withheld or not, with what the output classifier found, and their
//! bytes (admin token).

use reqwest::Method;

use super::{Client, ClientError};
use crate::admin::{ArtifactReview, ArtifactReviewList};
use tessera_core::{ArtifactId, JobId};

impl Client {
    /// `GET /api/admin/jobs/{job_id}/artifacts`: a job's artifacts, withheld ones too.
    pub async fn review_job_artifacts(
        &self,
        job: &JobId,
    ) -> Result<ArtifactReviewList, ClientError> {
        Self::send(self.request(Method::GET, &format!("api/admin/jobs/{job}/artifacts"))?).await
    }

    /// `GET /api/admin/artifacts/{artifact_id}`: one artifact as kept.
    pub async fn review_artifact(&self, id: &ArtifactId) -> Result<ArtifactReview, ClientError> {
        Self::send(self.request(Method::GET, &format!("api/admin/artifacts/{id}"))?).await
    }

    /// `GET /api/admin/artifacts/{artifact_id}/content`: its bytes, withheld or not.
    pub async fn review_artifact_content(&self, id: &ArtifactId) -> Result<Vec<u8>, ClientError> {
        self.download(&format!("/api/admin/artifacts/{id}/content"))
            .await
    }
}
