//! Output classification: NudeNet's detector run on a CPU, so the control
//! plane can decide what an output may be shown to before anyone fetches it.
//!
//! [`Classifier::load`] opens the model (`320n.onnx`, from the `nudenet`
//! Python package) with ONNX Runtime's shared library (from the
//! `onnxruntime` Python package), both named by path: nothing is downloaded.
//! [`Classifier::classify`] decodes an image and returns NudeNet's
//! detections, the same as the Python package returns for the same bytes.
//! Thresholds, and what a label means for a job, are the caller's.
//!
//! The classifier is `Send + Sync`: load it once and share it. One image is
//! classified at a time (ONNX Runtime spreads each over the cores);
//! [`Classifier::classify`] runs on Tokio's blocking pool so an async caller
//! is never held up, and [`Classifier::classify_blocking`] is the same work
//! for callers already off the runtime.

mod labels;
mod locate;
mod postprocess;
mod preprocess;
mod runtime;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ort::session::Session;
use ort::value::Tensor;

pub use labels::{Label, UnknownLabel};
pub use locate::{Assets, NotFound};
pub use postprocess::{BoundingBox, Detection};
pub use preprocess::{MAX_PIXELS, MAX_SIDE};

use preprocess::INPUT_SIDE;

/// Why the classifier could not be loaded. Each names the file at fault.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the NudeNet model {path} cannot be read: {reason} (it is nudenet/320n.onnx in the nudenet Python package)")]
    ModelMissing { path: PathBuf, reason: String },
    #[error("{path} is not a NudeNet detector ONNX Runtime can run: {reason}")]
    Model { path: PathBuf, reason: String },
    #[error("ONNX Runtime's library {path} cannot be read: {reason} (it is onnxruntime/capi/libonnxruntime.so.* in the onnxruntime Python package)")]
    RuntimeMissing { path: PathBuf, reason: String },
    #[error("ONNX Runtime's library {path} cannot be used: {reason}")]
    RuntimeUnusable { path: PathBuf, reason: String },
    #[error("ONNX Runtime {found} at {path} is too old: {needed} or newer is needed")]
    RuntimeTooOld {
        path: PathBuf,
        found: String,
        needed: String,
    },
    #[error(
        "this process already runs ONNX Runtime from {loaded}; it cannot load {asked} as well"
    )]
    RuntimeConflict { loaded: PathBuf, asked: PathBuf },
}

/// Why an image could not be classified.
#[derive(Debug, thiserror::Error)]
pub enum ClassifyError {
    #[error("the image is empty (0 bytes)")]
    Empty,
    #[error("not an image the classifier reads: {0}")]
    NotAnImage(String),
    #[error("the image is {width}×{height} pixels; the classifier takes at most {MAX_SIDE} on a side and {MAX_PIXELS} pixels")]
    TooLarge { width: u32, height: u32 },
    #[error("ONNX Runtime failed: {0}")]
    Inference(String),
    #[error("the classification task stopped: {0}")]
    Stopped(String),
}

/// NudeNet's detector, loaded once; share it behind an [`Arc`].
pub struct Classifier {
    session: Mutex<Session>,
    input: String,
}

impl std::fmt::Debug for Classifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Classifier")
            .field("input", &self.input)
            .finish_non_exhaustive()
    }
}

impl Classifier {
    /// Loads the detector from `model` (NudeNet's `320n.onnx`) with ONNX
    /// Runtime's shared library at `runtime_lib`. A process runs one ONNX
    /// Runtime: loading again with another library is refused.
    pub fn load(model: &Path, runtime_lib: &Path) -> Result<Classifier, LoadError> {
        std::fs::metadata(model)
            .and_then(|meta| {
                if meta.is_file() {
                    Ok(())
                } else {
                    Err(std::io::Error::other("not a file"))
                }
            })
            .map_err(|e| LoadError::ModelMissing {
                path: model.to_owned(),
                reason: e.to_string(),
            })?;
        runtime::load(runtime_lib)?;
        let bad_model = |reason: String| LoadError::Model {
            path: model.to_owned(),
            reason,
        };
        let session = Session::builder()
            .and_then(|builder| builder.commit_from_file(model))
            .map_err(|e| bad_model(e.to_string()))?;
        let [input] = session.inputs.as_slice() else {
            return Err(bad_model(format!(
                "it has {} inputs; NudeNet's detector has one",
                session.inputs.len()
            )));
        };
        let input = input.name.clone();
        if session.outputs.len() != 1 {
            return Err(bad_model(format!(
                "it has {} outputs; NudeNet's detector has one",
                session.outputs.len()
            )));
        }
        let classifier = Classifier {
            session: Mutex::new(session),
            input,
        };
        // One run on a blank image proves the shapes before the first
        // real image depends on them.
        classifier
            .run(&vec![0f32; 3 * INPUT_SIDE * INPUT_SIDE], 1, 1)
            .map_err(|e| bad_model(e.to_string()))?;
        Ok(classifier)
    }

    /// Classifies PNG, JPEG or WebP bytes on Tokio's blocking pool.
    pub async fn classify(
        self: &Arc<Self>,
        image: impl AsRef<[u8]> + Send + 'static,
    ) -> Result<Vec<Detection>, ClassifyError> {
        let classifier = Arc::clone(self);
        tokio::task::spawn_blocking(move || classifier.classify_blocking(image.as_ref()))
            .await
            .map_err(|e| ClassifyError::Stopped(e.to_string()))?
    }

    /// Classifies PNG, JPEG or WebP bytes on this thread: detections, best
    /// first, each scoring above 0.25 (NudeNet's own cut).
    pub fn classify_blocking(&self, image: &[u8]) -> Result<Vec<Detection>, ClassifyError> {
        let prepared = preprocess::prepare(image)?;
        self.run(&prepared.tensor, prepared.width, prepared.height)
    }

    /// The model's raw output for an image (`1 × 22 × anchors`, row-major:
    /// four box rows, then one score row per label in [`Label::ALL`]'s
    /// order) and the number of anchors: for tools and for the tests that
    /// hold it against the Python package's.
    pub fn model_output(&self, image: &[u8]) -> Result<(Vec<f32>, usize), ClassifyError> {
        let prepared = preprocess::prepare(image)?;
        self.infer(&prepared.tensor, |data, anchors| (data.to_vec(), anchors))
    }

    fn run(
        &self,
        tensor: &[f32],
        width: u32,
        height: u32,
    ) -> Result<Vec<Detection>, ClassifyError> {
        self.infer(tensor, |data, anchors| {
            postprocess::decode(data, anchors, width, height)
        })
    }

    /// Runs the model on an input tensor and hands its output to `then`.
    fn infer<T>(
        &self,
        tensor: &[f32],
        then: impl FnOnce(&[f32], usize) -> T,
    ) -> Result<T, ClassifyError> {
        let inference = |e: ort::Error| ClassifyError::Inference(e.to_string());
        let input = Tensor::from_array(([1usize, 3, INPUT_SIDE, INPUT_SIDE], tensor.to_vec()))
            .map_err(inference)?;
        // A panic inside a run leaves the session as ONNX Runtime left it,
        // which the next run can use.
        let mut session = self.session.lock().unwrap_or_else(|p| p.into_inner());
        let outputs = session
            .run(ort::inputs![self.input.as_str() => input])
            .map_err(inference)?;
        let (shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(inference)?;
        let dims: &[i64] = shape;
        let anchors = match dims {
            [1, rows, anchors] if *rows == postprocess::ROWS as i64 && *anchors > 0 => {
                *anchors as usize
            }
            _ => {
                return Err(ClassifyError::Inference(format!(
                    "the model answered a tensor of shape {dims:?}, not 1×{}×N",
                    postprocess::ROWS
                )))
            }
        };
        Ok(then(data, anchors))
    }
}

/// The padded input tensor NudeNet's preprocessing makes of `image`
/// (1×3×320×320, blue, green, red, 0..1): public for the tests that hold it
/// against OpenCV's, and for tools that feed the model themselves.
pub fn input_tensor(image: &[u8]) -> Result<Vec<f32>, ClassifyError> {
    Ok(preprocess::prepare(image)?.tensor)
}

/// Decodes a raw model output (`1 × 22 × anchors`, row-major) for an image of
/// `width × height` pixels as [`Classifier::classify`] does: public for the
/// tests that hold it against the Python package's decoding.
pub fn decode_output(output: &[f32], anchors: usize, width: u32, height: u32) -> Vec<Detection> {
    assert_eq!(
        output.len(),
        postprocess::ROWS * anchors,
        "a 1×22×anchors output"
    );
    postprocess::decode(output, anchors, width, height)
}
