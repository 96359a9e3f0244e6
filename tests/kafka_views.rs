//! Declared views end to end through Kafka: the embedded broker, the engine's Kafka sources and
//! the DuckDB writer, checked at every committed snapshot against the independent model of
//! `common::model` (the one the property test uses). One pipeline reads the same records from
//! two sources, a JSON topic and a header-less CSV topic with epoch-millisecond timestamps, so
//! both formats, two sources in one dataflow and per-source watermarks are covered at once.
//! A second test shows how `idle_timeout` lets windows close while a partition is silent, and
//! what happens to that partition's records when it speaks again.

mod common;

use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::model::*;
use tidewater::{run, CommitHook, Pipeline, RunOptions};
use tidewater_connectors::produce::TopicProducer;
use tidewater_connectors::{EmbeddedBroker, SourceControl};

const JSON: Origin<'static> = EVENTS;
const CSV: Origin<'static> = Origin {
    topic: "events_csv",
    source: "events_csv",
};

/// Seeded partitions like the property test's: random walks of event time with out-of-order
/// records, records far behind (late for some windows), and about 4% that must be rejected.
fn generated(seed: u64, partitions: usize, per_partition: usize) -> Vec<Vec<Msg>> {
    let mut state = seed | 1;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    (0..partitions)
        .map(|_| {
            let mut clock = 30i64;
            (0..per_partition)
                .map(|_| {
                    let step = next(28) as i64 - 8;
                    clock += step.clamp(-3, 4);
                    let back = if step < -5 { 12 } else { 0 };
                    let rec = Rec {
                        key: ["a", "b", "c", "d"][next(4) as usize].to_owned(),
                        sub: next(3) as i64,
                        value: (next(5) != 0).then(|| next(15) as i64 - 5),
                        score: next(8) as f64 * 0.25,
                        flag: next(2) == 0,
                        ts: T0 + (clock - back).max(0) * SECOND,
                    };
                    match next(25) {
                        0 => Msg::Bad(b"{not json".to_vec()),
                        _ => Msg::Good(rec),
                    }
                })
                .collect()
        })
        .collect()
}

/// The same message as one CSV line in schema order (`key,sub,value,score,flag,ts`), `ts` in
/// epoch milliseconds and a NULL value as an empty field; a bad message has too few columns.
fn csv_payload(message: &Msg) -> Vec<u8> {
    match message {
        Msg::Bad(_) => b"a,1,2".to_vec(),
        Msg::Good(r) => format!(
            "{},{},{},{:?},{},{}",
            r.key,
            r.sub,
            r.value.map_or(String::new(), |v| v.to_string()),
            r.score,
            r.flag,
            r.ts / 1000
        )
        .into_bytes(),
    }
}

/// The reference views of one source: names prefixed, and the source named.
fn views_of(origin: Origin, lateness: i64) -> Vec<ModelView> {
    views(lateness)
        .into_iter()
        .map(|mut view| {
            if origin.source != JSON.source {
                view.name = Box::leak(format!("{}_{}", origin.source, view.name).into_boxed_str());
            }
            view
        })
        .collect()
}

/// Checks made inside a commit hook and the messages of those that failed: a failed check is
/// recorded rather than panicking on the writer's thread (which would stop the engine).
type Checks = Mutex<(usize, Vec<String>)>;

fn record_check(checks: &Checks, check: impl FnOnce()) {
    let outcome = catch_unwind(AssertUnwindSafe(check));
    let mut checks = checks.lock().unwrap();
    checks.0 += 1;
    if let Err(panic) = outcome {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_else(|| "a check panicked".to_owned());
        checks.1.push(message);
    }
}

fn two_source_pipeline(
    brokers: &str,
    warehouse: &std::path::Path,
    ooo: i64,
    lateness: i64,
) -> String {
    let json_source = source_toml(brokers, ooo)
        .replace("topic = \"events\"", "topic = \"events\"\npoll_batch = 16");
    let csv_source = source_toml(brokers, ooo)
        .replace("name = \"events\"", "name = \"events_csv\"")
        .replace(
            "topic = \"events\"",
            "topic = \"events_csv\"\npoll_batch = 16\nformat = \"csv\"\ntimestamp_format = \"epoch_millis\"",
        );
    let mut text = json_source + &csv_source;
    for origin in [JSON, CSV] {
        for view in views_of(origin, lateness) {
            text.push_str(&view.toml().replacen(
                "[[views]]\n",
                &format!("[[views]]\nsource = \"{}\"\n", origin.source),
                1,
            ));
        }
    }
    text.push_str(&format!(
        "[warehouse]\npath = {:?}\nsnapshot_interval = \"50ms\"\n",
        warehouse.display().to_string()
    ));
    text
}

#[test]
fn json_and_csv_sources_through_kafka_equal_the_model_at_every_snapshot() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    let (ooo, lateness) = (2 * SECOND, 2 * SECOND);
    for workers in [1, 3] {
        let partitions = generated(11 + workers as u64, 3, 300);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.duckdb");
        // Fresh topics per run: the embedded broker lives for the whole test.
        let (json_topic, csv_topic) = (format!("events_{workers}"), format!("csv_{workers}"));
        let text = two_source_pipeline(&brokers, &path, ooo, lateness)
            .replace("topic = \"events\"", &format!("topic = \"{json_topic}\""))
            .replace(
                "topic = \"events_csv\"",
                &format!("topic = \"{csv_topic}\""),
            );
        let pipeline = Pipeline::from_toml(&text, "two sources").unwrap();
        for topic in [&json_topic, &csv_topic] {
            broker.create_topic(topic, 3).unwrap();
        }

        // Every snapshot is compared with the model inside the commit hook (the only moment it
        // can be seen); a mismatch is recorded rather than panicking on the writer's thread.
        let origins = [
            (JSON, json_topic.clone(), views_of(JSON, lateness)),
            (CSV, csv_topic.clone(), views_of(CSV, lateness)),
        ];
        let checked = Arc::new(Mutex::new((0usize, Vec::<String>::new())));
        let watermarks = Mutex::new(BTreeMap::<&str, i64>::new());
        let (hook_partitions, hook_checked) = (partitions.clone(), Arc::clone(&checked));
        let hook: CommitHook = Arc::new(move |conn, info| {
            for (origin, topic, views) in &origins {
                let stored = Origin {
                    topic,
                    source: origin.source,
                };
                let offsets = read_offsets(conn, info.snapshot_id, stored);
                let mut known = watermarks.lock().unwrap();
                let previous = known.entry(origin.source).or_insert(i64::MIN);
                *previous = next_watermark(*previous, &hook_partitions, &offsets, ooo);
                let expected = expected(views, &hook_partitions, &offsets, ooo, *previous);
                record_check(&hook_checked, || {
                    assert_snapshot_matches(conn, info.snapshot_id, &expected, stored, topic)
                });
            }
        });

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
        let sources: Vec<_> = pipeline.config.sources.iter().map(|s| s.kafka()).collect();
        let engine = std::thread::spawn(move || run(&pipeline, options, engine_control));
        // Paced and interleaved, so the engine commits many snapshots part-way through.
        let mut json = TopicProducer::new(&brokers, &json_topic).unwrap();
        let mut csv = TopicProducer::new(&brokers, &csv_topic).unwrap();
        for index in 0..300 {
            for (p, messages) in partitions.iter().enumerate() {
                json.send_to(p as i32, &messages[index].payload()).unwrap();
                csv.send_to(p as i32, &csv_payload(&messages[index]))
                    .unwrap();
            }
            if index % 10 == 9 {
                json.flush().unwrap();
                csv.flush().unwrap();
                std::thread::sleep(Duration::from_millis(15));
            }
        }
        json.flush().unwrap();
        csv.flush().unwrap();
        for source in &sources {
            let ends = tidewater_connectors::kafka::high_watermarks(source).unwrap();
            assert_eq!(ends.values().sum::<i64>(), 900, "{}", source.topic);
            control.set_end_offsets(&source.topic, ends);
        }
        let summary = engine.join().unwrap().unwrap();
        assert_eq!(summary.records_in, 1800);

        let (checks, failures) = &*checked.lock().unwrap();
        assert!(
            failures.is_empty(),
            "{workers} workers: {}",
            failures.join("\n")
        );
        assert!(
            *checks >= 2 * 10,
            "{workers} workers: only {} snapshots; the test needs many",
            checks / 2
        );
        // The last snapshot holds everything: both formats gave the same tables.
        let conn = duckdb::Connection::open(&path).unwrap();
        for view in views(lateness) {
            let csv_table = format!("events_csv_{}", view.name);
            assert_eq!(read_table(&conn, view.name), read_table(&conn, &csv_table));
            assert!(!read_table(&conn, view.name).is_empty(), "{}", view.name);
        }
    }
}

/// With `idle_timeout`, a silent partition stops holding windows open; a record that then
/// arrives on it for a window that became final meanwhile goes to `_late`. Without it, the
/// silent partition holds every window open and the same record counts.
#[test]
fn idle_partitions_let_windows_close_and_their_late_records_go_to_late() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    let view = ModelView {
        name: "tumbling",
        group_by: &[],
        window: Window::Tumbling(10 * SECOND),
        lateness: 0,
        emit_final: false,
        filtered: false,
        aggregates: vec![Agg::Count],
    };
    let busy: Vec<Msg> = (0..60)
        .map(|s| {
            Msg::Good(Rec {
                key: "a".to_owned(),
                sub: 0,
                value: Some(1),
                score: 0.0,
                flag: true,
                ts: T0 + s * SECOND,
            })
        })
        .collect();
    let Msg::Good(mut straggler) = busy[5].clone() else {
        unreachable!()
    };
    straggler.key = "straggler".to_owned();
    let straggler = Msg::Good(straggler);
    let final_rows = "SELECT count(*) FROM tumbling WHERE is_final";

    for idle_timeout in [Some("1s"), None] {
        let topic = format!("idle_{}", idle_timeout.is_some());
        broker.create_topic(&topic, 2).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.duckdb");
        let idle = idle_timeout.map_or(String::new(), |t| format!("\nidle_timeout = \"{t}\""));
        let text = format!(
            "{}{}[warehouse]\npath = {:?}\nsnapshot_interval = \"50ms\"\n",
            source_toml(&brokers, 0)
                .replace("topic = \"events\"", &format!("topic = \"{topic}\"{idle}")),
            view.toml(),
            path.display().to_string()
        );
        let pipeline = Pipeline::from_toml(&text, "idle").unwrap();
        let source = pipeline.config.sources[0].kafka();
        let mut producer = TopicProducer::new(&brokers, &topic).unwrap();
        for message in &busy {
            producer.send_to(0, &message.payload()).unwrap();
        }
        producer.flush().unwrap();

        let finals = Arc::new(Mutex::new(0i64));
        let seen = Arc::clone(&finals);
        let hook: CommitHook = Arc::new(move |conn, _| {
            *seen.lock().unwrap() = conn.query_row(final_rows, [], |r| r.get(0)).unwrap();
        });
        let control = SourceControl::new();
        let engine_control = Arc::clone(&control);
        let options = RunOptions {
            workers: 2,
            exit_at_end: false,
            progress: false,
            cluster: None,
            observe: None,
            serve_sql: None,
            on_commit: Some(hook),
        };
        let engine = std::thread::spawn(move || run(&pipeline, options, engine_control));
        // Partition 1 stays silent. With the timeout it becomes idle after a second, and the
        // windows of partition 0 close; partition 0 keeps sending (one record per 100 ms, event
        // time moving on) so that it is not idle itself (when all partitions are idle the
        // watermark stays). Without the timeout nothing can close. Bounded waits either way.
        let started = Instant::now();
        let mut clock = 60;
        loop {
            let waited = started.elapsed();
            let closed = *finals.lock().unwrap() > 0;
            match idle_timeout {
                Some(_) if closed || waited > Duration::from_secs(30) => break,
                None if waited > Duration::from_millis(1500) => break,
                Some(_) => {
                    let Msg::Good(mut rec) = busy[0].clone() else {
                        unreachable!()
                    };
                    rec.ts = T0 + clock * SECOND;
                    clock += 1;
                    producer.send_to(0, &Msg::Good(rec).payload()).unwrap();
                    producer.flush().unwrap();
                }
                None => {}
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        producer.send_to(1, &straggler.payload()).unwrap();
        producer.flush().unwrap();
        control.set_end_offsets(
            &topic,
            tidewater_connectors::kafka::high_watermarks(&source).unwrap(),
        );
        engine.join().unwrap().unwrap();

        let partitions = [busy.clone(), vec![straggler.clone()]];
        let conn = duckdb::Connection::open(&path).unwrap();
        let late = read_late(
            &conn,
            i64::MAX,
            Origin {
                topic: &topic,
                source: "events",
            },
        );
        let table = read_table(&conn, "tumbling");
        let first_window = &table[0];
        match idle_timeout {
            Some(_) => {
                // Partition 0's watermark passed 59 s: at least the windows ending by then
                // are final, the first one among them.
                let finals: i64 = conn.query_row(final_rows, [], |r| r.get(0)).unwrap();
                assert!(finals >= 5, "{table:?}");
                assert_eq!(first_window[3], Cell::Bool(true), "{table:?}");
                assert_eq!(
                    late,
                    [("tumbling".to_owned(), 1, 0, T0)].into_iter().collect(),
                    "the straggler's window was final: it goes to _late"
                );
                assert_eq!(first_window[2], Cell::Int(10), "{table:?}");
            }
            None => {
                // The silent partition held everything open, so the straggler counts; the
                // watermark is then the straggler's own (5 s): nothing is final yet.
                let expected = expected(
                    std::slice::from_ref(&view),
                    &partitions,
                    &[(0, 60), (1, 1)].into_iter().collect(),
                    0,
                    T0 + 5 * SECOND,
                );
                assert_eq!(table, expected.tables["tumbling"]);
                assert!(late.is_empty(), "{late:?}");
                assert_eq!(first_window[2], Cell::Int(11), "{table:?}");
            }
        }
    }
}

/// Partition alignment with one partition that has only a few early records and then nothing:
/// once its reader is at the end of the log it must hold nobody back (before, the others were
/// paused for ever behind it), while the two busy partitions are kept within the allowed drift
/// of each other. The result equals the model at every snapshot.
#[test]
fn a_partition_at_its_end_holds_nobody_back_and_alignment_changes_no_result() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    let (ooo, lateness) = (2 * SECOND, 2 * SECOND);
    let record = |key: &str, seconds: i64| {
        Msg::Good(Rec {
            key: key.to_owned(),
            sub: seconds % 3,
            value: Some(seconds % 7),
            score: 0.5,
            flag: seconds % 2 == 0,
            ts: T0 + seconds * SECOND,
        })
    };
    // Partition 0: five records in the first five seconds. Partitions 1 and 2: 400 seconds.
    let partitions: Vec<Vec<Msg>> = vec![
        (0..5).map(|s| record("early", s)).collect(),
        (0..400).map(|s| record("b", s)).collect(),
        (0..400)
            .map(|s| record(["c", "d"][s as usize % 2], s))
            .collect(),
    ];
    let topic = "skewed";
    broker.create_topic(topic, 3).unwrap();
    let mut producer = TopicProducer::new(&brokers, topic).unwrap();
    for (p, messages) in partitions.iter().enumerate() {
        for message in messages {
            producer.send_to(p as i32, &message.payload()).unwrap();
        }
    }
    producer.flush().unwrap();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    let mut text = source_toml(&brokers, ooo).replace(
        "topic = \"events\"",
        "topic = \"skewed\"\npoll_batch = 16\nmax_partition_drift = \"5s\"",
    );
    let model = views(lateness);
    for view in &model {
        text.push_str(&view.toml());
    }
    text.push_str(&format!(
        "[warehouse]\npath = {:?}\nsnapshot_interval = \"50ms\"\n",
        path.display().to_string()
    ));
    let pipeline = Pipeline::from_toml(&text, "skewed").unwrap();

    let checked = Arc::new(Mutex::new((0usize, Vec::<String>::new())));
    let hook_checked = Arc::clone(&checked);
    let hook_partitions = partitions.clone();
    let watermark = Mutex::new(i64::MIN);
    let hook: CommitHook = Arc::new(move |conn, info| {
        let stored = Origin {
            topic,
            source: "events",
        };
        let offsets = read_offsets(conn, info.snapshot_id, stored);
        let mut previous = watermark.lock().unwrap();
        *previous = next_watermark(*previous, &hook_partitions, &offsets, ooo);
        let expected = expected(&model, &hook_partitions, &offsets, ooo, *previous);
        record_check(&hook_checked, || {
            assert_snapshot_matches(conn, info.snapshot_id, &expected, stored, topic)
        });
    });
    let control = SourceControl::new();
    let engine_control = Arc::clone(&control);
    let options = RunOptions {
        workers: 2,
        exit_at_end: true,
        progress: false,
        cluster: None,
        observe: None,
        serve_sql: None,
        on_commit: Some(hook),
    };
    let engine = std::thread::spawn(move || run(&pipeline, options, engine_control));
    let started = Instant::now();
    while !engine.is_finished() && started.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stalled = !engine.is_finished();
    control.request_stop();
    let summary = engine.join().unwrap().unwrap();
    assert!(!stalled, "the run did not get to the end within 60 s");
    assert_eq!(summary.records_in, 805);
    let (checks, failures) = &*checked.lock().unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(*checks >= 2, "only {checks} snapshots");
}
