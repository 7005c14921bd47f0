//! NudeNet's preprocessing, in Rust: decode, pad to a square, resize to
//! 320×320, scale to 0..1, in the channel order the model was trained on.
//!
//! The Python package does this with OpenCV (`cv2.imdecode`,
//! `copyMakeBorder`, `cv2.dnn.blobFromImage`). Matching its scores means
//! matching its pixels, so the resize below is OpenCV's own arithmetic for
//! 8-bit images: bilinear with 11-bit fixed-point weights, and the 2×2 box
//! average OpenCV switches to when the image is exactly twice the input side.
//! The tests compare the tensor with OpenCV's, value for value.

use std::io::Cursor;

use image::{ImageReader, Limits, RgbImage};

use crate::ClassifyError;

/// The model's input side, in pixels.
pub(crate) const INPUT_SIDE: usize = 320;

/// The largest width or height accepted, in pixels; larger images are
/// refused before any pixel is decoded.
pub const MAX_SIDE: u32 = 16_384;

/// The most pixels accepted (width × height): 64 megapixels.
pub const MAX_PIXELS: u64 = 64 * 1024 * 1024;

/// An image ready for the model, and what decoding its output needs.
pub(crate) struct Prepared {
    /// NCHW, 1×3×320×320, channels blue, green, red (what NudeNet's
    /// double channel swap feeds the model), values in 0..=1.
    pub tensor: Vec<f32>,
    pub width: u32,
    pub height: u32,
}

/// Decodes PNG, JPEG or WebP bytes and prepares them for the model.
pub(crate) fn prepare(bytes: &[u8]) -> Result<Prepared, ClassifyError> {
    let image = decode(bytes)?;
    let tensor = to_tensor(&image);
    Ok(Prepared {
        tensor,
        width: image.width(),
        height: image.height(),
    })
}

fn reader(bytes: &[u8]) -> Result<ImageReader<Cursor<&[u8]>>, ClassifyError> {
    let reader = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| ClassifyError::NotAnImage(e.to_string()))?;
    if reader.format().is_none() {
        return Err(ClassifyError::NotAnImage(
            "not a PNG, JPEG or WebP image".to_owned(),
        ));
    }
    Ok(reader)
}

/// Decodes to 8-bit RGB. Alpha is dropped without blending, as OpenCV's
/// conversion does; grey images become three equal channels; 16-bit images
/// are scaled to 8 bits.
fn decode(bytes: &[u8]) -> Result<RgbImage, ClassifyError> {
    if bytes.is_empty() {
        return Err(ClassifyError::Empty);
    }
    // The header first, so a huge image is refused before anything is
    // allocated for it.
    let (width, height) = match imagesize::blob_size(bytes) {
        Ok(size) => (
            u32::try_from(size.width).unwrap_or(u32::MAX),
            u32::try_from(size.height).unwrap_or(u32::MAX),
        ),
        Err(_) => reader(bytes)?
            .into_dimensions()
            .map_err(|e| ClassifyError::NotAnImage(e.to_string()))?,
    };
    if width == 0 || height == 0 {
        return Err(ClassifyError::NotAnImage(format!(
            "the image is {width}×{height} pixels"
        )));
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ClassifyError::TooLarge { width, height });
    }
    let mut reader = reader(bytes)?;
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_PIXELS * 8);
    reader.limits(limits);
    let image = reader
        .decode()
        .map_err(|e| ClassifyError::NotAnImage(e.to_string()))?;
    Ok(image.to_rgb8())
}

/// OpenCV's `INTER_RESIZE_COEF_BITS`: weights are 11-bit fixed point.
const COEF_SCALE: i32 = 1 << 11;

/// One axis of a bilinear resize: for each output position, the first source
/// index and the two weights, as OpenCV computes them.
struct Axis {
    /// The first source index (already within the image along x).
    index: Vec<i64>,
    weights: Vec<(i32, i32)>,
}

impl Axis {
    /// `clamp_weight`: OpenCV zeroes the fraction at the borders along x but
    /// not along y (where it clamps the rows instead).
    fn new(source: usize, clamp_weight: bool) -> Axis {
        let scale = 1.0 / (INPUT_SIDE as f64 / source as f64);
        let last = source as i64 - 1;
        let mut index = Vec::with_capacity(INPUT_SIDE);
        let mut weights = Vec::with_capacity(INPUT_SIDE);
        for d in 0..INPUT_SIDE {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut f = f - s as f32;
            if clamp_weight {
                if s < 0 {
                    f = 0.0;
                    s = 0;
                }
                if s >= last {
                    f = 0.0;
                    s = last;
                }
            }
            let w0 = ((1.0 - f) * COEF_SCALE as f32).round_ties_even() as i32;
            let w0 = w0.clamp(i16::MIN.into(), i16::MAX.into());
            index.push(s);
            weights.push((w0, COEF_SCALE - w0));
        }
        Axis { index, weights }
    }
}

fn to_tensor(image: &RgbImage) -> Vec<f32> {
    let width = image.width() as usize;
    let height = image.height() as usize;
    let side = width.max(height);
    let raw = image.as_raw();
    // A pixel of the padded square: the image top-left, black elsewhere.
    let pixel = |x: usize, y: usize, c: usize| -> i32 {
        if x < width && y < height {
            i32::from(raw[(y * width + x) * 3 + c])
        } else {
            0
        }
    };
    let plane = INPUT_SIDE * INPUT_SIDE;
    let mut tensor = vec![0f32; 3 * plane];
    let mut put = |dx: usize, dy: usize, c: usize, value: i32| {
        // Red, green, blue in; blue, green, red out.
        let value = value.clamp(0, 255) as f64 * (1.0 / 255.0);
        tensor[(2 - c) * plane + dy * INPUT_SIDE + dx] = value as f32;
    };
    if side == INPUT_SIDE {
        for dy in 0..INPUT_SIDE {
            for dx in 0..INPUT_SIDE {
                for c in 0..3 {
                    put(dx, dy, c, pixel(dx, dy, c));
                }
            }
        }
    } else if side == 2 * INPUT_SIDE {
        // cv::resize turns INTER_LINEAR at exactly half size into INTER_AREA.
        for dy in 0..INPUT_SIDE {
            for dx in 0..INPUT_SIDE {
                for c in 0..3 {
                    let (x, y) = (2 * dx, 2 * dy);
                    let sum = pixel(x, y, c)
                        + pixel(x + 1, y, c)
                        + pixel(x, y + 1, c)
                        + pixel(x + 1, y + 1, c);
                    put(dx, dy, c, (sum + 2) >> 2);
                }
            }
        }
    } else {
        let columns = Axis::new(side, true);
        let rows = Axis::new(side, false);
        let last = side - 1;
        // The horizontal pass of one source row, 3 values per output column.
        let horizontal = |y: usize, out: &mut [i32]| {
            for dx in 0..INPUT_SIDE {
                let sx = columns.index[dx] as usize;
                let (a0, a1) = columns.weights[dx];
                for c in 0..3 {
                    let right = if a1 == 0 {
                        0
                    } else {
                        pixel((sx + 1).min(last), y, c)
                    };
                    out[dx * 3 + c] = pixel(sx, y, c) * a0 + right * a1;
                }
            }
        };
        let mut row0 = vec![0i32; INPUT_SIDE * 3];
        let mut row1 = vec![0i32; INPUT_SIDE * 3];
        for dy in 0..INPUT_SIDE {
            let sy = rows.index[dy];
            let y0 = sy.clamp(0, last as i64) as usize;
            let y1 = (sy + 1).clamp(0, last as i64) as usize;
            let (b0, b1) = rows.weights[dy];
            horizontal(y0, &mut row0);
            horizontal(y1, &mut row1);
            for dx in 0..INPUT_SIDE {
                for c in 0..3 {
                    let i = dx * 3 + c;
                    // OpenCV's vectorised vertical pass (VResizeLinearVec_32s8u):
                    // 16-bit multiplies keeping the high half, then a rounding
                    // shift.
                    let v =
                        ((((row0[i] >> 4) * b0) >> 16) + (((row1[i] >> 4) * b1) >> 16) + 2) >> 2;
                    put(dx, dy, c, v);
                }
            }
        }
    }
    tensor
}
