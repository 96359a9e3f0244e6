//! The file source end to end: a JSON-lines or CSV file of generated turnstile readings (with
//! malformed and blank lines, and a last line without a newline) → engine → DuckDB, checked
//! against an oracle computed from the file's lines; the same tables with any number of
//! workers; exactly-once through stops and restarts, by byte offsets.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use tidewater::{run, CommitHook, Pipeline, RunOptions};
use tidewater_connectors::SourceControl;
use tidewater_dataflows::Reading;

/// A file's lines as written: its bytes, and each line's byte position and content.
struct TestFile {
    bytes: Vec<u8>,
    lines: Vec<(i64, Vec<u8>)>,
}

impl TestFile {
    /// Lines joined by `\n`, the last one without it.
    fn new(lines: Vec<Vec<u8>>) -> TestFile {
        let mut bytes = Vec::new();
        let mut positioned = Vec::new();
        for (i, line) in lines.into_iter().enumerate() {
            if i > 0 {
                bytes.push(b'\n');
            }
            positioned.push((bytes.len() as i64, line.clone()));
            bytes.extend_from_slice(&line);
        }
        TestFile {
            bytes,
            lines: positioned,
        }
    }

    fn records(&self) -> impl Iterator<Item = &(i64, Vec<u8>)> {
        self.lines
            .iter()
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
    }

    fn write(&self, path: &Path) {
        std::fs::write(path, &self.bytes).unwrap();
    }
}

const MALFORMED_JSON: [&[u8]; 3] = [
    b"{\"station\": ",
    b"{\"ca\":\"A\",\"ts\":\"not a time\"}",
    b"not json at all",
];

/// Generated readings as JSON lines, with a malformed line every 700 and a blank one every 900.
fn json_lines(readings: &[Reading]) -> (Vec<Vec<u8>>, usize) {
    let mut lines = Vec::new();
    let mut malformed = 0;
    for (i, reading) in readings.iter().enumerate() {
        if i % 700 == 350 {
            lines.push(MALFORMED_JSON[malformed % 3].to_vec());
            malformed += 1;
        }
        if i % 900 == 10 {
            lines.push(b"   ".to_vec());
        }
        lines.push(reading.to_json().into_bytes());
    }
    (lines, malformed)
}

/// A reading as a header-less CSV line, in schema order (strings quoted).
fn csv_line(r: &Reading) -> Vec<u8> {
    let ts = chrono::DateTime::from_timestamp_micros(r.ts)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    format!(
        "{},{},{},{},{},{},{ts},{},{},{}",
        q(&r.ca),
        q(&r.unit),
        q(&r.scp),
        q(&r.station),
        q(&r.linename),
        q(&r.division),
        q(&r.desc),
        r.entries,
        r.exits
    )
    .into_bytes()
}

/// The station view from the readings themselves (for CSV files).
fn oracle_of_readings(readings: &[Reading]) -> View {
    let mut view = View::new();
    for r in readings {
        let start = r.ts.div_euclid(HOUR_US) * HOUR_US;
        let totals = view.entry((start, r.station.clone())).or_insert((0, 0, 0));
        totals.0 += 1;
        totals.1 += r.entries;
        totals.2 += r.exits;
    }
    view
}

/// The station view over a file, accepting any lateness.
fn file_pipeline(file: &Path, format: &str, chunks: usize, warehouse: &Path) -> Pipeline {
    let source = format!(
        "path = {:?}\nchunks = {chunks}\nformat = \"{format}\"",
        file.display().to_string()
    );
    station_hourly_pipeline(&source, warehouse, 20)
}

/// The demo's seven views reading `file`, with short snapshot and checkpoint intervals.
fn demo_file_pipeline(file: &Path, warehouse: &Path) -> Pipeline {
    let mut config = tidewater::demo::demo_pipeline("", warehouse).config;
    let source = &mut config.sources[0];
    source.brokers = String::new();
    source.topic = String::new();
    source.path = Some(file.to_owned());
    source.chunks = Some(6);
    source.poll_batch = 512;
    // Short epochs, so that a stopped run has committed only a part of the file even though
    // the epochs in flight when the stop comes are committed too.
    config.warehouse.snapshot_interval = "10ms".parse().unwrap();
    config.warehouse.checkpoint_interval = "50ms".parse().unwrap();
    Pipeline::new(config).expect("the demo pipeline reads a file")
}

/// A run that is not bounded by `--exit-at-end`: a file source ends it by itself.
fn unbounded(workers: usize, on_commit: Option<CommitHook>) -> RunOptions {
    RunOptions {
        workers,
        exit_at_end: false,
        progress: false,
        cluster: None,
        observe: None,
        serve_sql: None,
        on_commit,
    }
}

fn query_i64(conn: &duckdb::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

/// `_rejects` rows: (topic, byte offset, payload).
fn rejects(conn: &duckdb::Connection) -> Vec<(String, i64, String)> {
    conn.prepare("SELECT topic, \"offset\", payload FROM _rejects ORDER BY \"offset\"")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

/// Checks one finished run over `file` against the oracle: the view, every line counted once,
/// the malformed lines in `_rejects` at their byte positions, and the last snapshot's offsets
/// at the ends of the chunks (the last one at the file's size).
fn check_run(
    path: &Path,
    file_path: &Path,
    file: &TestFile,
    expected: &View,
    malformed: &[(i64, Vec<u8>)],
    chunks: usize,
    context: &str,
) {
    let conn = open_warehouse(path);
    assert_views_equal(
        &read_view(&conn, "station_hourly", HOUR_US),
        expected,
        context,
    );
    let records = query_i64(&conn, "SELECT sum(records_in)::BIGINT FROM _snapshots");
    assert_eq!(
        records,
        file.records().count() as i64,
        "{context}: every non-blank line counted once"
    );
    let expected_rejects: Vec<(String, i64, String)> = malformed
        .iter()
        .map(|(offset, line)| {
            (
                file_path.display().to_string(),
                *offset,
                String::from_utf8_lossy(line).into_owned(),
            )
        })
        .collect();
    assert_eq!(rejects(&conn), expected_rejects, "{context}: _rejects");
    let last = query_i64(&conn, "SELECT max(snapshot_id) FROM _snapshots");
    let offsets = snapshot_offsets(&conn, last);
    assert_eq!(offsets.len(), chunks, "{context}: chunks {offsets:?}");
    assert_eq!(
        offsets.values().max().copied(),
        Some(file.bytes.len() as i64),
        "{context}: the last chunk ends at the file's size"
    );
    // Each chunk ended where the next one starts: at a line start.
    let line_starts: Vec<i64> = file.lines.iter().map(|(o, _)| *o).collect();
    for (partition, end) in &offsets {
        assert!(
            *end == file.bytes.len() as i64 || line_starts.binary_search(end).is_ok(),
            "{context}: chunk {partition} ends at {end}, not a line start"
        );
    }
}

#[test]
fn a_jsonl_file_equals_the_oracle_with_1_and_3_workers_and_the_run_ends_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let data = readings(6_000, 17, 0.05);
    let (lines, malformed_count) = json_lines(&data);
    let file = TestFile::new(lines);
    let file_path = dir.path().join("readings.jsonl");
    file.write(&file_path);
    let malformed: Vec<(i64, Vec<u8>)> = file
        .lines
        .iter()
        .filter(|(_, l)| MALFORMED_JSON.contains(&l.as_slice()))
        .cloned()
        .collect();
    assert_eq!(malformed.len(), malformed_count);
    let expected = oracle(file.lines.iter().map(|(_, l)| l.as_slice()), HOUR_US);
    assert_eq!(
        expected.values().map(|t| t.0).sum::<i64>(),
        data.len() as i64
    );
    for workers in [1, 3] {
        let context = format!("jsonl, {workers} workers");
        let path = dir.path().join(format!("w{workers}.duckdb"));
        let summary = run(
            &file_pipeline(&file_path, "json", 5, &path),
            unbounded(workers, None),
            SourceControl::new(),
        )
        .unwrap();
        assert_eq!(
            summary.records_in,
            file.records().count() as u64,
            "{context}"
        );
        assert_eq!(
            summary.records_rejected,
            malformed.len() as u64,
            "{context}"
        );
        assert!(summary.snapshots >= 1, "{context}");
        check_run(&path, &file_path, &file, &expected, &malformed, 5, &context);
    }
}

#[test]
fn a_csv_file_equals_the_oracle_with_3_workers() {
    let dir = tempfile::tempdir().unwrap();
    let data = readings(5_000, 23, 0.05);
    let mut lines: Vec<Vec<u8>> = data.iter().map(csv_line).collect();
    let bad: Vec<Vec<u8>> = vec![
        b"\"A002\",\"R051\",too,few".to_vec(),
        b"A,B,C,D,E,F,2024-03-04T08:00:00Z,REGULAR,many,7".to_vec(),
        b"A,B,C,D,E,F,yesterday,REGULAR,1,7".to_vec(),
    ];
    for (i, line) in bad.iter().enumerate() {
        lines.insert(1_000 + i * 1_500, line.clone());
    }
    lines.insert(2_000, Vec::new());
    let file = TestFile::new(lines);
    let file_path = dir.path().join("readings.csv");
    file.write(&file_path);
    let malformed: Vec<(i64, Vec<u8>)> = file
        .lines
        .iter()
        .filter(|(_, l)| bad.contains(l))
        .cloned()
        .collect();
    assert_eq!(malformed.len(), bad.len());
    let path = dir.path().join("w.duckdb");
    let summary = run(
        &file_pipeline(&file_path, "csv", 4, &path),
        unbounded(3, None),
        SourceControl::new(),
    )
    .unwrap();
    assert_eq!(summary.records_rejected, bad.len() as u64);
    check_run(
        &path,
        &file_path,
        &file,
        &oracle_of_readings(&data),
        &malformed,
        4,
        "csv, 3 workers",
    );
}

/// The seven demo views (every window kind, late and malformed lines) over one file: the same
/// tables with 1 and 3 workers; stopped and resumed runs (2 workers) end with the same tables
/// as one uninterrupted run, each line counted once; a changed file is then refused.
#[test]
fn demo_views_are_the_same_with_any_workers_and_through_stops_and_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut data = readings(30_000, 3, 0.05);
    // Some readings far out of order, so that `_late` has rows.
    shuffle(&mut data[10_000..10_400], 5);
    let (lines, _) = json_lines(&data);
    let file = TestFile::new(lines);
    let file_path = dir.path().join("turnstiles.jsonl");
    file.write(&file_path);
    let lines_with_records = file.records().count() as u64;

    let reference_path = dir.path().join("reference.duckdb");
    let summary = run(
        &demo_file_pipeline(&file_path, &reference_path),
        unbounded(1, None),
        SourceControl::new(),
    )
    .unwrap();
    assert_eq!(summary.records_in, lines_with_records);
    let expected = warehouse_contents(&reference_path);
    assert!(!expected["_late"].is_empty() && !expected["_rejects"].is_empty());
    // Finished chunks release the watermark: final-only windows of the whole file appear.
    assert!(
        expected["station_busy_15m"].len() > 1_000,
        "{} final windows",
        expected["station_busy_15m"].len()
    );
    let three = dir.path().join("three.duckdb");
    run(
        &demo_file_pipeline(&file_path, &three),
        unbounded(3, None),
        SourceControl::new(),
    )
    .unwrap();
    assert_same_contents(&warehouse_contents(&three), &expected, "3 workers");

    let path = dir.path().join("resumed.duckdb");
    let pipeline = demo_file_pipeline(&file_path, &path);
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs <= 40, "the runs do not get to the end of the file");
        let control = SourceControl::new();
        let stopper = Arc::clone(&control);
        let committed = Arc::new(AtomicU64::new(0));
        let stop_at = (lines_with_records / 8) * (2 + runs % 3) / 3;
        let hook: CommitHook = Arc::new(move |_, info| {
            let before = committed.fetch_add(info.records_in, Ordering::Relaxed);
            if before < stop_at && before + info.records_in >= stop_at {
                stopper.request_stop();
            }
        });
        run(&pipeline, unbounded(2, Some(hook)), Arc::clone(&control)).unwrap();
        if !control.stop_requested() {
            break;
        }
    }
    assert!(runs >= 3, "only {runs} runs; the test needs restarts");
    assert_same_contents(
        &warehouse_contents(&path),
        &expected,
        &format!("{runs} runs"),
    );
    let conn = open_warehouse(&path);
    let records = query_i64(&conn, "SELECT sum(records_in)::BIGINT FROM _snapshots");
    assert_eq!(
        records as u64, lines_with_records,
        "every line counted once"
    );
    let last = query_i64(&conn, "SELECT max(snapshot_id) FROM _snapshots");
    let ends: BTreeMap<i32, i64> = snapshot_offsets(&conn, last);
    assert_eq!(ends.values().max().copied(), Some(file.bytes.len() as i64));
    drop(conn);

    // The file grows: its stored byte offsets no longer describe it.
    let mut grown = file.bytes.clone();
    grown.extend_from_slice(b"\n{}");
    std::fs::write(&file_path, grown).unwrap();
    let error = run(&pipeline, unbounded(1, None), SourceControl::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("different pipeline definition") && error.contains("bytes in 6 chunks"),
        "{error}"
    );
}

#[test]
fn a_missing_file_stops_the_run_before_the_warehouse_is_created() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-file.jsonl");
    let warehouse = dir.path().join("w.duckdb");
    let error = run(
        &file_pipeline(&missing, "json", 4, &warehouse),
        unbounded(1, None),
        SourceControl::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("no-such-file.jsonl") && error.contains("No such file"),
        "{error}"
    );
    assert!(!warehouse.exists(), "nothing ran");
    // A directory is not a file either.
    let error = run(
        &file_pipeline(dir.path(), "json", 4, &warehouse),
        unbounded(1, None),
        SourceControl::new(),
    )
    .unwrap_err()
    .to_string();
    assert!(
        error.contains("not a regular file") || error.contains("directory"),
        "{error}"
    );
}
