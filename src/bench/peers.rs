//! `--peers`: the hourly-per-station view written for PySpark Structured Streaming, Bytewax and
//! Pathway (`benches/peers/`, compiled into the binary so that it runs from anywhere), run on
//! the same JSON-lines file as Tidewater's file mode, their results compared row for row.

use std::path::{Path, PathBuf};
use std::process::Command;

use duckdb::Connection;
use serde::Deserialize;

use crate::error::EngineError;

/// (peer, Python package, script).
const PEERS: &[(&str, &str, &str)] = &[
    (
        "pyspark",
        "pyspark",
        include_str!("../../benches/peers/pyspark_station_hourly.py"),
    ),
    (
        "bytewax",
        "bytewax",
        include_str!("../../benches/peers/bytewax_station_hourly.py"),
    ),
    (
        "pathway",
        "pathway",
        include_str!("../../benches/peers/pathway_station_hourly.py"),
    ),
];

/// The one JSON line a peer script prints.
#[derive(Clone, Debug, Deserialize)]
pub struct PeerRun {
    pub peer: String,
    pub version: String,
    pub events: u64,
    pub rows: u64,
    /// Processing only (no interpreter or JVM start).
    pub seconds: f64,
    pub total_seconds: f64,
    pub settings: String,
    /// Where its CSV is.
    #[serde(skip)]
    pub output: PathBuf,
}

/// The Python to run the peers with: `TIDEWATER_PEERS_PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("TIDEWATER_PEERS_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// Runs every peer whose package `python` can import on `input`; peers that are not installed
/// are named on stderr and skipped.
pub fn run_peers(python: &str, input: &Path, scratch: &Path) -> Result<Vec<PeerRun>, EngineError> {
    let mut runs = Vec::new();
    for (peer, package, script) in PEERS {
        let installed = Command::new(python)
            .args(["-c", &format!("import {package}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            eprintln!("tidewater bench: {peer} skipped: `{python}` cannot import {package} (set TIDEWATER_PEERS_PYTHON to a Python that has it)");
            continue;
        }
        let script_path = scratch.join(format!("{peer}_station_hourly.py"));
        std::fs::write(&script_path, script).map_err(|e| io_error(&script_path, e))?;
        let output = scratch.join(format!("{peer}.csv"));
        eprintln!("tidewater bench: running {peer} on {}", input.display());
        let finished = Command::new(python)
            .arg(&script_path)
            .arg(input)
            .arg(&output)
            .output()
            .map_err(|e| EngineError::Bench(format!("starting {peer}: {e}")))?;
        if !finished.status.success() {
            let stderr = String::from_utf8_lossy(&finished.stderr);
            let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
            return Err(EngineError::Bench(format!(
                "{peer} failed ({}): {}",
                finished.status,
                tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
            )));
        }
        let stdout = String::from_utf8_lossy(&finished.stdout);
        let line = stdout.lines().last().unwrap_or_default();
        let mut run: PeerRun = serde_json::from_str(line)
            .map_err(|e| EngineError::Bench(format!("{peer} printed {line:?}: {e}")))?;
        run.output = output;
        runs.push(run);
    }
    Ok(runs)
}

/// A warehouse's `station_hourly` in the peers' CSV form (header, ISO window start in UTC,
/// sorted by window start and station, quoted as Python's `csv` module quotes).
pub fn station_hourly_csv(warehouse: &Path) -> Result<String, duckdb::Error> {
    let conn = Connection::open(warehouse)?;
    let mut statement = conn.prepare(
        "SELECT station, strftime(window_start, '%Y-%m-%dT%H:%M:%SZ') AS start,
                readings::BIGINT, entries::BIGINT, exits::BIGINT
         FROM station_hourly ORDER BY start, station",
    )?;
    let mut rows = statement.query([])?;
    let mut csv = String::from("station,window_start,readings,entries,exits\n");
    while let Some(row) = rows.next()? {
        let (station, start, readings, entries, exits): (String, String, i64, i64, i64) = (
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        );
        csv.push_str(&format!(
            "{},{start},{readings},{entries},{exits}\n",
            csv_field(&station)
        ));
    }
    Ok(csv)
}

/// A field as Python's `csv` module writes it (minimal quoting).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// Lines of `theirs` that differ from `ours`, for an error message (at most 3, with counts).
pub fn differences(ours: &str, theirs: &str) -> Option<String> {
    if ours == theirs {
        return None;
    }
    let (a, b): (Vec<&str>, Vec<&str>) = (ours.lines().collect(), theirs.lines().collect());
    let only_theirs: Vec<&str> = b.iter().filter(|l| !a.contains(l)).copied().collect();
    let only_ours: Vec<&str> = a.iter().filter(|l| !b.contains(l)).copied().collect();
    Some(format!(
        "{} rows vs {}; only in Tidewater's: {:?}; only in theirs: {:?}",
        a.len().saturating_sub(1),
        b.len().saturating_sub(1),
        &only_ours[..only_ours.len().min(3)],
        &only_theirs[..only_theirs.len().min(3)]
    ))
}

fn io_error(path: &Path, error: std::io::Error) -> EngineError {
    EngineError::Bench(format!("{}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_like_pythons_csv_module() {
        assert_eq!(csv_field("59 ST"), "59 ST");
        assert_eq!(csv_field("A, \"B\""), "\"A, \"\"B\"\"\"");
    }

    #[test]
    fn differences_name_the_rows() {
        assert_eq!(differences("h\na\n", "h\na\n"), None);
        let text = differences("h\na\nb\n", "h\na\nc\n").unwrap();
        assert!(text.contains("\"b\"") && text.contains("\"c\""), "{text}");
    }
}
