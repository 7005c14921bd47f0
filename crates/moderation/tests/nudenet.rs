//! The classifier with the real NudeNet model and ONNX Runtime, held
//! against the Python `nudenet` package on the same images.

mod common;

#[test]
fn preprocessing_matches_opencv() {
    let images = common::benign_images();
    let reference = common::python_reference(&images);
    for ((name, bytes), reference) in images.iter().zip(&reference) {
        let ours = tessera_moderation::input_tensor(bytes).unwrap();
        assert_eq!(ours.len(), reference.tensor.len(), "{name}");
        let differing = ours
            .iter()
            .zip(&reference.tensor)
            .filter(|(a, b)| (*a - *b).abs() > 1e-6)
            .count();
        let worst = ours
            .iter()
            .zip(&reference.tensor)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        eprintln!("{name}: {differing} values differ, at most by {worst}");
        if name.ends_with(".jpg") {
            // libjpeg-turbo (OpenCV's) and zune-jpeg (ours) round their
            // inverse DCTs differently: a few levels in a few pixels.
            assert!(
                worst <= 4.0 / 255.0 + 1e-6,
                "{name}: values differ by up to {worst}"
            );
            assert!(
                differing * 50 < ours.len(),
                "{name}: {differing} values differ"
            );
        } else {
            assert_eq!(
                differing, 0,
                "{name}: {differing} values differ from OpenCV's, at most by {worst}"
            );
        }
    }
}

#[test]
fn detections_match_the_python_package() {
    let images = common::benign_images();
    let reference = common::python_reference(&images);
    let classifier = common::classifier();
    for ((name, bytes), reference) in images.iter().zip(&reference) {
        let ours = classifier.classify_blocking(bytes).unwrap();
        eprintln!("{name}: ours {ours:?}\n  python {:?}", reference.detections);
        assert_eq!(
            ours.len(),
            reference.detections.len(),
            "{name}: {ours:?} against {:?}",
            reference.detections
        );
        for (d, p) in ours.iter().zip(&reference.detections) {
            assert_eq!(d.label.as_str(), p.class, "{name}");
            assert!(
                (d.score - p.score).abs() < 1e-3,
                "{name}: {} against {}",
                d.score,
                p.score
            );
            let b = [d.bbox.x, d.bbox.y, d.bbox.width, d.bbox.height].map(i64::from);
            for (ours, theirs) in b.iter().zip(p.bbox) {
                assert!(
                    (ours - theirs).abs() <= 1,
                    "{name}: box {b:?} against {:?}",
                    p.bbox
                );
            }
        }
    }
}

/// The model run itself: ONNX Runtime through `ort` on our tensor gives what
/// the Python package's session gives on OpenCV's, anchor for anchor.
#[test]
fn model_outputs_match_the_python_package() {
    let images = common::benign_images();
    let reference = common::python_reference(&images);
    let classifier = common::classifier();
    for ((name, bytes), reference) in images.iter().zip(&reference) {
        let (ours, anchors) = classifier.model_output(bytes).unwrap();
        assert_eq!(anchors, 2100, "{name}");
        assert_eq!(ours.len(), reference.output.len(), "{name}");
        let split = 4 * anchors;
        let largest = |range: std::ops::Range<usize>| {
            ours[range.clone()]
                .iter()
                .zip(&reference.output[range])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max)
        };
        let (boxes, scores) = (largest(0..split), largest(split..ours.len()));
        // The best class score of any anchor: what the detections start from.
        let best = ours[split..].iter().copied().fold(0f32, f32::max);
        eprintln!("{name}: best score {best}; largest differences: box {boxes} px, score {scores}");
        // From the same pixels the runs differ only in float rounding; a
        // JPEG decodes a few levels apart in a few pixels (see
        // preprocessing_matches_opencv), which moves boxes by under a pixel.
        let (box_tolerance, score_tolerance) = if name.ends_with(".jpg") {
            (1.0, 1e-4)
        } else {
            (1e-3, 1e-5)
        };
        assert!(
            boxes < box_tolerance,
            "{name}: boxes differ by up to {boxes} px"
        );
        assert!(
            scores < score_tolerance,
            "{name}: scores differ by up to {scores}"
        );
    }
}

#[test]
fn benign_images_find_nothing() {
    let classifier = common::classifier();
    for (name, bytes) in common::benign_images() {
        // No candidate reaches NudeNet's 0.2 (model_outputs_match_the_python_package
        // prints the best: under 0.1), so nothing at all is found.
        let found = classifier.classify_blocking(&bytes).unwrap();
        assert!(found.is_empty(), "{name}: {found:?}");
    }
}

/// Benign images find nothing, so the decoding is held against the Python
/// package's on made-up outputs full of overlapping boxes.
#[test]
fn decoding_matches_the_python_package() {
    for (anchors, width, height, seed) in [
        (2100, 640, 480, 1),
        (300, 320, 320, 2),
        (700, 300, 900, 3),
        (2100, 1000, 700, 4),
    ] {
        let output = common::synthetic_output(anchors, seed);
        let ours = tessera_moderation::decode_output(&output, anchors, width, height);
        let theirs = common::python_decode(&output, anchors, width, height);
        assert!(
            theirs.len() > 3,
            "the made-up output should keep several boxes: {theirs:?}"
        );
        let ours: Vec<_> = ours
            .iter()
            .map(|d| {
                (
                    d.label.as_str().to_owned(),
                    d.score,
                    [d.bbox.x, d.bbox.y, d.bbox.width, d.bbox.height].map(i64::from),
                )
            })
            .collect();
        let theirs: Vec<_> = theirs
            .into_iter()
            .map(|d| (d.class, d.score, d.bbox))
            .collect();
        assert_eq!(ours, theirs, "{width}×{height}, {anchors} candidates");
    }
}

#[test]
fn bad_input_is_a_clear_error() {
    use tessera_moderation::ClassifyError;
    let classifier = common::classifier();
    let png = common::benign_images().remove(0).1;
    // A PNG header claiming 100,000 × 100,000 pixels, and no pixels.
    let mut huge = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut huge, 100_000, 100_000);
        encoder.set_color(png::ColorType::Rgb);
        drop(encoder.write_header().unwrap());
    }
    let cases: [(&str, &[u8]); 5] = [
        ("empty", b""),
        ("text", b"this is not an image at all"),
        ("truncated", &png[..png.len() / 2]),
        ("huge", &huge),
        ("header only", &png[..40]),
    ];
    for (name, bytes) in cases {
        let err = classifier.classify_blocking(bytes).expect_err(name);
        eprintln!("{name}: {err}");
        match name {
            "empty" => assert!(matches!(err, ClassifyError::Empty), "{name}: {err:?}"),
            "huge" => assert!(
                matches!(
                    err,
                    ClassifyError::TooLarge {
                        width: 100_000,
                        height: 100_000
                    }
                ),
                "{name}: {err:?}"
            ),
            _ => assert!(
                matches!(err, ClassifyError::NotAnImage(_)),
                "{name}: {err:?}"
            ),
        }
    }
    // The classifier still works afterwards.
    assert!(classifier.classify_blocking(&png).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_across_tasks_it_gives_the_same_answers() {
    let classifier = common::classifier();
    let images = common::benign_images();
    let alone: Vec<_> = images
        .iter()
        .map(|(_, b)| classifier.classify_blocking(b).unwrap())
        .collect();
    let tasks: Vec<_> = images
        .iter()
        .cycle()
        .take(12)
        .map(|(_, bytes)| {
            let classifier = classifier.clone();
            let bytes = bytes.clone();
            tokio::spawn(async move { classifier.classify(bytes).await.unwrap() })
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), alone[i % alone.len()]);
    }
}
