//! Where the bytes of artifacts and inputs live: an `object_store`.
//!
//! A local folder by default, any S3-compatible store by configuration. Keys
//! are built only from ids Tessera generated and formats it checked
//! (`jobs/{job_id}-{attempt}-{position}.{format}`, `inputs/{input_id}`), never
//! from names a worker or a frontend chose. An object is written before the
//! row that points at it is committed, so a recorded artifact always has its
//! bytes; a crash in between leaves at most an orphan object, never a dangling
//! row. Objects of a result refused after they were written are deleted at
//! once, and `orphans` sweeps the ones a crash left.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{ObjectStore, PutPayload};

use crate::config::ArtifactsConfig;

#[derive(Clone)]
pub struct Blobs {
    store: Arc<dyn ObjectStore>,
    prefix: Path,
}

impl Blobs {
    pub fn open(config: &ArtifactsConfig) -> anyhow::Result<Self> {
        if config.location.contains("://") {
            let url = url::Url::parse(&config.location)
                .map_err(|e| anyhow::anyhow!("artifacts.location: {e}"))?;
            let (store, prefix) = object_store::parse_url_opts(&url, config.options.iter())
                .map_err(|e| anyhow::anyhow!("artifacts.location {url}: {e}"))?;
            Ok(Self {
                store: Arc::from(store),
                prefix,
            })
        } else {
            std::fs::create_dir_all(&config.location).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the artifacts folder {}: {e}",
                    config.location
                )
            })?;
            let store = LocalFileSystem::new_with_prefix(&config.location)
                .map_err(|e| anyhow::anyhow!("artifacts folder {}: {e}", config.location))?;
            Ok(Self {
                store: Arc::new(store),
                prefix: Path::default(),
            })
        }
    }

    fn path(&self, key: &str) -> Path {
        let mut path = self.prefix.clone();
        for part in key.split('/') {
            path = path.child(part);
        }
        path
    }

    pub async fn put(&self, key: &str, bytes: Bytes) -> object_store::Result<()> {
        self.store
            .put(&self.path(key), PutPayload::from_bytes(bytes))
            .await
            .map(|_| ())
    }

    pub async fn get(&self, key: &str) -> object_store::Result<Bytes> {
        self.store.get(&self.path(key)).await?.bytes().await
    }

    /// Deletes an object; one already gone is not an error.
    pub async fn delete(&self, key: &str) -> object_store::Result<()> {
        match self.store.delete(&self.path(key)).await {
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            other => other,
        }
    }

    /// Deletes objects as best it can (the sweep gets what is left), logging
    /// what it could not.
    pub async fn delete_all(&self, keys: &[String]) {
        for key in keys {
            if let Err(e) = self.delete(key).await {
                tracing::warn!(%key, error = %e, "could not delete an object; the orphan sweep will");
            }
        }
    }

    /// The objects under a folder of keys (`jobs`, `inputs`), each as its
    /// key and when it was last written (Unix milliseconds).
    pub fn list(&self, folder: &str) -> BoxStream<'_, object_store::Result<(String, i64)>> {
        let folder = self.path(folder);
        let prefix_parts = self.prefix.parts().count();
        self.store
            .list(Some(&folder))
            .map(move |meta| {
                meta.map(|meta| {
                    let key = meta
                        .location
                        .parts()
                        .skip(prefix_parts)
                        .map(|part| part.as_ref().to_owned())
                        .collect::<Vec<_>>()
                        .join("/");
                    (key, meta.last_modified.timestamp_millis())
                })
            })
            .boxed()
    }
}

/// The key of an artifact's bytes. Flat under `jobs/`: a folder per job (or
/// per attempt) would cost a local store one or two `mkdir`s per result, which
/// measured as a fifth of the whole lifecycle's CPU; job ids are ULIDs, so keys
/// still list in time order.
pub fn artifact_key(
    job: &tessera_core::JobId,
    attempt: i32,
    position: usize,
    format: &str,
) -> String {
    format!("jobs/{job}-{attempt}-{position}.{format}")
}

/// The key of an input's bytes.
pub fn input_key(input: &tessera_core::InputId) -> String {
    format!("inputs/{input}")
}
