//! Measures the output classifier: milliseconds per image, one image at a
//! time, on this machine's CPU, for images of the sizes image jobs make.
//!
//! Run with `cargo run --release -p tessera-moderation --example
//! classify_bench -- <virtualenv> [images per size]`, where the virtualenv
//! holds `nudenet` and `onnxruntime` (`scripts/test` makes one in
//! target/engines-venv). docs/benchmarks.md ("Output classification") has
//! the figures.

use std::io::Cursor;
use std::path::PathBuf;
use std::time::Instant;

use image::{ImageFormat, Rgb, RgbImage};
use tessera_moderation::{Assets, Classifier};

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(venv) = args.next().map(PathBuf::from) else {
        eprintln!(
            "usage: classify_bench <virtualenv with nudenet and onnxruntime> [images per size]"
        );
        std::process::exit(2);
    };
    let count: usize = match args.next().map(|n| n.parse()) {
        None => 50,
        Some(Ok(n)) if n > 0 => n,
        Some(_) => {
            eprintln!("images per size must be a positive number");
            std::process::exit(2);
        }
    };
    let assets = Assets::in_virtualenv(&venv).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    let started = Instant::now();
    let classifier = Classifier::load(&assets.model, &assets.runtime).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1);
    });
    println!("load: {} ms", started.elapsed().as_millis());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "cores: {cores}; {count} runs per size, one image at a time, after 3 warm-up runs; medians"
    );
    println!("| image | format | decode + preprocess | whole classification |");
    println!("|---|---|---|---|");
    for (width, height) in [(512, 512), (1024, 1024), (832, 1216)] {
        for format in [ImageFormat::Png, ImageFormat::Jpeg] {
            let image = RgbImage::from_fn(width, height, |x, y| {
                Rgb([(x % 256) as u8, (y % 256) as u8, ((x * y) % 251) as u8])
            });
            let mut bytes = Cursor::new(Vec::new());
            image.write_to(&mut bytes, format).expect("encode");
            let bytes = bytes.into_inner();
            for _ in 0..3 {
                classifier.classify_blocking(&bytes).expect("classify");
            }
            let prepare = median(count, || {
                tessera_moderation::input_tensor(&bytes).expect("preprocess");
            });
            let whole = median(count, || {
                classifier.classify_blocking(&bytes).expect("classify");
            });
            println!(
                "| {width}×{height} | {format:?} | {:.1} ms | {:.1} ms (p90 {:.1}) |",
                prepare.0, whole.0, whole.1
            );
        }
    }
}

/// Runs `f` `count` times: the median and 90th percentile, in milliseconds.
fn median(count: usize, mut f: impl FnMut()) -> (f64, f64) {
    let mut times: Vec<f64> = (0..count)
        .map(|_| {
            let started = Instant::now();
            f();
            started.elapsed().as_secs_f64() * 1000.0
        })
        .collect();
    times.sort_by(f64::total_cmp);
    (times[count / 2], times[(count * 9 / 10).min(count - 1)])
}
