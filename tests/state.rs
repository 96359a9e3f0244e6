//! Open windows keep their state small. An arrangement of partial aggregates gets one partial
//! per key and epoch; `retire_final_windows` folds a key's partials into one once it holds
//! `FOLD_AT` of them. Here every window stays open (unbounded lateness) while forty slices of
//! readings are committed one after another, each touching every key: the last checkpoint holds
//! a few partials per key instead of one per slice, and the view still equals the oracle.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tidewater::{CommitHook, Pipeline, RunOptions};
use tidewater_connectors::produce::TopicProducer;
use tidewater_connectors::{EmbeddedBroker, GeneratorConfig, TurnstileGenerator};
use tidewater_dataflows::operators::retire::FOLD_AT;

#[test]
fn a_window_open_for_many_epochs_keeps_a_few_partials_per_key() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("long-open", 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    let mut config = pipeline(&brokers, "long-open", &path, 10).config;
    // Every snapshot stores the state, so the last one shows what the arrangement holds.
    config.warehouse.checkpoint_interval = "1ms".parse().unwrap();
    let pipeline = Pipeline::new(config).unwrap();
    // Four stations, a reading a second: a few hourly windows, hundreds of readings per key.
    let data: Vec<_> = TurnstileGenerator::new(GeneratorConfig {
        seed: 31,
        late_fraction: 0.0,
        stations: 4,
        mean_gap_us: 1_000_000,
        ..Default::default()
    })
    .take(4_000)
    .collect();
    let messages = reading_messages(&data);
    let slices: Vec<_> = messages.chunks(messages.len() / 40).collect();
    // Every slice is committed before the next is sent, so it is at least one epoch of its own:
    // a key gets at least one partial per slice that touches it.
    let mut slices_of_key: BTreeMap<(i64, String), usize> = BTreeMap::new();
    for slice in &slices {
        let keys: BTreeSet<(i64, String)> = slice
            .iter()
            .map(|(_, payload)| {
                let reading: serde_json::Value = serde_json::from_slice(payload).unwrap();
                let ts = chrono::DateTime::parse_from_rfc3339(reading["ts"].as_str().unwrap())
                    .unwrap()
                    .timestamp_micros();
                let station = reading["station"].as_str().unwrap().to_owned();
                (ts.div_euclid(HOUR_US) * HOUR_US, station)
            })
            .collect();
        for key in keys {
            *slices_of_key.entry(key).or_default() += 1;
        }
    }
    let most = slices_of_key.values().max().copied().unwrap();
    assert!(most >= 4 * FOLD_AT, "a key must span many epochs: {most}");

    let commits = Arc::new(AtomicI64::new(0));
    let counted = Arc::clone(&commits);
    let hook: CommitHook = Arc::new(move |_, _| {
        counted.fetch_add(1, Ordering::SeqCst);
    });
    let options = RunOptions {
        workers: 2,
        on_commit: Some(hook),
        ..RunOptions::default()
    };
    let (control, engine) = spawn_engine(&pipeline, options);
    let mut producer = TopicProducer::new(&brokers, "long-open").unwrap();
    for slice in &slices {
        let before = commits.load(Ordering::SeqCst);
        send_all(&mut producer, slice);
        let deadline = Instant::now() + Duration::from_secs(30);
        while commits.load(Ordering::SeqCst) == before {
            assert!(!engine.is_finished(), "the engine stopped");
            assert!(Instant::now() < deadline, "no snapshot within 30 s");
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    end_at_current_offsets(&control, &pipeline);
    engine.join().unwrap().unwrap();

    let conn = open_warehouse(&path);
    assert_views_equal(
        &read_view(&conn, "station_hourly", HOUR_US),
        &oracle(messages.iter().map(|(_, p)| p.as_slice()), HOUR_US),
        "the view",
    );
    // `_state` entries are `[key, values]`: count them per key.
    let mut statement = conn.prepare("SELECT entry FROM _state").unwrap();
    let entries: Vec<String> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut partials_of_key: BTreeMap<String, usize> = BTreeMap::new();
    for entry in &entries {
        let entry: serde_json::Value = serde_json::from_str(entry).unwrap();
        *partials_of_key.entry(entry[0].to_string()).or_default() += 1;
    }
    assert_eq!(
        partials_of_key.len(),
        slices_of_key.len(),
        "one key per (window, station)"
    );
    let largest = partials_of_key.values().max().copied().unwrap();
    eprintln!(
        "{} keys, {} partials in the last checkpoint (at most {largest} per key); \
         a key was touched by up to {most} slices",
        partials_of_key.len(),
        entries.len()
    );
    assert!(
        largest <= 2 * FOLD_AT,
        "a key holds {largest} partials (its slices: up to {most})"
    );
}
