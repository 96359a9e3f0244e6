//! End-to-end tests of the engine in-process: embedded broker → engine → DuckDB file, checked
//! against an independent oracle computed from the raw messages of the topic.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tidewater::{run, CommitHook, RunOptions};
use tidewater_connectors::produce::TopicProducer;
use tidewater_connectors::{EmbeddedBroker, SourceControl};

/// Partition → next offset after the last message, as read from the topic itself.
fn end_offsets(messages: &[TopicMessage]) -> BTreeMap<i32, i64> {
    let mut ends = BTreeMap::new();
    for m in messages {
        let end = ends.entry(m.partition).or_insert(0);
        *end = (*end).max(m.offset + 1);
    }
    ends
}

#[test]
fn final_view_equals_oracle_in_order_and_shuffled_with_1_and_4_workers() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    let in_order = readings(20_000, 7, 0.02);
    let mut shuffled = in_order.clone();
    shuffle(&mut shuffled, 99);
    for (topic, data) in [("in_order", &in_order), ("shuffled", &shuffled)] {
        broker.create_topic(topic, 4).unwrap();
        produce(&brokers, topic, &reading_messages(data));
        let messages = read_topic(&brokers, topic, data.len());
        let expected = oracle(messages.iter().map(|m| m.payload.as_slice()), HOUR_US);
        assert!(
            expected.len() > 1_000,
            "the feed spans many windows and stations"
        );
        for workers in [1, 4] {
            let context = format!("{topic}, {workers} workers");
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("warehouse.duckdb");
            let summary = run(
                &pipeline(&brokers, topic, &path, 20),
                to_the_end(workers, None),
                SourceControl::new(),
            )
            .unwrap();
            assert_eq!(summary.records_in, data.len() as u64, "{context}");
            assert_eq!(summary.records_rejected, 0, "{context}");

            let conn = open_warehouse(&path);
            assert_views_equal(
                &read_view(&conn, "station_hourly", HOUR_US),
                &expected,
                &context,
            );
            let (last, records_in): (i64, i64) = conn
                .query_row(
                    "SELECT max(snapshot_id), sum(records_in)::BIGINT FROM _snapshots",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .unwrap();
            assert_eq!(
                records_in,
                data.len() as i64,
                "{context}: records_in over all snapshots"
            );
            assert_eq!(
                snapshot_offsets(&conn, last),
                end_offsets(&messages),
                "{context}: offsets of the last snapshot"
            );
        }
    }
}

#[test]
fn every_committed_snapshot_equals_the_oracle_below_its_offsets() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    for workers in [1, 3] {
        let topic = format!("consistency_{workers}");
        broker.create_topic(&topic, 3).unwrap();
        // Many late readings, so that snapshots keep revising earlier windows.
        let data = readings(6_000, 21 + workers as u64, 0.3);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("warehouse.duckdb");
        let mut config = pipeline(&brokers, &topic, &path, 5);
        config.config.sources[0].poll_batch = 64;
        let captured = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&captured);
        let hook: CommitHook = Arc::new(
            move |conn: &duckdb::Connection, info: &tidewater_sinks::CommitInfo| {
                let view = read_view(conn, "station_hourly", HOUR_US);
                let offsets = snapshot_offsets(conn, info.snapshot_id);
                sink.lock().unwrap().push((info.snapshot_id, view, offsets));
            },
        );

        // The engine runs while readings are produced in 24 slices, with a snapshot committed
        // between each two, so that there are many snapshots however fast the engine is; once
        // all are in the topic, the run is bounded by the final high watermarks.
        let control = SourceControl::new();
        let engine_control = Arc::clone(&control);
        let options = RunOptions {
            workers,
            exit_at_end: false,
            progress: false,
            cluster: None,
            observe: None,
            serve_sql: None,
            on_commit: Some(hook),
        };
        let source = config.config.sources[0].kafka();
        let engine = std::thread::spawn(move || run(&config, options, engine_control));
        let mut producer = TopicProducer::new(&brokers, &topic).unwrap();
        let messages = reading_messages(&data);
        for slice in messages.chunks(data.len() / 24) {
            let committed = captured.lock().unwrap().len();
            for (key, payload) in slice {
                producer
                    .send(key.as_deref().map(str::as_bytes), payload)
                    .unwrap();
            }
            let deadline = Instant::now() + Duration::from_secs(30);
            while captured.lock().unwrap().len() == committed {
                assert!(
                    Instant::now() < deadline,
                    "{workers} workers: no snapshot committed within 30 s of a slice"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        producer.flush().unwrap();
        control.set_end_offsets(
            &source.topic,
            tidewater_connectors::kafka::high_watermarks(&source).unwrap(),
        );
        engine.join().unwrap().unwrap();
        let messages = read_topic(&brokers, &topic, data.len());

        let snapshots = captured.lock().unwrap();
        assert!(
            snapshots.len() >= 20,
            "{workers} workers: only {} snapshots; the test needs many",
            snapshots.len()
        );
        for (index, (snapshot_id, view, offsets)) in snapshots.iter().enumerate() {
            assert_eq!(
                *snapshot_id,
                index as i64 + 1,
                "snapshot ids are consecutive"
            );
            assert_views_equal(
                view,
                &oracle_below(&messages, offsets),
                &format!("{workers} workers, snapshot {snapshot_id}"),
            );
        }
        let (_, last_view, last_offsets) = snapshots.last().unwrap();
        assert_eq!(last_offsets, &end_offsets(&messages));
        assert_eq!(
            last_view,
            &oracle(messages.iter().map(|m| m.payload.as_slice()), HOUR_US)
        );
    }
}

#[test]
fn bad_records_land_in_rejects_and_every_good_record_is_counted() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("rejects", 3).unwrap();
    let good = readings(3_000, 5, 0.05);
    let sample = good[0].to_json();
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (
            b"{\"ca\": \"A002\", \"unit\": ".to_vec(),
            "malformed reading",
        ),
        (
            sample.replace("\"station\":", "\"statio\":").into_bytes(),
            "field `station`: missing",
        ),
        (
            sample
                .replacen("\"entries\":", "\"entries\":\"12\",\"was_entries\":", 1)
                .into_bytes(),
            "field `entries`: expected an int, found a string",
        ),
        (
            sample
                .replacen("\"ts\":\"", "\"ts\":\"yesterday ", 1)
                .into_bytes(),
            "not a rfc3339 timestamp",
        ),
        (vec![0xff, 0xfe, 0x00, 0x9c], "malformed"),
        (Vec::new(), "malformed"),
    ];
    let mut messages = reading_messages(&good);
    for (i, (payload, _)) in bad.iter().enumerate() {
        messages.insert(300 + i * 400, (Some(format!("bad-{i}")), payload.clone()));
    }
    produce(&brokers, "rejects", &messages);
    let in_topic = read_topic(&brokers, "rejects", messages.len());

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warehouse.duckdb");
    let summary = run(
        &pipeline(&brokers, "rejects", &path, 20),
        to_the_end(2, None),
        SourceControl::new(),
    )
    .unwrap();
    assert_eq!(summary.records_in, messages.len() as u64);
    assert_eq!(summary.records_rejected, bad.len() as u64);

    let conn = open_warehouse(&path);
    let expected_view = oracle(in_topic.iter().map(|m| m.payload.as_slice()), HOUR_US);
    assert_eq!(
        expected_view.values().map(|t| t.0).sum::<i64>(),
        good.len() as i64,
        "oracle counts every good reading"
    );
    assert_views_equal(
        &read_view(&conn, "station_hourly", HOUR_US),
        &expected_view,
        "rejects",
    );

    let mut statement = conn
        .prepare("SELECT topic, \"partition\", \"offset\", payload, error, snapshot_id FROM _rejects ORDER BY \"partition\", \"offset\"")
        .unwrap();
    let rejects: Vec<(String, i32, i64, String, String, i64)> = statement
        .query_map([], |r| {
            Ok((
                r.get(0)?,
                r.get(1)?,
                r.get(2)?,
                r.get(3)?,
                r.get(4)?,
                r.get(5)?,
            ))
        })
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(rejects.len(), bad.len(), "{rejects:#?}");
    for (payload, reason) in &bad {
        let position = in_topic
            .iter()
            .find(|m| &m.payload == payload)
            .expect("bad message in topic");
        let row = rejects
            .iter()
            .find(|r| r.1 == position.partition && r.2 == position.offset)
            .unwrap_or_else(|| panic!("no reject row for {:?}", String::from_utf8_lossy(payload)));
        assert_eq!(row.0, "rejects");
        assert_eq!(row.3, String::from_utf8_lossy(payload), "payload is kept");
        assert!(
            row.4.contains(reason),
            "error {:?} should mention {reason:?}",
            row.4
        );
        let recorded: i64 = conn
            .query_row(
                "SELECT count(*) FROM _snapshots WHERE snapshot_id = ?",
                [row.5],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(recorded, 1, "a reject is committed with a snapshot");
    }
}

/// Every table of the demo pipeline (all window kinds, late and malformed records) is identical
/// whatever the number of workers, and from one run to the next: no result depends on how
/// partitions are spread, on poll timing, or on which worker finishes reading first.
#[test]
fn every_table_is_the_same_with_1_2_3_and_4_workers() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("shapes", 4).unwrap();
    produce_turnstile_topic(&brokers, "shapes", 30_000, 9);
    let dir = tempfile::tempdir().unwrap();
    let mut first = None;
    for (run_index, workers) in [1, 2, 3, 4, 2].into_iter().enumerate() {
        let path = dir.path().join(format!("run_{run_index}.duckdb"));
        run(
            &turnstile_pipeline(&brokers, "shapes", &path),
            to_the_end(workers, None),
            SourceControl::new(),
        )
        .unwrap();
        let contents = warehouse_contents(&path);
        match &first {
            None => {
                assert!(contents["_late"].len() > 100 && !contents["_rejects"].is_empty());
                first = Some(contents);
            }
            Some(first) => assert_same_contents(
                &contents,
                first,
                &format!("run {run_index} with {workers} workers"),
            ),
        }
    }
}
