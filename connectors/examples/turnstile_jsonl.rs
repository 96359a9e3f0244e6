//! Writes generated turnstile readings as JSON lines, e.g. for a file-source backfill:
//! `cargo run --release -p tidewater-connectors --example turnstile_jsonl -- 1000000 /tmp/readings.jsonl [seed]`

use std::io::Write;

use tidewater_connectors::{GeneratorConfig, TurnstileGenerator};

fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(count), Some(path)) = (args.get(1).and_then(|c| c.parse().ok()), args.get(2)) else {
        eprintln!("usage: turnstile_jsonl COUNT FILE [SEED]");
        std::process::exit(2);
    };
    let seed = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(42);
    let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    let config = GeneratorConfig {
        seed,
        ..Default::default()
    };
    for reading in TurnstileGenerator::new(config).take(count) {
        out.write_all(reading.to_json().as_bytes())?;
        out.write_all(b"\n")?;
    }
    out.flush()
}
