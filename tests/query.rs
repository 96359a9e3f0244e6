//! `tidewater query`: a SELECT prints its rows (table, CSV, JSON; the warehouse named directly
//! or by its pipeline file); anything that is not one read-only statement is refused and
//! leaves the file as it was; a warehouse held by another process, a view without a change
//! table as of a snapshot, and snapshots that do not exist are clear errors.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;
use tidewater::run;
use tidewater_connectors::SourceControl;

fn query(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .arg("query")
        .args(args)
        .output()
        .unwrap()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A warehouse of station_hourly (no change table) over a small file, and its pipeline file
/// (which also names a published copy). Returns (pipeline file, warehouse).
fn small_warehouse(dir: &Path) -> (PathBuf, PathBuf) {
    let file = dir.join("readings.jsonl");
    let lines: Vec<String> = readings(2_000, 4, 0.0)
        .iter()
        .map(|r| r.to_json())
        .collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let warehouse = dir.join("w.duckdb");
    let source = format!("path = {:?}\nchunks = 2", file.display().to_string());
    let mut config = station_hourly_pipeline(&source, &warehouse, 50).config;
    config.warehouse.publish = Some(dir.join("copy.duckdb"));
    let pipeline = tidewater::Pipeline::new(config).unwrap();
    run(&pipeline, to_the_end(1, None), SourceControl::new()).unwrap();
    let config = dir.join("pipeline.toml");
    std::fs::write(&config, pipeline.to_toml()).unwrap();
    (config, warehouse)
}

/// (station, readings) of the three stations-hours with most readings, read directly.
fn top_three(warehouse: &Path) -> Vec<(String, i64)> {
    open_warehouse(warehouse)
        .prepare("SELECT station, readings FROM station_hourly ORDER BY readings DESC, station, window_start LIMIT 3")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
}

const TOP_THREE: &str = "SELECT station, readings FROM station_hourly ORDER BY readings DESC, station, window_start LIMIT 3";

#[test]
fn a_select_prints_its_rows_and_writes_are_refused_leaving_the_file_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let (config, warehouse) = small_warehouse(dir.path());
    let w = warehouse.to_str().unwrap();
    let rows = top_three(&warehouse);

    // An aligned table: text to the left, numbers to the right.
    let output = query(&["--warehouse", w, TOP_THREE]);
    assert!(output.status.success(), "{}", stderr(&output));
    let width = rows.iter().map(|r| r.0.len()).max().unwrap().max(7);
    let digits = rows
        .iter()
        .map(|r| r.1.to_string().len())
        .max()
        .unwrap()
        .max(8);
    let mut expected = format!(
        " {:<width$} | readings\n{}+{}\n",
        "station",
        "-".repeat(width + 2),
        "-".repeat(digits + 2)
    );
    for (station, readings) in &rows {
        expected.push_str(&format!(" {station:<width$} | {readings:>digits$}\n"));
    }
    expected.push_str("(3 rows)\n");
    assert_eq!(stdout(&output), expected);

    // CSV, the warehouse found through the pipeline file.
    let output = query(&[
        "--config",
        config.to_str().unwrap(),
        "--format",
        "csv",
        TOP_THREE,
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    let mut expected = "station,readings\n".to_owned();
    for (station, readings) in &rows {
        expected.push_str(&format!("{station},{readings}\n"));
    }
    assert_eq!(stdout(&output), expected);

    let output = query(&["--warehouse", w, "--format", "json", TOP_THREE]);
    let json: Vec<serde_json::Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(json[0]["station"], rows[0].0.as_str());
    assert_eq!(json[0]["readings"], rows[0].1);

    let before = warehouse_contents(&warehouse);
    for sql in [
        "DELETE FROM station_hourly",
        "-- looks harmless\nDROP TABLE station_hourly",
        "/* SELECT */ UPDATE station_hourly SET readings = 0",
        "INSERT INTO station_hourly SELECT * FROM station_hourly",
        "CREATE TABLE notes (a INT)",
        "SELECT 1; DELETE FROM station_hourly",
        "WITH t AS (SELECT 1) DELETE FROM station_hourly",
        "ATTACH 'other.duckdb' AS other",
        "COPY station_hourly TO 'out.csv'",
        "INSTALL httpfs",
        "SET threads = 1",
        "PRAGMA version",
        "CHECKPOINT",
    ] {
        let output = query(&["--warehouse", w, sql]);
        let text = stderr(&output);
        assert!(
            !output.status.success() && text.starts_with("tidewater: error: refused:"),
            "{sql}: {text}"
        );
        assert!(stdout(&output).is_empty(), "{sql}");
    }
    assert_eq!(warehouse_contents(&warehouse), before, "nothing changed");
    for made in ["other.duckdb", "out.csv"] {
        assert!(!dir.path().join(made).exists() && !Path::new(made).exists());
    }

    // Reads beyond the warehouse are not allowed either, and SQL errors are DuckDB's.
    let output = query(&["--warehouse", w, "SELECT * FROM read_csv('/etc/hostname')"]);
    assert!(!output.status.success() && stderr(&output).contains("disabled by configuration"));
    let output = query(&["--warehouse", w, "SELECT * FROM no_such_table"]);
    let text = stderr(&output);
    assert!(
        !output.status.success() && text.contains("query failed") && text.contains("no_such_table"),
        "{text}"
    );
}

#[test]
fn a_warehouse_held_by_another_process_and_missing_history_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (config, warehouse) = small_warehouse(dir.path());
    let w = warehouse.to_str().unwrap();

    // As of a snapshot: bookkeeping tables up to it, a view without a change table refused.
    let output = query(&[
        "--warehouse",
        w,
        "--as-of",
        "1",
        "--format",
        "csv",
        "SELECT count(*) AS n FROM _snapshots",
    ]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert_eq!(stdout(&output), "n\n1\n");
    let output = query(&[
        "--warehouse",
        w,
        "--as-of",
        "1",
        "SELECT count(*) FROM station_hourly",
    ]);
    let text = stderr(&output);
    assert!(
        !output.status.success() && text.contains("view station_hourly has no change table"),
        "{text}"
    );
    let output = query(&["--warehouse", w, "--as-of", "999", "SELECT 1"]);
    let text = stderr(&output);
    assert!(
        !output.status.success() && text.contains("as of snapshot 999: there is no such snapshot"),
        "{text}"
    );
    let missing = dir.path().join("missing.duckdb");
    let output = query(&["--warehouse", missing.to_str().unwrap(), "SELECT 1"]);
    assert!(
        stderr(&output).contains("no warehouse file at"),
        "{}",
        stderr(&output)
    );

    // This test process holds the file open for writing, as a running engine does.
    let holder = duckdb::Connection::open(&warehouse).unwrap();
    for args in [
        vec!["--warehouse", w, "SELECT 1"],
        vec![
            "--config",
            config.to_str().unwrap(),
            "--as-of",
            "1",
            "SELECT 1",
        ],
    ] {
        let output = query(&args);
        let text = stderr(&output);
        assert!(
            !output.status.success()
                && text.contains("is locked by another process, normally a running engine"),
            "{args:?}: {text}"
        );
    }
    let output = query(&["--config", config.to_str().unwrap(), "SELECT 1"]);
    let copy = dir.path().join("copy.duckdb");
    assert!(
        stderr(&output).contains(&format!("published copy ({})", copy.display())),
        "{}",
        stderr(&output)
    );
    drop(holder);
    // The copy published at the end of the run can be queried like the warehouse.
    let output = query(&["--warehouse", copy.to_str().unwrap(), TOP_THREE]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).ends_with("(3 rows)\n"));
}
