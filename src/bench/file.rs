//! `file` mode: generated readings written once to a JSON-lines file, then read by the file
//! source connector, end to end into a DuckDB warehouse. The ceiling reads the same file with
//! the same chunks and the same line reader, discarding every line.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tidewater_connectors::file::{plan_file, ChunkReader, FileSourceConfig, DEFAULT_CHUNKS};
use tidewater_connectors::{ConnectorError, GeneratorConfig, TurnstileGenerator};

use super::measure::Latencies;
use super::{run_to_end, EngineRun};
use crate::error::EngineError;
use crate::pipeline::Pipeline;

/// The input file of a sweep: the same for every file-mode configuration and for the peers.
pub fn readings_path(scratch: &Path, events: u64, seed: u64) -> PathBuf {
    scratch.join(format!("readings-{events}-{seed}.jsonl"))
}

/// Writes `events` generated readings (one generator, `seed`) as JSON lines, unless the file is
/// there already. Returns its size in bytes.
pub fn write_readings(path: &Path, events: u64, seed: u64) -> std::io::Result<u64> {
    if let Ok(metadata) = std::fs::metadata(path) {
        return Ok(metadata.len());
    }
    let partial = path.with_extension("partial");
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&partial)?);
    let mut generator = TurnstileGenerator::new(GeneratorConfig {
        seed,
        ..GeneratorConfig::default()
    });
    let mut line = String::with_capacity(192);
    for _ in 0..events {
        line.clear();
        generator.next_json(&mut line);
        line.push('\n');
        out.write_all(line.as_bytes())?;
    }
    out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
    std::fs::rename(&partial, path)?;
    Ok(std::fs::metadata(path)?.len())
}

/// What a file-mode run measured.
#[derive(Clone, Debug, Default)]
pub struct FileRun {
    pub events: u64,
    pub bytes: u64,
    pub elapsed: Duration,
    pub snapshots: u64,
    pub output_rows: u64,
    pub commits: Latencies,
    pub ceiling: Duration,
    pub warehouse: PathBuf,
}

/// Runs `pipeline` with its first source reading `input`, into `warehouse`.
pub fn run_file(
    pipeline: &Pipeline,
    input: &Path,
    workers: usize,
    warehouse: &Path,
    label: &str,
    events: u64,
) -> Result<FileRun, EngineError> {
    let mut pipeline = pipeline.clone();
    let source = &mut pipeline.config.sources[0];
    source.path = Some(input.to_owned());
    source.brokers.clear();
    source.topic.clear();
    pipeline.config.warehouse.path = warehouse.to_owned();
    let pipeline = Pipeline::new(pipeline.config)
        .map_err(|detail| EngineError::Bench(format!("{}: {detail}", input.display())))?;
    let EngineRun {
        summary,
        commits,
        output_rows,
    } = run_to_end(&pipeline, workers, events, label)?;
    let bytes = std::fs::metadata(input).map_or(0, |m| m.len());
    let ceiling = read_and_discard(input, workers, events)?;
    Ok(FileRun {
        events: summary.records_in,
        bytes,
        elapsed: summary.elapsed,
        snapshots: summary.snapshots,
        output_rows,
        commits,
        ceiling,
        warehouse: warehouse.to_owned(),
    })
}

/// The input path alone: the file's chunks (as the source plans them) read line by line with
/// the source's reader on `workers` threads, round robin, every line discarded.
fn read_and_discard(input: &Path, workers: usize, events: u64) -> Result<Duration, EngineError> {
    let (plan, _) = plan_file(&FileSourceConfig {
        path: input.to_owned(),
        chunks: DEFAULT_CHUNKS,
        read_batch: 1024,
    })?;
    let chunks: Vec<(i32, i64, i64)> = plan
        .start_offsets
        .iter()
        .map(|(p, start)| (*p, *start, plan.high_watermarks[p]))
        .collect();
    let started = Instant::now();
    let results: Vec<Result<u64, std::io::Error>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let mine: Vec<(i32, i64, i64)> = chunks
                    .iter()
                    .filter(|(p, _, _)| *p as usize % workers == worker)
                    .copied()
                    .collect();
                scope.spawn(move || -> Result<u64, std::io::Error> {
                    let mut lines = 0;
                    for (_, start, end) in mine {
                        let mut reader = ChunkReader::open(input, start, end)?;
                        while let Some(line) = reader.next_line()? {
                            lines += u64::from(!std::hint::black_box(line).is_blank());
                        }
                    }
                    Ok(lines)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Ok(0)))
            .collect()
    });
    let mut lines = 0;
    for result in results {
        lines += result.map_err(|e| EngineError::Bench(format!("{}: {e}", input.display())))?;
    }
    if lines != events {
        return Err(EngineError::from(ConnectorError::Config(format!(
            "the read-and-discard ceiling read {lines} lines of {events}"
        ))));
    }
    Ok(started.elapsed())
}
