//! What save nodes write: real PNGs, animated PNGs and animated WEBPs, of the
//! size the graph's latent asks for, stored where `/view` finds them. As
//! ComfyUI's save nodes do, PNGs carry the graph in a `prompt` text chunk and
//! each `extra_data.extra_pnginfo` entry (the UI's `workflow`) in another;
//! animated WEBPs carry them in EXIF (`prompt:{...}` in tag 0x0110, the
//! entries from 0x010f down).

use std::collections::HashSet;
use std::sync::Arc;

use axum::body::Bytes;
use serde_json::{json, Map, Value};

use super::execution::{int_input, Stop};
use super::nodes::{class_of, Role, MAX_RESOLUTION};
use super::routes::{inside, uuid};
use super::{Item, Shared};

/// What the output node draws: the size, frames and seed of the empty latent
/// and sampler upstream of it.
struct Picture {
    width: u32,
    height: u32,
    frames: u32,
    seed: u64,
    /// What the model draws, when a test set it ([`super::Painter`]).
    painter: Option<super::Painter>,
}

fn picture_for(prompt: &Map<String, Value>, output: &str, max_frames: u32) -> Picture {
    let mut picture = Picture {
        width: 64,
        height: 64,
        frames: 1,
        seed: 0,
        painter: None,
    };
    let mut seen = HashSet::new();
    let mut todo = vec![output.to_owned()];
    let (mut got_size, mut got_seed) = (false, false);
    while let Some(id) = todo.pop() {
        if !seen.insert(id.clone()) {
            continue;
        }
        let Some(node) = prompt.get(&id) else {
            continue;
        };
        match class_of(node).map(|c| (c.role, c.name)) {
            Some((Role::Latent, name)) if !got_size => {
                got_size = true;
                let side = |k| int_input(node, k).unwrap_or(64).clamp(1, MAX_RESOLUTION) as u32;
                picture.width = side("width");
                picture.height = side("height");
                let batch = int_input(node, "batch_size").unwrap_or(1).clamp(1, 4096) as u32;
                picture.frames = if name == "EmptyHunyuanLatentVideo" {
                    // Four frames per latent frame, plus the first.
                    let length = int_input(node, "length").unwrap_or(1).clamp(1, 8192) as u32;
                    ((length - 1) / 4) * 4 + 1
                } else {
                    batch
                };
            }
            Some((Role::Sampler, _)) if !got_seed => {
                got_seed = true;
                picture.seed = int_input(node, "seed")
                    .or_else(|| int_input(node, "noise_seed"))
                    .unwrap_or(0)
                    .clamp(0, u64::MAX as i128) as u64;
            }
            _ => {}
        }
        let inputs = node.get("inputs").and_then(Value::as_object);
        for value in inputs.into_iter().flat_map(|i| i.values()) {
            if let Some(t) = value
                .as_array()
                .and_then(|l| l.first())
                .and_then(Value::as_str)
            {
                todo.push(t.to_owned());
            }
        }
    }
    picture.frames = picture.frames.clamp(1, max_frames.max(1));
    picture
}

/// Runs a save node: writes its files and returns its `ui` output.
pub(super) fn save(shared: &Arc<Shared>, item: &Item, id: &str, role: Role) -> Result<Value, Stop> {
    let node = &item.prompt[id];
    let mut picture = picture_for(&item.prompt, id, shared.settings.max_frames);
    picture.painter = shared.settings.painter.clone();
    let (kind, prefix) = match role {
        Role::PreviewImage => (
            "temp",
            format!("ComfyUI_temp_{}", &uuid().replace('-', "")[..5]),
        ),
        _ => (
            "output",
            node.pointer("/inputs/filename_prefix")
                .and_then(Value::as_str)
                .unwrap_or("ComfyUI")
                .to_owned(),
        ),
    };
    // As folder_paths.get_save_image_path: the prefix's folder must stay inside.
    let (folder, base) = match prefix.rsplit_once('/') {
        Some((folder, base)) => (folder.to_owned(), base.to_owned()),
        None => (String::new(), prefix.clone()),
    };
    let Some(subfolder) = inside(&folder).filter(|_| !prefix.starts_with('/')) else {
        return Err(Stop::Failed {
            node: id.to_owned(),
            kind: "Exception".into(),
            message: "Saving image outside the output folder is not allowed.".into(),
        });
    };
    // As ComfyUI's save nodes: the graph, then every extra_pnginfo entry.
    let mut texts = vec![(
        "prompt".to_owned(),
        Value::Object(item.prompt.clone()).to_string(),
    )];
    if let Some(extra) = item
        .extra_data
        .get("extra_pnginfo")
        .and_then(Value::as_object)
    {
        texts.extend(extra.iter().map(|(k, v)| (k.clone(), v.to_string())));
    }
    let fps = node
        .pointer("/inputs/fps")
        .and_then(Value::as_f64)
        .filter(|f| *f > 0.0)
        .unwrap_or(8.0);
    let mut files = Vec::new();
    let mut write = |extension: &str, bytes: Vec<u8>| {
        let mut state = shared.lock();
        let counter = state
            .counters
            .entry((subfolder.clone(), base.clone()))
            .or_insert(1);
        let filename = format!("{base}_{:05}_.{extension}", *counter);
        *counter += 1;
        state.files.insert(
            (kind.to_owned(), subfolder.clone(), filename.clone()),
            Bytes::from(bytes),
        );
        files.push(json!({ "filename": filename, "subfolder": subfolder, "type": kind }));
    };
    let animated = match role {
        Role::SaveWebp => {
            write("webp", animated_webp(&picture, fps, &texts));
            true
        }
        Role::SaveApng => {
            write("png", png_frames(&picture, picture.frames, &texts));
            true
        }
        _ => {
            for frame in 0..picture.frames {
                let still = Picture {
                    seed: picture.seed.wrapping_add(u64::from(frame)),
                    painter: picture.painter.clone(),
                    ..picture
                };
                write("png", png_frames(&still, 1, &texts));
            }
            false
        }
    };
    let mut ui = json!({ "images": files });
    if animated {
        ui["animated"] = json!([true]);
    }
    Ok(ui)
}

/// RGB pixels of one frame: a gradient tinted by the seed and frame.
fn pixels(p: &Picture, frame: u32) -> Vec<u8> {
    if let Some(painter) = &p.painter {
        let mut data = (painter.0)(p.width, p.height, frame);
        data.resize((p.width * p.height * 3) as usize, 0);
        return data;
    }
    let tint = (p.seed.wrapping_mul(2_654_435_761) >> 8) as u8;
    let mut data = Vec::with_capacity((p.width * p.height * 3) as usize);
    for y in 0..p.height {
        for x in 0..p.width {
            data.push((x * 255 / p.width.max(1)) as u8 ^ tint);
            data.push((y * 255 / p.height.max(1)) as u8);
            data.push((frame * 255 / p.frames.max(1)) as u8);
        }
    }
    data
}

/// A PNG, animated when `frames > 1`, with one `tEXt` chunk per text.
fn png_frames(p: &Picture, frames: u32, texts: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, p.width, p.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        for (key, text) in texts {
            let latin1: String = text
                .chars()
                .map(|c| if c.is_ascii() { c } else { '?' })
                .collect();
            let _ = encoder.add_text_chunk(key.clone(), latin1);
        }
        if frames > 1 {
            encoder
                .set_animated(frames, 0)
                .expect("frame count is positive");
        }
        let mut writer = encoder.write_header().expect("writing to a Vec");
        for frame in 0..frames {
            writer
                .write_image_data(&pixels(p, frame))
                .expect("writing to a Vec");
        }
        writer.finish().expect("writing to a Vec");
    }
    out
}

/// An animated WEBP: a VP8X header with the animation and EXIF flags, an
/// ANIM chunk, one ANMF frame per picture frame, each a lossless VP8L
/// bitstream, then the texts in an EXIF chunk.
fn animated_webp(p: &Picture, fps: f64, texts: &[(String, String)]) -> Vec<u8> {
    fn chunk(out: &mut Vec<u8>, name: &[u8; 4], data: &[u8]) {
        out.extend_from_slice(name);
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(0);
        }
    }
    fn u24(out: &mut Vec<u8>, v: u32) {
        out.extend_from_slice(&v.to_le_bytes()[..3]);
    }
    let duration = ((1000.0 / fps).round() as u32).clamp(1, 0xff_ffff);
    let mut body = Vec::new();
    let mut vp8x = vec![0x02 | 0x08, 0, 0, 0];
    u24(&mut vp8x, p.width - 1);
    u24(&mut vp8x, p.height - 1);
    chunk(&mut body, b"VP8X", &vp8x);
    chunk(&mut body, b"ANIM", &[0xff, 0xff, 0xff, 0xff, 0, 0]);
    for frame in 0..p.frames {
        let mut still = Vec::new();
        image_webp::WebPEncoder::new(&mut still)
            .encode(
                &pixels(p, frame),
                p.width,
                p.height,
                image_webp::ColorType::Rgb8,
            )
            .expect("encoding to a Vec");
        // A simple-format file: RIFF, size, WEBP, then the VP8L chunk.
        let vp8l_len = u32::from_le_bytes(still[16..20].try_into().expect("4 bytes")) as usize;
        let vp8l = &still[20..20 + vp8l_len];
        let mut anmf = Vec::new();
        u24(&mut anmf, 0);
        u24(&mut anmf, 0);
        u24(&mut anmf, p.width - 1);
        u24(&mut anmf, p.height - 1);
        u24(&mut anmf, duration);
        anmf.push(0x02); // do not blend, do not dispose
        chunk(&mut anmf, b"VP8L", vp8l);
        chunk(&mut body, b"ANMF", &anmf);
    }
    chunk(&mut body, b"EXIF", &exif(texts));
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
    out
}

/// A little-endian TIFF block with one ASCII entry per text, `key:text`, as
/// ComfyUI's SaveAnimatedWEBP writes them: the first in tag 0x0110 (Model),
/// the others from 0x010f (Make) down.
fn exif(texts: &[(String, String)]) -> Vec<u8> {
    let mut entries: Vec<(u16, Vec<u8>)> = texts
        .iter()
        .enumerate()
        .map(|(i, (key, text))| {
            let tag = if i == 0 { 0x0110 } else { 0x0110 - i as u16 };
            let mut value = format!("{key}:{text}").into_bytes();
            value.push(0);
            (tag, value)
        })
        .collect();
    entries.sort_by_key(|(tag, _)| *tag);
    let ifd_len = 2 + 12 * entries.len() + 4;
    let mut out = b"II*\0".to_vec();
    out.extend_from_slice(&8u32.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u16).to_le_bytes());
    let mut data_at = 8 + ifd_len;
    let mut data = Vec::new();
    for (tag, value) in &entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&2u16.to_le_bytes()); // ASCII
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
        if value.len() <= 4 {
            let mut inline = value.clone();
            inline.resize(4, 0);
            out.extend_from_slice(&inline);
        } else {
            out.extend_from_slice(&(data_at as u32).to_le_bytes());
            data.extend_from_slice(value);
            data_at += value.len();
        }
    }
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&data);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn animated_webps_decode() {
        let p = Picture {
            width: 40,
            height: 24,
            frames: 3,
            seed: 9,
            painter: None,
        };
        let bytes = animated_webp(&p, 8.0, &[("prompt".into(), "{}".into())]);
        let decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(bytes)).unwrap();
        assert!(decoder.is_animated());
        assert_eq!(decoder.num_frames(), 3);
        assert_eq!(decoder.dimensions(), (40, 24));
    }
}
