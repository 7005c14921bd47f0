//! Loading the classifier with wrong files: each failure names the file and
//! what is wrong with it. Its own test binary, so no other test has loaded
//! ONNX Runtime into the process first (a process holds one).

mod common;

#[test]
fn loading_names_what_is_wrong() {
    use tessera_moderation::{Classifier, LoadError};
    let assets = common::assets();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nothing.onnx");
    let err = Classifier::load(&missing, &assets.runtime).unwrap_err();
    assert!(matches!(err, LoadError::ModelMissing { .. }), "{err:?}");
    assert!(err.to_string().contains("nothing.onnx"), "{err}");

    let err = Classifier::load(&assets.model, &dir.path().join("libonnxruntime.so")).unwrap_err();
    assert!(matches!(err, LoadError::RuntimeMissing { .. }), "{err:?}");

    // A file that is no shared library, before any runtime was loaded.
    let not_a_library = dir.path().join("libnothing.so");
    std::fs::write(&not_a_library, b"not a library").unwrap();
    let err = Classifier::load(&assets.model, &not_a_library).unwrap_err();
    assert!(matches!(err, LoadError::RuntimeUnusable { .. }), "{err:?}");

    // A file that is no model.
    let not_a_model = dir.path().join("garbage.onnx");
    std::fs::write(&not_a_model, b"not a model").unwrap();
    let err = Classifier::load(&not_a_model, &assets.runtime).unwrap_err();
    assert!(matches!(err, LoadError::Model { .. }), "{err:?}");

    // One runtime per process: another library is refused by name.
    let err = Classifier::load(&assets.model, &not_a_library).unwrap_err();
    assert!(matches!(err, LoadError::RuntimeConflict { .. }), "{err:?}");
    Classifier::load(&assets.model, &assets.runtime).expect("the real files load");
}
