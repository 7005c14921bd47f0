//! Finding the model and ONNX Runtime's library in a Python virtualenv.
//!
//! Both files ship in Python wheels (`nudenet` carries `320n.onnx`,
//! `onnxruntime` carries `libonnxruntime.so.<version>`), so the simplest
//! install is `pip install nudenet onnxruntime` into a virtualenv, and the
//! simplest configuration names that virtualenv. The tests find them in the
//! virtualenv `scripts/test` makes.

use std::path::{Path, PathBuf};

/// Where the model and ONNX Runtime's library are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assets {
    /// NudeNet's `320n.onnx`.
    pub model: PathBuf,
    /// ONNX Runtime's shared library.
    pub runtime: PathBuf,
}

/// What a virtualenv lacks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is not in the virtualenv {venv} (looked in {looked}); install it with `{venv}/bin/pip install nudenet onnxruntime`")]
pub struct NotFound {
    pub venv: PathBuf,
    pub what: &'static str,
    pub looked: String,
}

impl Assets {
    /// Finds `nudenet/320n.onnx` and `onnxruntime/capi/libonnxruntime.so*`
    /// in the virtualenv at `venv` (its `lib/python3.*/site-packages`).
    pub fn in_virtualenv(venv: &Path) -> Result<Assets, NotFound> {
        let not_found = |what: &'static str| NotFound {
            venv: venv.to_owned(),
            what,
            looked: format!("{}/lib/python3.*/site-packages", venv.display()),
        };
        let mut site_packages: Vec<PathBuf> = std::fs::read_dir(venv.join("lib"))
            .map_err(|_| not_found("nudenet/320n.onnx"))?
            .filter_map(|entry| entry.ok())
            .filter(|entry| entry.file_name().to_string_lossy().starts_with("python3"))
            .map(|entry| entry.path().join("site-packages"))
            .filter(|path| path.is_dir())
            .collect();
        site_packages.sort();
        let model = site_packages
            .iter()
            .map(|dir| dir.join("nudenet").join("320n.onnx"))
            .find(|path| path.is_file())
            .ok_or_else(|| not_found("nudenet/320n.onnx"))?;
        let runtime = site_packages
            .iter()
            .find_map(|dir| runtime_in(&dir.join("onnxruntime").join("capi")))
            .ok_or_else(|| not_found("onnxruntime/capi/libonnxruntime.so*"))?;
        Ok(Assets { model, runtime })
    }
}

/// `libonnxruntime.so`, or the versioned name the wheel ships
/// (`libonnxruntime.so.1.31.1`), in `dir`.
fn runtime_in(dir: &Path) -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok())
        .filter(|entry| {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            name == "libonnxruntime.so" || name.starts_with("libonnxruntime.so.")
        })
        .map(|entry| entry.path())
        .collect();
    found.sort();
    found.pop()
}
