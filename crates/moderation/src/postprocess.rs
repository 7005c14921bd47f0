//! NudeNet's output decoding: the model's 2,100 candidate boxes become
//! detections, as the Python package's `_postprocess` makes them.
//!
//! Each candidate has a box (centre, size, in input pixels) and one score per
//! label. Candidates whose best score is under 0.2 are dropped, boxes are
//! scaled back to the image and clipped to it, and OpenCV's non-maximum
//! suppression (`cv2.dnn.NMSBoxes`, score above 0.25, overlap 0.45, across
//! labels) keeps the best of overlapping ones. The arithmetic follows the
//! Python code's types (32-bit floats, then OpenCV's doubles) so the numbers
//! come out the same.

use serde::{Deserialize, Serialize};

use crate::labels::Label;
use crate::preprocess::INPUT_SIDE;

/// Values per candidate: a box (4) and one score per label.
pub(crate) const ROWS: usize = 4 + Label::ALL.len();

const CANDIDATE_SCORE: f32 = 0.2;
const NMS_SCORE: f64 = 0.25;
const NMS_OVERLAP: f64 = 0.45;

/// A box in the image's pixels: its top-left corner and size, truncated to
/// whole pixels as NudeNet's are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundingBox {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// One thing the detector found.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Detection {
    pub label: Label,
    /// The model's confidence, 0..1; detections come best first.
    pub score: f32,
    pub bbox: BoundingBox,
}

struct Candidate {
    label: Label,
    score: f32,
    // x, y, width, height, as the Python code holds them (float32).
    rect: [f32; 4],
}

/// Decodes the model's output (`1 × ROWS × anchors`, row-major) for an image
/// of `width × height` pixels.
pub(crate) fn decode(output: &[f32], anchors: usize, width: u32, height: u32) -> Vec<Detection> {
    let side = width.max(height) as f32;
    let model = INPUT_SIDE as f32;
    let (image_w, image_h) = (width as f32, height as f32);
    let at = |row: usize, i: usize| output[row * anchors + i];
    let mut candidates = Vec::new();
    for i in 0..anchors {
        // The first best label, as numpy's argmax picks it.
        let mut best = 0;
        for k in 1..Label::ALL.len() {
            if at(4 + k, i) > at(4 + best, i) {
                best = k;
            }
        }
        let score = at(4 + best, i);
        if score.is_nan() || score < CANDIDATE_SCORE {
            continue;
        }
        let (w, h) = (at(2, i), at(3, i));
        let x = at(0, i) - w / 2.0;
        let y = at(1, i) - h / 2.0;
        // Back to the padded square's pixels; the padding is right and
        // bottom, so the origin does not move.
        let x = x * side / model;
        let y = y * side / model;
        let w = w * side / model;
        let h = h * side / model;
        let x = x.min(image_w).max(0.0);
        let y = y.min(image_h).max(0.0);
        let w = w.min(image_w - x);
        let h = h.min(image_h - y);
        candidates.push(Candidate {
            label: Label::ALL[best],
            score,
            rect: [x, y, w, h],
        });
    }
    nms(&candidates)
        .into_iter()
        .map(|i| {
            let c = &candidates[i];
            // Python's int(): toward zero; a negative size becomes 0.
            let [x, y, w, h] = c.rect.map(|v| v.max(0.0) as u32);
            Detection {
                label: c.label,
                score: c.score,
                bbox: BoundingBox {
                    x,
                    y,
                    width: w,
                    height: h,
                },
            }
        })
        .collect()
}

/// `cv::dnn::NMSBoxes` on `Rect2d`s: candidates scoring above the
/// threshold, best first (ties keep their order), each kept unless it
/// overlaps a kept one by more than the threshold.
fn nms(candidates: &[Candidate]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..candidates.len())
        .filter(|&i| f64::from(candidates[i].score) > NMS_SCORE)
        .collect();
    order.sort_by(|&a, &b| candidates[b].score.total_cmp(&candidates[a].score));
    let mut kept: Vec<usize> = Vec::new();
    for i in order {
        let overlaps = kept
            .iter()
            .any(|&k| overlap(&candidates[i].rect, &candidates[k].rect) > NMS_OVERLAP);
        if !overlaps {
            kept.push(i);
        }
    }
    kept
}

/// Intersection over union, in doubles, as OpenCV computes it for `Rect2d`.
fn overlap(a: &[f32; 4], b: &[f32; 4]) -> f64 {
    let [ax, ay, aw, ah] = a.map(f64::from);
    let [bx, by, bw, bh] = b.map(f64::from);
    let x1 = ax.max(bx);
    let y1 = ay.max(by);
    let iw = (ax + aw).min(bx + bw) - x1;
    let ih = (ay + ah).min(by + bh) - y1;
    let intersection = if iw <= 0.0 || ih <= 0.0 { 0.0 } else { iw * ih };
    let areas = aw * ah + bw * bh;
    // OpenCV's `jaccardDistance`: two empty boxes are the same box (a
    // box clipped to nothing at the image's edge suppresses the next one).
    if areas <= f64::EPSILON {
        return 1.0;
    }
    intersection / (areas - intersection)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model output with the given candidates: (cx, cy, w, h, label, score).
    fn output(candidates: &[(f32, f32, f32, f32, usize, f32)]) -> Vec<f32> {
        let n = candidates.len();
        let mut out = vec![0f32; ROWS * n];
        for (i, &(cx, cy, w, h, label, score)) in candidates.iter().enumerate() {
            out[i] = cx;
            out[n + i] = cy;
            out[2 * n + i] = w;
            out[3 * n + i] = h;
            out[(4 + label) * n + i] = score;
        }
        out
    }

    #[test]
    fn overlapping_boxes_keep_the_best_and_distant_ones_stay() {
        let out = output(&[
            (100.0, 100.0, 50.0, 50.0, 3, 0.6),
            (102.0, 101.0, 50.0, 50.0, 1, 0.9),
            (250.0, 250.0, 20.0, 20.0, 7, 0.3),
            (50.0, 50.0, 20.0, 20.0, 7, 0.22), // a candidate, but under NMS's 0.25
            (10.0, 10.0, 20.0, 20.0, 7, 0.1),
        ]);
        let found = decode(&out, 5, 320, 320);
        let labels: Vec<_> = found.iter().map(|d| (d.label, d.score)).collect();
        assert_eq!(
            labels,
            [(Label::FaceFemale, 0.9), (Label::FeetExposed, 0.3)]
        );
        assert_eq!(
            found[0].bbox,
            BoundingBox {
                x: 77,
                y: 76,
                width: 50,
                height: 50
            }
        );
    }

    #[test]
    fn boxes_scale_to_the_image_and_clip_to_it() {
        // A 640×480 image is padded to 640×640: input pixels are 2 image pixels.
        let out = output(&[(300.0, 230.0, 60.0, 40.0, 0, 0.8)]);
        let found = decode(&out, 1, 640, 480);
        assert_eq!(
            found[0].bbox,
            BoundingBox {
                x: 540,
                y: 420,
                width: 100,
                height: 60
            }
        );
    }
}
