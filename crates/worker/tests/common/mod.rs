//! Helpers shared by the adapter tests: tasks, a progress log, a dead port.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

use tessera_core::params::JobParams;
use tessera_core::JobId;
use tessera_worker::engine::{Input, Progress, Task};

pub fn task(model: &str, params: JobParams, inputs: Vec<Input>) -> Task {
    Task {
        job_id: JobId::generate(),
        model: model.into(),
        params,
        inputs,
    }
}

/// Every value reported to a [`Progress`], in order.
pub struct ProgressLog {
    pub progress: Progress,
    values: Arc<Mutex<Vec<f32>>>,
    _collector: JoinHandle<()>,
}

impl ProgressLog {
    pub fn new() -> Self {
        let (progress, mut rx) = Progress::new();
        let values = Arc::new(Mutex::new(Vec::new()));
        let sink = values.clone();
        let collector = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                if let Some(v) = *rx.borrow_and_update() {
                    sink.lock().unwrap().push(v);
                }
            }
        });
        Self {
            progress,
            values,
            _collector: collector,
        }
    }

    /// Values seen so far (after letting the collector catch up).
    pub async fn values(&self) -> Vec<f32> {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        self.values.lock().unwrap().clone()
    }
}

/// A loopback URL where nothing listens.
pub async fn refused_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A file holding `key`, kept until the returned value is dropped.
pub fn key_file(key: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), format!("{key}\n")).unwrap();
    file
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .unwrap()
}
