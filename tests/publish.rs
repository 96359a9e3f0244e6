//! The published copy (`publish` in `[warehouse]`): while the engine runs, another connection
//! opens the copy again and again, and each time it holds one whole committed snapshot (its
//! view equals the view the writer committed with that snapshot); at the end the copy equals
//! the warehouse. A copy that cannot be published is reported and the engine goes on.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
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

    let control = SourceControl::new();
    let engine = {
        let (pipeline, control) = (pipeline.clone(), Arc::clone(&control));
        let options = RunOptions {
            workers: 2,
            on_commit: Some(hook),
            ..RunOptions::default()
        };
        std::thread::spawn(move || run(&pipeline, options, control))
    };
    // Slices of readings; after each, a snapshot is committed and the reader finds it in the
    // copy, so the copy was replaced many times while the engine ran.
    let source = pipeline.config.sources[0].kafka();
    let mut producer = TopicProducer::new(&brokers, "published").unwrap();
    let slices = 12;
    for slice in messages.chunks(messages.len() / slices) {
        let before = last_commit.load(Ordering::SeqCst);
        for (key, payload) in slice {
            producer
                .send(key.as_deref().map(str::as_bytes), payload)
                .unwrap();
        }
        producer.flush().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while last_commit.load(Ordering::SeqCst) == before
            || seen.load(Ordering::SeqCst) < last_commit.load(Ordering::SeqCst)
        {
            assert!(!engine.is_finished() && !reader.is_finished());
            assert!(
                Instant::now() < deadline,
                "snapshot {} not in the copy within 30 s (the copy holds {})",
                last_commit.load(Ordering::SeqCst),
                seen.load(Ordering::SeqCst)
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    control.set_end_offsets(
        &source.topic,
        tidewater_connectors::kafka::high_watermarks(&source).unwrap(),
    );
    let summary = engine.join().unwrap().unwrap();
    done.store(true, Ordering::SeqCst);
    reader
        .join()
        .expect("every copy the reader opened was whole");

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
    open_with_python_if_it_can(&copy, &committed.lock().unwrap()[&last]);
}

/// Python's DuckDB, when installed, opens the copy too (it is not needed for the tests).
fn open_with_python_if_it_can(copy: &Path, expected: &View) {
    let script = format!(
        "import duckdb; print(duckdb.connect({:?}, read_only=True).execute('SELECT count(*) FROM station_hourly').fetchone()[0])",
        copy.display().to_string()
    );
    let output = std::process::Command::new("python3")
        .args(["-c", &script])
        .output();
    match output {
        Ok(output) if output.status.success() => {
            let count = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            assert_eq!(
                count,
                expected.len().to_string(),
                "rows seen by Python's duckdb"
            );
        }
        _ => eprintln!("skipped: python3 with the duckdb package is not available"),
    }
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
