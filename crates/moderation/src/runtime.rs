//! Loading ONNX Runtime's shared library, checked before `ort` sees it.
//!
//! `ort` (with `load-dynamic`) opens the library the first time it is used
//! and panics when that fails or the library is too old. A worker must not
//! die of a wrong path in its configuration, so the library is opened here
//! first, its entry point and version checked, and only then handed to
//! `ort`. A process holds one ONNX Runtime: a second, different path is
//! refused rather than silently ignored.

use std::ffi::{c_char, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::LoadError;

/// The path `ort` was given, once it was.
static LOADED: OnceLock<PathBuf> = OnceLock::new();
static LOADING: Mutex<()> = Mutex::new(());

/// Opens ONNX Runtime's library at `path` for `ort`, or says why it cannot.
pub(crate) fn load(path: &Path) -> Result<(), LoadError> {
    let _guard = LOADING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = path.canonicalize().map_err(|e| LoadError::RuntimeMissing {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    if let Some(loaded) = LOADED.get() {
        if *loaded == path {
            return Ok(());
        }
        return Err(LoadError::RuntimeConflict {
            loaded: loaded.clone(),
            asked: path,
        });
    }
    check(&path)?;
    let committed = ort::init_from(path.to_string_lossy())
        .with_name("tessera-moderation")
        .commit()
        .map_err(|e| LoadError::RuntimeUnusable {
            path: path.clone(),
            reason: e.to_string(),
        })?;
    let _ = committed;
    let _ = LOADED.set(path);
    Ok(())
}

/// `OrtApiBase`, the one structure the library exports.
#[repr(C)]
struct ApiBase {
    get_api: unsafe extern "C" fn(u32) -> *const std::ffi::c_void,
    get_version_string: unsafe extern "C" fn() -> *const c_char,
}

fn check(path: &Path) -> Result<(), LoadError> {
    let unusable = |reason: String| LoadError::RuntimeUnusable {
        path: path.to_owned(),
        reason,
    };
    // SAFETY: loading a library runs its initialisers; the path names ONNX
    // Runtime's library by configuration, which is what `ort` would load.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| unusable(e.to_string()))?;
    // SAFETY: `OrtGetApiBase` takes nothing and returns a pointer to a static
    // `OrtApiBase`, whose two functions are called as ONNX Runtime's C API
    // documents them.
    unsafe {
        let get_base = library
            .get::<unsafe extern "C" fn() -> *const ApiBase>(b"OrtGetApiBase\0")
            .map_err(|_| unusable("it has no OrtGetApiBase: not ONNX Runtime".to_owned()))?;
        let base = get_base();
        if base.is_null() {
            return Err(unusable("OrtGetApiBase returned nothing".to_owned()));
        }
        let version = CStr::from_ptr(((*base).get_version_string)())
            .to_string_lossy()
            .into_owned();
        let minor = version
            .split('.')
            .nth(1)
            .and_then(|m| m.parse::<u32>().ok())
            .unwrap_or(0);
        if minor < ort::MINOR_VERSION || ((*base).get_api)(ort::MINOR_VERSION).is_null() {
            return Err(LoadError::RuntimeTooOld {
                path: path.to_owned(),
                found: version,
                needed: format!("1.{}", ort::MINOR_VERSION),
            });
        }
    }
    // Kept open: unloading ONNX Runtime is not supported, and `ort` opens
    // the same library again.
    std::mem::forget(library);
    Ok(())
}
