//! The files jobs make and take: the artifacts a completed job recorded (their
//! bytes are in the object store) and the inputs frontends uploaded.

use async_trait::async_trait;

use tessera_api::internal::ArtifactKind;
use tessera_core::{ArtifactId, InputId, JobId, Millis, Platform};

use super::rows::corrupt;
use super::StoreError;

/// An output file already written to the object store, to record.
#[derive(Clone, Debug, PartialEq)]
pub struct NewArtifact {
    pub id: ArtifactId,
    pub kind: ArtifactKind,
    pub storage_key: String,
    pub format: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub file_size: u64,
    pub position: u32,
    /// What the worker's classifier found, as the JSON the worker sent
    /// (`tessera_api::internal::Classification`); `None` when none came.
    pub classification: Option<String>,
    /// Kept for review only: no frontend key may fetch it.
    pub withheld: bool,
    /// What the text engine counted, as the JSON the worker sent
    /// (`tessera_api::internal::TextUsage`); `None` when none came.
    pub usage: Option<String>,
}

/// An artifact as stored, with the frontend and bot of its job (who may read it).
#[derive(Clone, Debug, PartialEq)]
pub struct ArtifactRecord {
    pub id: ArtifactId,
    pub job_id: JobId,
    pub frontend: Platform,
    pub bot_id: String,
    pub kind: ArtifactKind,
    pub storage_key: String,
    pub format: String,
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub file_size: u64,
    pub position: u32,
    pub created_at: Millis,
    /// The classification JSON, as recorded.
    pub classification: Option<String>,
    /// Kept for review only.
    pub withheld: bool,
    /// What the text engine counted (`TextUsage` JSON), if it said.
    pub usage: Option<String>,
}

/// An uploaded input as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputRecord {
    pub id: InputId,
    pub frontend: Platform,
    pub bot_id: tessera_core::BotId,
    pub content_type: String,
    pub size: u64,
    pub storage_key: String,
    pub created_at: Millis,
}

/// Artifacts and inputs.
#[async_trait]
pub trait Files {
    /// The artifacts of these jobs, by job and position.
    async fn artifacts_of(&self, jobs: &[JobId]) -> Result<Vec<ArtifactRecord>, StoreError>;

    async fn get_artifact(&self, id: &ArtifactId) -> Result<Option<ArtifactRecord>, StoreError>;

    async fn insert_input(&self, input: &InputRecord) -> Result<(), StoreError>;

    async fn get_input(&self, id: &InputId) -> Result<Option<InputRecord>, StoreError>;

    /// Of the objects of these jobs' artifacts and of these inputs, the
    /// storage keys a row names: what the orphan sweep must spare.
    async fn named_keys(
        &self,
        jobs: &[JobId],
        inputs: &[InputId],
    ) -> Result<std::collections::HashSet<String>, StoreError>;
}

pub(crate) const ARTIFACT_COLUMNS: &str = "a.id, a.job_id, j.frontend, j.bot_id, a.type, \
    a.storage_key, a.format, a.width, a.height, a.file_size, a.position, a.created_at, \
    a.classification, a.withheld, a.usage";

#[derive(sqlx::FromRow)]
pub(crate) struct ArtifactRow {
    id: String,
    job_id: String,
    frontend: String,
    bot_id: String,
    #[sqlx(rename = "type")]
    kind: String,
    storage_key: String,
    format: String,
    width: Option<i32>,
    height: Option<i32>,
    file_size: i64,
    position: i32,
    created_at: i64,
    classification: Option<String>,
    withheld: bool,
    usage: Option<String>,
}

impl TryFrom<ArtifactRow> for ArtifactRecord {
    type Error = StoreError;

    fn try_from(r: ArtifactRow) -> Result<Self, StoreError> {
        Ok(ArtifactRecord {
            id: r.id.parse().map_err(|_| corrupt("artifact id", &r.id))?,
            job_id: r.job_id.parse().map_err(|_| corrupt("job id", &r.job_id))?,
            frontend: r
                .frontend
                .parse::<Platform>()
                .map_err(|_| corrupt("frontend", &r.frontend))?,
            bot_id: r.bot_id,
            kind: ArtifactKind::parse(&r.kind).ok_or_else(|| corrupt("artifact type", &r.kind))?,
            storage_key: r.storage_key,
            format: r.format,
            width: r.width.and_then(|w| u32::try_from(w).ok()),
            height: r.height.and_then(|h| u32::try_from(h).ok()),
            file_size: u64::try_from(r.file_size).unwrap_or_default(),
            position: u32::try_from(r.position).unwrap_or_default(),
            created_at: r.created_at,
            classification: r.classification,
            withheld: r.withheld,
            usage: r.usage,
        })
    }
}

/// Implements [`Files`] for a backend with `writer()` and `reader()` pools.
macro_rules! impl_files {
    ($store:ty, $db:ty) => {
        const _: () = {
            use tessera_core::{ArtifactId, InputId, JobId};

            use $crate::store::files::{ArtifactRow, ARTIFACT_COLUMNS};
            use $crate::store::{ArtifactRecord, Files, InputRecord, StoreError};

            #[async_trait::async_trait]
            impl Files for $store {
                async fn artifacts_of(
                    &self,
                    jobs: &[JobId],
                ) -> Result<Vec<ArtifactRecord>, StoreError> {
                    if jobs.is_empty() {
                        return Ok(Vec::new());
                    }
                    let mut qb = sqlx::QueryBuilder::<$db>::new(format!(
                        "SELECT {} FROM artifacts a JOIN jobs j ON j.id = a.job_id WHERE a.job_id IN (",
                        ARTIFACT_COLUMNS
                    ));
                    let mut list = qb.separated(", ");
                    for job in jobs {
                        list.push_bind(job.as_str());
                    }
                    qb.push(") ORDER BY a.job_id, a.position");
                    let rows: Vec<ArtifactRow> =
                        qb.build_query_as().fetch_all(self.reader()).await?;
                    rows.into_iter().map(TryInto::try_into).collect()
                }

                async fn get_artifact(
                    &self,
                    id: &ArtifactId,
                ) -> Result<Option<ArtifactRecord>, StoreError> {
                    let row: Option<ArtifactRow> = sqlx::query_as(&format!(
                        "SELECT {} FROM artifacts a JOIN jobs j ON j.id = a.job_id WHERE a.id = $1",
                        ARTIFACT_COLUMNS
                    ))
                    .bind(id.as_str())
                    .fetch_optional(self.reader())
                    .await?;
                    row.map(TryInto::try_into).transpose()
                }

                async fn insert_input(
                    &self,
                    input: &InputRecord,
                ) -> Result<(), StoreError> {
                    sqlx::query(
                        "INSERT INTO inputs (id, frontend, bot_id, content_type, size, storage_key, \
                         created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    )
                    .bind(input.id.as_str())
                    .bind(input.frontend.as_str())
                    .bind(input.bot_id.as_str())
                    .bind(&input.content_type)
                    .bind(i64::try_from(input.size).unwrap_or(i64::MAX))
                    .bind(&input.storage_key)
                    .bind(input.created_at)
                    .execute(self.writer())
                    .await?;
                    Ok(())
                }

                async fn named_keys(
                    &self,
                    jobs: &[JobId],
                    inputs: &[InputId],
                ) -> Result<std::collections::HashSet<String>, StoreError> {
                    let mut named = std::collections::HashSet::new();
                    if !jobs.is_empty() {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "SELECT storage_key FROM artifacts WHERE job_id IN (",
                        );
                        let mut list = qb.separated(", ");
                        for job in jobs {
                            list.push_bind(job.as_str());
                        }
                        qb.push(")");
                        let rows: Vec<(String,)> =
                            qb.build_query_as().fetch_all(self.reader()).await?;
                        named.extend(rows.into_iter().map(|(key,)| key));
                    }
                    if !inputs.is_empty() {
                        let mut qb = sqlx::QueryBuilder::<$db>::new(
                            "SELECT storage_key FROM inputs WHERE id IN (",
                        );
                        let mut list = qb.separated(", ");
                        for input in inputs {
                            list.push_bind(input.as_str());
                        }
                        qb.push(")");
                        let rows: Vec<(String,)> =
                            qb.build_query_as().fetch_all(self.reader()).await?;
                        named.extend(rows.into_iter().map(|(key,)| key));
                    }
                    Ok(named)
                }

                async fn get_input(
                    &self,
                    id: &InputId,
                ) -> Result<Option<InputRecord>, StoreError> {
                    let row: Option<(String, String, String, String, i64, String, i64)> =
                        sqlx::query_as(
                            "SELECT id, frontend, bot_id, content_type, size, storage_key, created_at \
                             FROM inputs WHERE id = $1",
                        )
                        .bind(id.as_str())
                        .fetch_optional(self.reader())
                        .await?;
                    row.map(|(id, frontend, bot_id, content_type, size, storage_key, created_at)| {
                        Ok(InputRecord {
                            id: id.parse().map_err(|_| {
                                StoreError::Corrupt(format!("input id {id:?}"))
                            })?,
                            frontend: frontend.parse().map_err(|_| {
                                StoreError::Corrupt(format!("frontend {frontend:?}"))
                            })?,
                            bot_id: bot_id.parse().map_err(|_| {
                                StoreError::Corrupt(format!("bot_id {bot_id:?}"))
                            })?,
                            content_type,
                            size: u64::try_from(size).unwrap_or_default(),
                            storage_key,
                            created_at,
                        })
                    })
                    .transpose()
                }
            }
        };
    };
}

pub(crate) use impl_files;
