//! What the classifier's tests share: the model and ONNX Runtime from the
//! test virtualenv, the images they classify (made here, never shipped), and
//! the Python `nudenet` package run as the reference.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};

use image::{ImageFormat, Rgb, RgbImage, Rgba, RgbaImage};
use tessera_moderation::{Assets, Classifier};

/// The virtualenv `scripts/test` makes: `TESSERA_TEST_PYTHON` is its
/// interpreter.
pub fn python() -> PathBuf {
    match std::env::var_os("TESSERA_TEST_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => panic!(
            "TESSERA_TEST_PYTHON is not set: run these tests through scripts/test, which installs \
             nudenet and onnxruntime into target/engines-venv"
        ),
    }
}

pub fn assets() -> Assets {
    let python = python();
    // <venv>/bin/python: not canonicalised, which would leave the venv.
    let venv = python
        .parent()
        .and_then(Path::parent)
        .expect("TESSERA_TEST_PYTHON is <venv>/bin/python");
    Assets::in_virtualenv(venv).unwrap_or_else(|e| panic!("{e}"))
}

pub fn classifier() -> Arc<Classifier> {
    static CLASSIFIER: OnceLock<Arc<Classifier>> = OnceLock::new();
    CLASSIFIER
        .get_or_init(|| {
            let assets = assets();
            Arc::new(
                Classifier::load(&assets.model, &assets.runtime).unwrap_or_else(|e| panic!("{e}")),
            )
        })
        .clone()
}

fn encode(image: impl Into<image::DynamicImage>, format: ImageFormat) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image.into().write_to(&mut out, format).unwrap();
    out.into_inner()
}

/// A small deterministic generator, so every run sees the same noise.
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u8 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 56) as u8
    }
}

/// Benign test images, as (name, PNG or JPEG bytes). Their sizes take every
/// path of the resize: smaller than the input (upscaled), exactly the input,
/// exactly twice it, and in between, wide and tall.
pub fn benign_images() -> Vec<(&'static str, Vec<u8>)> {
    let gradient = RgbImage::from_fn(500, 375, |x, y| {
        Rgb([(x / 2) as u8, (y * 255 / 375) as u8, 128])
    });
    let shape = RgbImage::from_fn(640, 480, |x, y| {
        let (dx, dy) = (x as i32 - 320, y as i32 - 240);
        if dx * dx + dy * dy < 150 * 150 {
            Rgb([220, 60, 40])
        } else if (x / 40 + y / 40) % 2 == 0 {
            Rgb([30, 90, 160])
        } else {
            Rgb([240, 240, 230])
        }
    });
    // Photo-like: noise, smoothed so it has texture at several scales.
    let mut rng = Lcg(7);
    let raw: Vec<u8> = (0..300 * 420 * 3).map(|_| rng.next()).collect();
    let noise = RgbImage::from_fn(300, 420, |x, y| {
        let mut px = [0u32; 3];
        for (ox, oy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
            let (sx, sy) = ((x + ox).min(299), (y + oy).min(419));
            for c in 0..3 {
                px[c] += u32::from(raw[((sy * 300 + sx) * 3 + c as u32) as usize]);
            }
        }
        let shade = (x + y) * 80 / 720;
        Rgb(px.map(|v| (v / 4 * 3 / 4 + shade) as u8))
    });
    let square = RgbImage::from_fn(320, 320, |x, y| {
        Rgb([(x * y % 256) as u8, 100, (x ^ y) as u8])
    });
    let translucent = RgbaImage::from_fn(1000, 700, |x, y| {
        Rgba([(x % 256) as u8, (y % 256) as u8, 90, (x % 200) as u8])
    });
    vec![
        ("gradient.png", encode(gradient, ImageFormat::Png)),
        ("shape.png", encode(shape, ImageFormat::Png)),
        ("noise.png", encode(noise.clone(), ImageFormat::Png)),
        ("noise.jpg", encode(noise, ImageFormat::Jpeg)),
        ("square.png", encode(square, ImageFormat::Png)),
        ("translucent.png", encode(translucent, ImageFormat::Png)),
    ]
}

const REFERENCE: &str = r#"
import json, sys
import numpy as np
from nudenet import NudeDetector
from nudenet import nudenet as n
detector = NudeDetector()
out = {}
for path in sys.argv[1:]:
    data = open(path, "rb").read()
    blob = n._read_image(data, 320)[0]
    blob.astype(np.float32).tofile(path + ".blob")
    out[path] = detector.detect(data)
    raw = detector.onnx_session.run(None, {detector.input_name: blob})[0]
    raw.astype(np.float32).tofile(path + ".out")
print(json.dumps(out))
"#;

/// One of the Python package's detections.
#[derive(Debug, serde::Deserialize)]
pub struct PyDetection {
    pub class: String,
    pub score: f32,
    #[serde(rename = "box")]
    pub bbox: [i64; 4],
}

/// What the Python package makes of each image: its input tensor and its
/// detections.
pub struct Reference {
    pub tensor: Vec<f32>,
    /// The model's raw output on that tensor.
    pub output: Vec<f32>,
    pub detections: Vec<PyDetection>,
}

pub fn python_reference(images: &[(&str, Vec<u8>)]) -> Vec<Reference> {
    let dir = tempfile::tempdir().unwrap();
    let paths: Vec<PathBuf> = images
        .iter()
        .map(|(name, bytes)| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .collect();
    let output = Command::new(python())
        .arg("-c")
        .arg(REFERENCE)
        .args(&paths)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "the nudenet package failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut all: std::collections::HashMap<String, Vec<PyDetection>> =
        serde_json::from_slice(&output.stdout).unwrap();
    paths
        .iter()
        .map(|path| {
            let floats = |ext: &str| -> Vec<f32> {
                let raw = std::fs::read(format!("{}.{ext}", path.display())).unwrap();
                raw.chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect()
            };
            let detections = all.remove(&path.display().to_string()).unwrap();
            Reference {
                tensor: floats("blob"),
                output: floats("out"),
                detections,
            }
        })
        .collect()
}

const DECODE: &str = r#"
import json, sys
import numpy as np
from nudenet import nudenet as n
path, anchors, width, height = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = np.fromfile(path, dtype=np.float32).reshape(1, 22, anchors)
side = max(width, height)
print(json.dumps(n._postprocess([out], side - width, side - height, side / width, side / height, width, height, 320, 320)))
"#;

/// The Python package's `_postprocess` of a raw model output.
pub fn python_decode(output: &[f32], anchors: usize, width: u32, height: u32) -> Vec<PyDetection> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("output.f32");
    let bytes: Vec<u8> = output.iter().flat_map(|v| v.to_le_bytes()).collect();
    std::fs::write(&path, bytes).unwrap();
    let output = Command::new(python())
        .arg("-c")
        .arg(DECODE)
        .arg(&path)
        .args([anchors, width as usize, height as usize].map(|v| v.to_string()))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "nudenet's _postprocess failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// A made-up model output: clusters of overlapping candidates with random
/// scores and labels, some over the image's edges, some under the cuts.
pub fn synthetic_output(anchors: usize, seed: u64) -> Vec<f32> {
    let mut rng = Lcg(seed);
    let mut unit = move || f32::from(rng.next()) / 255.0;
    let mut out = vec![0f32; 22 * anchors];
    for i in 0..anchors {
        let cluster = (i % 7) as f32;
        out[i] = 20.0 + cluster * 45.0 + unit() * 20.0;
        out[anchors + i] = 10.0 + cluster * 40.0 + unit() * 25.0;
        out[2 * anchors + i] = 10.0 + unit() * 120.0;
        out[3 * anchors + i] = 10.0 + unit() * 120.0;
        for k in 0..18 {
            out[(4 + k) * anchors + i] = unit() * unit() * 0.8;
        }
    }
    out
}
