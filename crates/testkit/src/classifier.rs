//! Output classification in tests: NudeNet's detector from the test
//! virtualenv, and a ComfyUI whose model paints a picture the detector
//! really scores, so the withholding path is driven by configured
//! thresholds, never by an explicit image.
//!
//! The picture is a drawn, blurred skin-toned oval with a face's features
//! ([`oval_face`]). NudeNet's 320n scores it `BUTTOCKS_EXPOSED` at about
//! 0.37: a false positive under the default threshold (0.5), so it is
//! delivered with its label stored; with the threshold configured at 0.3
//! ([`WITHHOLDING_THRESHOLD`]) the same label withholds it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tessera_core::Capability;
use tessera_moderation::Assets;
use tessera_worker::config::{EngineConfig, ModerationConfig};
use tessera_worker::engine::comfyui::ComfyUiConfig;

use crate::standins::comfyui::{ComfyUi, Painter, Settings};

/// The label [`oval_face`] is scored under, and a threshold under its
/// score (about 0.37) that withholds it.
pub const LABEL: &str = "BUTTOCKS_EXPOSED";
pub const WITHHOLDING_THRESHOLD: f32 = 0.3;

/// The worker's example ComfyUI workflow, the template the painting
/// ComfyUI's model runs.
const TEMPLATE: &str = include_str!("../../worker/workflows/image-example.json");

/// The virtualenv `scripts/test` makes: `TESSERA_TEST_PYTHON` is its
/// interpreter (as `crates/moderation/tests` find it).
pub fn assets() -> Assets {
    let python = match std::env::var_os("TESSERA_TEST_PYTHON") {
        Some(python) => PathBuf::from(python),
        None => panic!(
            "TESSERA_TEST_PYTHON is not set: run these tests through scripts/test, which installs \
             nudenet and onnxruntime into target/engines-venv"
        ),
    };
    let venv = python
        .parent()
        .and_then(Path::parent)
        .expect("TESSERA_TEST_PYTHON is <venv>/bin/python");
    Assets::in_virtualenv(venv).unwrap_or_else(|e| panic!("{e}"))
}

pub fn classifier() -> ModerationConfig {
    let assets = assets();
    ModerationConfig {
        classifier_model: Some(assets.model),
        onnxruntime_lib: Some(assets.runtime),
    }
}

/// A drawn face: a skin-toned oval with hair, eyes, brows and a mouth on
/// grey, box-blurred. RGB rows.
pub fn oval_face(w: u32, h: u32) -> Vec<u8> {
    let s = w.min(h) as f32;
    let (cx, cy) = (w as f32 / 2.0, h as f32 / 2.0);
    let mut img = vec![[80u8, 80, 80]; (w * h) as usize];
    let ellipse = |img: &mut Vec<[u8; 3]>,
                   ex: f32,
                   ey: f32,
                   ax: f32,
                   ay: f32,
                   colour: [u8; 3],
                   upper: bool| {
        for y in 0..h {
            for x in 0..w {
                let (dx, dy) = ((x as f32 - ex) / ax, (y as f32 - ey) / ay);
                if dx * dx + dy * dy <= 1.0 && (!upper || y as f32 <= ey) {
                    img[(y * w + x) as usize] = colour;
                }
            }
        }
    };
    let hair = [160, 80, 30];
    ellipse(&mut img, cx, cy - s / 6.0, s / 4.0, s / 5.0, hair, true);
    ellipse(&mut img, cx, cy, s / 5.0, s / 4.0, [210, 160, 120], false);
    for side in [-1.0, 1.0] {
        let ex = cx + side * s / 11.0;
        ellipse(
            &mut img,
            ex,
            cy - s / 20.0,
            s / 14.0,
            s / 28.0,
            [255, 255, 255],
            false,
        );
        ellipse(
            &mut img,
            ex,
            cy - s / 20.0,
            s / 28.0,
            s / 28.0,
            [20, 30, 40],
            false,
        );
        let brow = cy - s / 20.0 - s / 14.0;
        for y in 0..h {
            for x in 0..w {
                if (y as f32 - brow).abs() <= 1.0 && (x as f32 - ex).abs() <= s / 14.0 {
                    img[(y * w + x) as usize] = hair;
                }
            }
        }
    }
    ellipse(
        &mut img,
        cx,
        cy + s / 8.0,
        s / 14.0,
        s / 40.0,
        [190, 80, 80],
        false,
    );
    // A 7×7 box blur, edges clamped.
    let mut out = Vec::with_capacity(img.len() * 3);
    for y in 0..h as i64 {
        for x in 0..w as i64 {
            let mut sum = [0u32; 3];
            for dy in -3..=3i64 {
                for dx in -3..=3i64 {
                    let (sx, sy) = (
                        (x + dx).clamp(0, w as i64 - 1),
                        (y + dy).clamp(0, h as i64 - 1),
                    );
                    let p = img[(sy * w as i64 + sx) as usize];
                    for c in 0..3 {
                        sum[c] += u32::from(p[c]);
                    }
                }
            }
            out.extend(sum.map(|v| ((v + 24) / 49) as u8));
        }
    }
    out
}

/// The sizes [`comfyui_painting_faces`] paints: what the tests ask for
/// (640×640) and the image default a chat command gets (1024×1024).
pub const PAINTED_SIZES: [(u32, u32); 2] = [(640, 640), (1024, 1024)];

/// A ComfyUI whose model paints the oval face at each of
/// [`PAINTED_SIZES`] (drawn once, before it starts: the stand-in shares the
/// test's runtime, which must not stall while it draws).
pub async fn comfyui_painting_faces() -> ComfyUi {
    let faces: Arc<HashMap<(u32, u32), Vec<u8>>> = Arc::new(
        PAINTED_SIZES
            .iter()
            .map(|&(w, h)| ((w, h), oval_face(w, h)))
            .collect(),
    );
    ComfyUi::start_with(Settings {
        painter: Some(Painter(Arc::new(move |w, h, _frame| {
            match faces.get(&(w, h)) {
                Some(face) => face.clone(),
                None => panic!("the painting ComfyUI paints {PAINTED_SIZES:?}, not {w}x{h}"),
            }
        }))),
        ..Settings::default()
    })
    .await
}

/// A worker whose images come from a [`comfyui_painting_faces`] ComfyUI
/// (beside any `other` engines), classified by the real detector; the
/// ComfyUI and its template folder live as long as this does.
pub struct PaintingWorker {
    pub worker: tessera_worker::WorkerHandle,
    pub comfy: ComfyUi,
    _templates: tempfile::TempDir,
}

impl PaintingWorker {
    /// Starts it as `id` on `app`, whose scheduler should be [`patient`].
    pub async fn start(app: &crate::TestApp, id: &str, other: Vec<EngineConfig>) -> Self {
        let comfy = comfyui_painting_faces().await;
        let templates = tempfile::tempdir().expect("a template folder");
        let mut engines = vec![comfyui(&comfy.url(), templates.path())];
        engines.extend(other);
        let worker = app.worker_classifying(id, engines, classifier()).await;
        PaintingWorker {
            worker,
            comfy,
            _templates: templates,
        }
    }

    /// Stops the ComfyUI (the worker stops when dropped).
    pub async fn shutdown(self) {
        self.comfy.shutdown().await;
    }
}

/// Classification takes every core for a moment: a scheduler that loses a
/// worker for a few missed heartbeats would lose a classifying one.
pub fn patient(config: &mut tessera_scheduler::config::SchedulerConfig) {
    config.workers.missed_heartbeats = 25;
}

/// Makes the scheduler withhold what [`oval_face`] is scored as.
pub fn withholding(config: &mut tessera_scheduler::config::SchedulerConfig) {
    config
        .moderation
        .outputs
        .thresholds
        .insert(LABEL.into(), WITHHOLDING_THRESHOLD);
}

/// A ComfyUI engine for `sdxl-1.0` at `url`, its template in `dir`.
pub fn comfyui(url: &str, dir: &Path) -> EngineConfig {
    std::fs::write(dir.join("sdxl-1.0.json"), TEMPLATE).unwrap();
    EngineConfig::Comfyui(ComfyUiConfig {
        memory_mib: None,
        model_memory_mib: Default::default(),
        url: url.to_owned(),
        capability: Capability::Image,
        models: vec!["sdxl-1.0".into()],
        workflows_dir: dir.to_owned(),
        websocket: true,
        poll_interval_ms: 20,
        max_output_bytes: 64 * 1024 * 1024,
        keep_metadata: false,
    })
}
