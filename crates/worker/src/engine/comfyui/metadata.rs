//! What users get back carries only what they asked for.
//!
//! ComfyUI writes the whole graph it ran into its outputs: the API graph as a
//! PNG `prompt` text chunk (and each `extra_pnginfo` entry, such as the UI
//! `workflow`, as another), and the same as EXIF in an animated WEBP. That
//! graph is the operator's template with the job's prompt filled in, which is
//! no business of the user who asked for a picture. Unless the engine keeps
//! metadata (`keep_metadata`), [`strip`] removes it at the chunk level: a
//! PNG loses its `tEXt`, `zTXt` and `iTXt` chunks, a WEBP its `EXIF` and
//! `XMP ` chunks (and their flags in `VP8X`); every other chunk is copied byte
//! for byte, so the pixels are untouched. Other formats pass through as they
//! are.

use bytes::Bytes;

/// PNG chunks that hold text, the only place ComfyUI writes metadata in a PNG.
const PNG_TEXT_CHUNKS: [&[u8; 4]; 3] = [b"tEXt", b"zTXt", b"iTXt"];
const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";
/// `VP8X` flags for the EXIF and XMP chunks.
const VP8X_EXIF: u8 = 0x08;
const VP8X_XMP: u8 = 0x04;

/// `bytes` without their metadata, or an error when the file's chunks cannot
/// be followed (so that metadata is never passed on by mistake).
pub(super) fn strip(bytes: Bytes) -> Result<Bytes, String> {
    if bytes.starts_with(PNG_SIGNATURE) {
        return strip_png(&bytes).map(Bytes::from);
    }
    if bytes.len() >= 12 && &bytes[0..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return strip_webp(&bytes).map(Bytes::from);
    }
    Ok(bytes)
}

/// The PNG without its text chunks. Stops at `IEND`: nothing after it is kept.
fn strip_png(b: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(b.len());
    out.extend_from_slice(PNG_SIGNATURE);
    let mut at = PNG_SIGNATURE.len();
    loop {
        let header = b.get(at..at + 8).ok_or("its PNG chunks end before IEND")?;
        let len = u32::from_be_bytes([header[0], header[1], header[2], header[3]]) as usize;
        let kind = &header[4..8];
        let end = at
            .checked_add(12)
            .and_then(|a| a.checked_add(len))
            .filter(|end| *end <= b.len())
            .ok_or("a PNG chunk runs past the end of the file")?;
        if !PNG_TEXT_CHUNKS.iter().any(|t| &t[..] == kind) {
            out.extend_from_slice(&b[at..end]);
        }
        if kind == b"IEND" {
            return Ok(out);
        }
        at = end;
    }
}

/// The WEBP without its `EXIF` and `XMP ` chunks, its RIFF size and `VP8X`
/// flags made to match.
fn strip_webp(b: &[u8]) -> Result<Vec<u8>, String> {
    let riff_end = u32::from_le_bytes([b[4], b[5], b[6], b[7]]) as usize;
    let riff_end = riff_end
        .checked_add(8)
        .filter(|end| *end <= b.len())
        .ok_or("its RIFF size runs past the end of the file")?;
    let mut body = Vec::with_capacity(riff_end);
    body.extend_from_slice(b"WEBP");
    let mut at = 12;
    while at < riff_end {
        let header = b
            .get(at..at + 8)
            .filter(|_| at + 8 <= riff_end)
            .ok_or("a WEBP chunk header is cut")?;
        let len = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
        let end = (at + 8)
            .checked_add(len)
            .and_then(|e| e.checked_add(len % 2))
            .filter(|end| *end <= riff_end)
            .ok_or("a WEBP chunk runs past the end of the file")?;
        match &header[0..4] {
            b"EXIF" | b"XMP " => {}
            b"VP8X" if len >= 1 => {
                let start = body.len();
                body.extend_from_slice(&b[at..end]);
                body[start + 8] &= !(VP8X_EXIF | VP8X_XMP);
            }
            _ => body.extend_from_slice(&b[at..end]),
        }
        at = end;
    }
    let mut out = Vec::with_capacity(body.len() + 8);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png_with_text() -> Vec<u8> {
        let mut png = Vec::new();
        {
            let mut e = png::Encoder::new(&mut png, 4, 3);
            e.set_color(png::ColorType::Rgb);
            e.add_text_chunk("prompt".into(), "{\"3\": {}}".into())
                .unwrap();
            e.add_ztxt_chunk("workflow".into(), "{\"nodes\": []}".into())
                .unwrap();
            e.add_itxt_chunk("parameters".into(), "steps: 20".into())
                .unwrap();
            let mut w = e.write_header().unwrap();
            w.write_image_data(&[7; 4 * 3 * 3]).unwrap();
        }
        png
    }

    fn chunk_kinds(png: &[u8]) -> Vec<String> {
        let mut kinds = Vec::new();
        let mut at = 8;
        while at + 8 <= png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            kinds.push(String::from_utf8_lossy(&png[at + 4..at + 8]).into_owned());
            at += 12 + len;
        }
        kinds
    }

    #[test]
    fn png_text_chunks_go_and_the_image_stays() {
        let png = png_with_text();
        assert!(chunk_kinds(&png).contains(&"zTXt".to_string()));
        let stripped = strip(Bytes::from(png.clone())).unwrap();
        let kinds = chunk_kinds(&stripped);
        assert!(
            kinds
                .iter()
                .all(|k| !["tEXt", "zTXt", "iTXt"].contains(&k.as_str())),
            "{kinds:?}"
        );
        let decode = |b: &[u8]| {
            let mut reader = png::Decoder::new(std::io::Cursor::new(b.to_vec()))
                .read_info()
                .unwrap();
            let mut buf = vec![0; reader.output_buffer_size()];
            reader.next_frame(&mut buf).unwrap();
            buf
        };
        assert_eq!(decode(&stripped), decode(&png));
        // Stripping twice changes nothing more.
        assert_eq!(strip(stripped.clone()).unwrap(), stripped);
    }

    #[test]
    fn webp_exif_and_xmp_go_with_their_flags() {
        fn chunk(out: &mut Vec<u8>, name: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(name);
            out.extend_from_slice(&(data.len() as u32).to_le_bytes());
            out.extend_from_slice(data);
            if data.len() % 2 == 1 {
                out.push(0);
            }
        }
        let mut body = b"WEBP".to_vec();
        chunk(
            &mut body,
            b"VP8X",
            &[0x02 | VP8X_EXIF | VP8X_XMP, 0, 0, 0, 1, 0, 0, 1, 0, 0],
        );
        chunk(&mut body, b"ANIM", &[0; 6]);
        chunk(&mut body, b"ANMF", &[1, 2, 3]);
        chunk(&mut body, b"EXIF", b"II*\0prompt:{}");
        chunk(&mut body, b"XMP ", b"<x/>");
        let mut webp = b"RIFF".to_vec();
        webp.extend_from_slice(&(body.len() as u32).to_le_bytes());
        webp.extend_from_slice(&body);

        let stripped = strip(Bytes::from(webp)).unwrap();
        let mut want = b"WEBP".to_vec();
        chunk(&mut want, b"VP8X", &[0x02, 0, 0, 0, 1, 0, 0, 1, 0, 0]);
        chunk(&mut want, b"ANIM", &[0; 6]);
        chunk(&mut want, b"ANMF", &[1, 2, 3]);
        assert_eq!(&stripped[0..4], b"RIFF");
        assert_eq!(
            u32::from_le_bytes(stripped[4..8].try_into().unwrap()) as usize,
            want.len()
        );
        assert_eq!(&stripped[8..], &want[..]);
    }

    #[test]
    fn broken_files_are_errors_and_other_formats_pass() {
        let png = png_with_text();
        assert!(strip(Bytes::from(png[..png.len() - 20].to_vec())).is_err());
        assert!(strip(Bytes::from_static(b"RIFF\xff\0\0\0WEBPVP8X")).is_err());
        let jpeg = Bytes::from_static(b"\xff\xd8\xff\xe0 not stripped");
        assert_eq!(strip(jpeg.clone()).unwrap(), jpeg);
    }
}
