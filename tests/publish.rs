//! The published copy (`publish` in `[warehouse]`): while the engine runs, another connection
//! opens the copy again and again, and each time it holds one whole committed snapshot (its
//! view equals the view the writer committed with that snapshot); at the end the copy equals
//! the warehouse. Python's duckdb (another program, another DuckDB build) does the same at the
//! same time. A copy that cannot be published is reported and the engine goes on.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use duckdb::{AccessMode, Config, Connection};
use tidewater::{run, CommitHook, Pipeline, RunOptions};
use tidewater_connectors::produce::TopicProducer;
use tidewater_connectors::{EmbeddedBroker, SourceControl};

fn publishing_pipeline(brokers: &str, topic: &str, warehouse: &Path, copy: &Path) -> Pipeline {
    let mut config = pipeline(brokers, topic, warehouse, 10).config;
    config.views[0].changes = true;
    config.warehouse.publish = Some(copy.to_owned());
    config.warehouse.publish_interval = "20ms".parse().unwrap();
    Pipeline::new(config).unwrap()
}

/// What a reader finds in the copy: its last snapshot and its view.
fn read_copy(copy: &Path) -> Result<(i64, View), duckdb::Error> {
    let config = Config::default().access_mode(AccessMode::ReadOnly)?;
    let conn = Connection::open_with_flags(copy, config)?;
    let last: i64 = conn.query_row("SELECT max(snapshot_id) FROM _snapshots", [], |r| r.get(0))?;
    Ok((last, read_view(&conn, "station_hourly", HOUR_US)))
}

#[test]
fn readers_of_the_published_copy_always_find_one_whole_snapshot() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("published", 3).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    let copy = dir.path().join("copy.duckdb");
    let pipeline = publishing_pipeline(&brokers, "published", &path, &copy);
    let messages = reading_messages(&readings(6_000, 5, 0.05));

    // The view of every snapshot as its commit left it.
    let committed: Arc<Mutex<BTreeMap<i64, View>>> = Arc::default();
    let last_commit = Arc::new(AtomicI64::new(0));
    let (record, last) = (Arc::clone(&committed), Arc::clone(&last_commit));
    let hook: CommitHook = Arc::new(move |conn, info| {
        let view = read_view(conn, "station_hourly", HOUR_US);
        record.lock().unwrap().insert(info.snapshot_id, view);
        last.store(info.snapshot_id, Ordering::SeqCst);
    });

    // A reader opening the copy as fast as it can while the engine runs.
    let done = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicI64::new(0));
    let opens = Arc::new(AtomicU64::new(0));
    let reader = {
        let (done, seen, opens) = (Arc::clone(&done), Arc::clone(&seen), Arc::clone(&opens));
        let (copy, committed) = (copy.clone(), Arc::clone(&committed));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            while !done.load(Ordering::SeqCst) && Instant::now() < deadline {
                if !copy.exists() {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                let (snapshot, view) = read_copy(&copy).expect("the copy opens at any time");
                opens.fetch_add(1, Ordering::SeqCst);
                let expected = committed.lock().unwrap().get(&snapshot).cloned();
                let expected = expected.expect("the copy holds a committed snapshot");
                assert_views_equal(
                    &view,
                    &expected,
                    &format!("the copy of snapshot {snapshot}"),
                );
                assert!(snapshot >= seen.load(Ordering::SeqCst), "copies go forward");
                seen.store(snapshot, Ordering::SeqCst);
            }
        })
    };

    // Python's duckdb, in a process of its own, opening the copy while the engine runs.
    let python = python_with_duckdb()
        .map(|python| PythonReader::start(&python, &copy, dir.path(), Arc::clone(&committed)));
    let python_seen = || python.as_ref().map_or(i64::MAX, |p| p.seen());

    let options = RunOptions {
        workers: 2,
        on_commit: Some(hook),
        ..RunOptions::default()
    };
    let (control, engine) = spawn_engine(&pipeline, options);
    // Slices of readings; after each, a snapshot is committed and the reader finds it in the
    // copy, so the copy was replaced many times while the engine ran.
    let mut producer = TopicProducer::new(&brokers, "published").unwrap();
    let slices = 12;
    for slice in messages.chunks(messages.len() / slices) {
        let before = last_commit.load(Ordering::SeqCst);
        send_all(&mut producer, slice);
        let deadline = Instant::now() + Duration::from_secs(30);
        while last_commit.load(Ordering::SeqCst) == before
            || seen.load(Ordering::SeqCst) < last_commit.load(Ordering::SeqCst)
            || python_seen() < last_commit.load(Ordering::SeqCst)
        {
            assert!(!engine.is_finished() && !reader.is_finished());
            if let Some(python) = &python {
                python.assert_running();
            }
            assert!(
                Instant::now() < deadline,
                "snapshot {} not in the copy within 30 s (the copy holds {}, Python read {})",
                last_commit.load(Ordering::SeqCst),
                seen.load(Ordering::SeqCst),
                python_seen(),
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    end_at_current_offsets(&control, &pipeline);
    let summary = engine.join().unwrap().unwrap();
    done.store(true, Ordering::SeqCst);
    reader
        .join()
        .expect("every copy the reader opened was whole");
    if let Some(python) = python {
        let (version, opens) = python.finish();
        eprintln!("Python's duckdb {version} opened the copy {opens} times while the engine ran");
        assert!(opens >= slices as u64, "{opens} opens by Python");
    }

    let publish = summary.publish.expect("publish stats");
    assert_eq!(publish.failures, 0, "{:?}", publish.last_error);
    assert!(publish.published >= slices as u64, "{publish:?}");
    assert!(opens.load(Ordering::SeqCst) >= slices as u64);
    let last = last_commit.load(Ordering::SeqCst);
    assert_eq!(
        publish.last_snapshot,
        Some(last),
        "the end of the run is published"
    );
    eprintln!(
        "{} copies, {} opened by the reader, the last took {:?}, the slowest {:?}",
        publish.published,
        opens.load(Ordering::SeqCst),
        publish.last_duration.unwrap(),
        publish.max_duration
    );
    // The final copy is the warehouse, table for table (change tables checked too).
    assert_same_contents(
        &warehouse_contents(&copy),
        &warehouse_contents(&path),
        "the copy",
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("publishing"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// A Python with the duckdb package: `TIDEWATER_PYTHON`, the venv `.ci/run` installs, or
/// `python3`. Without one the Python reader is skipped, except in CI, which installs it.
fn python_with_duckdb() -> Option<PathBuf> {
    let ci_venv = std::env::var_os("HOME")
        .map(|home| Path::new(&home).join(".cache/tidewater/tools/duckdb-venv/bin/python"));
    let candidates = std::env::var_os("TIDEWATER_PYTHON")
        .map(PathBuf::from)
        .into_iter()
        .chain(ci_venv)
        .chain([PathBuf::from("python3")]);
    for python in candidates {
        let imports = Command::new(&python)
            .args(["-c", "import duckdb"])
            .stderr(Stdio::null())
            .status();
        if imports.is_ok_and(|status| status.success()) {
            return Some(python);
        }
    }
    let hint = "Python's duckdb is not installed; .ci/run installs it (pip install duckdb) into \
                ~/.cache/tidewater/tools/duckdb-venv, or set TIDEWATER_PYTHON";
    assert!(std::env::var_os("CI").is_none(), "{hint}; CI needs it");
    eprintln!("skipped the Python reader: {hint}");
    None
}

/// `tests/python/read_published_copy.py` in a child process: every copy it opens is compared
/// with the view committed with that copy's snapshot.
struct PythonReader {
    child: Child,
    stop_file: PathBuf,
    seen: Arc<AtomicI64>,
    /// Reads the script's lines; returns duckdb's version and how many copies it opened.
    lines: JoinHandle<(String, u64)>,
}

impl PythonReader {
    fn start(
        python: &Path,
        copy: &Path,
        dir: &Path,
        committed: Arc<Mutex<BTreeMap<i64, View>>>,
    ) -> PythonReader {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/read_published_copy.py");
        let stop_file = dir.join("python-reader.stop");
        let mut child = Command::new(python)
            .arg(script)
            .arg(copy)
            .arg(&stop_file)
            .arg("120")
            .stdout(Stdio::piped())
            // A traceback goes straight to the test's output.
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Python reader");
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let seen = Arc::new(AtomicI64::new(0));
        let lines = {
            let seen = Arc::clone(&seen);
            std::thread::spawn(move || {
                let (mut version, mut opens) = (String::new(), 0);
                for line in stdout.lines() {
                    let line: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
                    if let Some(v) = line.get("duckdb") {
                        version = v.as_str().unwrap().to_owned();
                        continue;
                    }
                    let snapshot = line["snapshot"].as_i64().expect("a snapshot id");
                    let view = python_view(&line["rows"]);
                    let expected = committed.lock().unwrap().get(&snapshot).cloned();
                    let expected = expected.expect("Python's copy holds a committed snapshot");
                    assert_views_equal(&view, &expected, &format!("Python's copy of {snapshot}"));
                    assert!(snapshot >= seen.load(Ordering::SeqCst), "copies go forward");
                    seen.store(snapshot, Ordering::SeqCst);
                    opens += 1;
                }
                (version, opens)
            })
        };
        PythonReader {
            child,
            stop_file,
            seen,
            lines,
        }
    }

    /// The last snapshot Python found in the copy.
    fn seen(&self) -> i64 {
        self.seen.load(Ordering::SeqCst)
    }

    /// Fails when the script ended early (a copy it could not open, a wrong view).
    fn assert_running(&self) {
        assert!(
            !self.lines.is_finished(),
            "the Python reader stopped early (its error is printed above)"
        );
    }

    fn finish(mut self) -> (String, u64) {
        std::fs::write(&self.stop_file, b"").unwrap();
        let status = self.child.wait().unwrap();
        let read = self.lines.join();
        assert!(status.success(), "the Python reader failed: {status}");
        read.expect("every copy Python opened held a committed view")
    }
}

/// The rows Python printed, `[start, end, station, readings, entries, exits]` each.
fn python_view(rows: &serde_json::Value) -> View {
    let mut view = View::new();
    for row in rows.as_array().unwrap() {
        let number = |i: usize| row[i].as_i64().unwrap();
        assert_eq!(number(1) - number(0), HOUR_US, "window_end of a row");
        let group = (number(0), row[2].as_str().unwrap().to_owned());
        let previous = view.insert(group, (number(3), number(4), number(5)));
        assert!(previous.is_none(), "a group appears twice in Python's copy");
    }
    view
}

#[test]
fn a_copy_that_cannot_be_published_is_reported_and_the_engine_goes_on() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("unpublished", 2).unwrap();
    let data = readings(3_000, 8, 0.05);
    produce(&brokers, "unpublished", &reading_messages(&data));
    let dir = tempfile::tempdir().unwrap();

    // The target is a directory: every rename over it fails.
    let path = dir.path().join("w.duckdb");
    let copy = dir.path().join("copy.duckdb");
    std::fs::create_dir(&copy).unwrap();
    let pipeline = publishing_pipeline(&brokers, "unpublished", &path, &copy);
    let summary = run(&pipeline, to_the_end(2, None), SourceControl::new()).unwrap();
    assert_eq!(summary.records_in, data.len() as u64);
    let publish = summary.publish.unwrap();
    assert!(
        publish.failures >= 1 && publish.published == 0,
        "{publish:?}"
    );
    let error = publish.last_error.unwrap();
    assert!(
        error.contains("publishing a copy") && error.contains(&copy.display().to_string()),
        "{error}"
    );
    let messages = read_topic(&brokers, "unpublished", data.len());
    assert_views_equal(
        &read_view(&open_warehouse(&path), "station_hourly", HOUR_US),
        &oracle(messages.iter().map(|m| m.payload.as_slice()), HOUR_US),
        "the warehouse",
    );
    assert!(!dir.path().join(".copy.duckdb.publishing").exists());

    // A target in a directory that does not exist is a configuration error: nothing runs.
    let elsewhere = dir.path().join("w2.duckdb");
    let missing = dir.path().join("no-such-dir").join("copy.duckdb");
    let pipeline = publishing_pipeline(&brokers, "unpublished", &elsewhere, &missing);
    let error = run(&pipeline, to_the_end(1, None), SourceControl::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("no-such-dir") && error.contains("does not exist"),
        "{error}"
    );
}
