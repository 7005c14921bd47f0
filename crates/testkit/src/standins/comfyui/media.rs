//! What save nodes write: real PNGs (with the graph in a `prompt` text
//! chunk), animated PNGs and animated WEBPs, of the size the graph's latent
//! asks for, stored where `/view` finds them.

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
}

fn picture_for(prompt: &Map<String, Value>, output: &str, max_frames: u32) -> Picture {
    let mut picture = Picture {
        width: 64,
        height: 64,
        frames: 1,
        seed: 0,
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
    let picture = picture_for(&item.prompt, id, shared.settings.max_frames);
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
    let graph = Value::Object(item.prompt.clone()).to_string();
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
            write("webp", animated_webp(&picture, fps));
            true
        }
        Role::SaveApng => {
            write("png", png_frames(&picture, picture.frames, Some(&graph)));
            true
        }
        _ => {
            for frame in 0..picture.frames {
                let still = Picture {
                    seed: picture.seed.wrapping_add(u64::from(frame)),
                    ..picture
                };
                write("png", png_frames(&still, 1, Some(&graph)));
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

/// A PNG, animated when `frames > 1`, with the graph in a `prompt` text chunk.
fn png_frames(p: &Picture, frames: u32, graph: Option<&str>) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(&mut out, p.width, p.height);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        if let Some(graph) = graph {
            let latin1: String = graph
                .chars()
                .map(|c| if c.is_ascii() { c } else { '?' })
                .collect();
            let _ = encoder.add_text_chunk("prompt".into(), latin1);
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

/// An animated WEBP: a VP8X header with the animation flag, an ANIM chunk,
/// and one ANMF frame per picture frame, each a lossless VP8L bitstream.
fn animated_webp(p: &Picture, fps: f64) -> Vec<u8> {
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
    let mut vp8x = vec![0x02, 0, 0, 0];
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
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&((body.len() + 4) as u32).to_le_bytes());
    out.extend_from_slice(b"WEBP");
    out.extend_from_slice(&body);
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
        };
        let bytes = animated_webp(&p, 8.0);
        let decoder = image_webp::WebPDecoder::new(std::io::Cursor::new(bytes)).unwrap();
        assert!(decoder.is_animated());
        assert_eq!(decoder.num_frames(), 3);
        assert_eq!(decoder.dimensions(), (40, 24));
    }
}
