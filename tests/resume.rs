//! Exactly-once through restarts, in-process: a run stopped part-way (as Ctrl-C/SIGTERM stops
//! it: a last snapshot, then a clean exit) and started again on the same warehouse, several
//! times, ends with the same tables as one uninterrupted run. The kill -9 version of this test,
//! with the engine as a child process, is `tests/chaos.rs`.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use tidewater::{run, CommitHook};
use tidewater_connectors::{EmbeddedBroker, SourceControl};

#[test]
fn stopped_and_resumed_runs_equal_an_uninterrupted_run_with_1_and_3_workers() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("resume", 4).unwrap();
    let messages = produce_turnstile_topic(&brokers, "resume", 30_000, 3);

    let dir = tempfile::tempdir().unwrap();
    let (records_in, expected) = uninterrupted_contents(&brokers, "resume", dir.path());
    assert_eq!(records_in, messages as u64);
    assert!(expected["_late"].len() > 10, "the feed has late records");
    assert!(!expected["_rejects"].is_empty());

    for workers in [1, 3] {
        let path = dir.path().join(format!("resumed_{workers}.duckdb"));
        let pipeline = turnstile_pipeline(&brokers, "resume", &path);
        let mut runs = 0;
        loop {
            runs += 1;
            assert!(
                runs <= 40,
                "{workers} workers: the runs do not get to the end"
            );
            // A stop as Ctrl-C does it: the sources close their epoch, a last snapshot commits.
            let control = SourceControl::new();
            let stopper = Arc::clone(&control);
            // Stop once about a sixth of the topic (varying a little) has been committed.
            let committed = Arc::new(AtomicU64::new(0));
            let stop_at = (messages as u64 / 6) * (2 + runs % 3) / 3;
            let hook: CommitHook = Arc::new(move |_, info| {
                let before = committed.fetch_add(info.records_in, Ordering::Relaxed);
                if before < stop_at && before + info.records_in >= stop_at {
                    stopper.request_stop();
                }
            });
            run(
                &pipeline,
                to_the_end(workers, Some(hook)),
                Arc::clone(&control),
            )
            .unwrap();
            // A clean stop leaves a checkpoint: the next start has nothing to replay.
            let last_is_checkpoint: Option<bool> = open_warehouse(&path)
                .query_row(
                    "SELECT checkpoint FROM _snapshots ORDER BY snapshot_id DESC LIMIT 1",
                    [],
                    |r| r.get(0),
                )
                .ok();
            assert_eq!(last_is_checkpoint, Some(true), "run {runs}");
            if !control.stop_requested() {
                break; // this run reached the end of the topic by itself
            }
        }
        // Sources read ahead of the dataflow, so a stopped run may commit most of the topic in
        // its last snapshot; at least one restart must have had something left to do.
        assert!(
            runs >= 2,
            "{workers} workers: only {runs} run; the test needs restarts"
        );
        eprintln!("{workers} workers: {runs} runs");
        assert_same_contents(
            &warehouse_contents(&path),
            &expected,
            &format!("{workers} workers, {runs} runs"),
        );
        let conn = open_warehouse(&path);
        let (snapshots, last, checkpoints): (i64, i64, i64) = conn
            .query_row(
                "SELECT count(*), max(snapshot_id), count(*) FILTER (WHERE checkpoint) FROM _snapshots",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        assert_eq!(snapshots, last, "snapshot ids continue across restarts");
        assert!(checkpoints >= 2, "{checkpoints} checkpoints");
        let records: i64 = conn
            .query_row("SELECT sum(records_in)::BIGINT FROM _snapshots", [], |r| {
                r.get(0)
            })
            .unwrap();
        assert_eq!(records, messages as i64, "every record counted once");
    }
}

#[test]
fn a_warehouse_of_another_pipeline_definition_is_refused() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("definition", 2).unwrap();
    produce_turnstile_topic(&brokers, "definition", 2_000, 5);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    let pipeline = turnstile_pipeline(&brokers, "definition", &path);
    run(&pipeline, to_the_end(1, None), SourceControl::new()).unwrap();
    let before = warehouse_contents(&path);

    let mut changed = pipeline.config.clone();
    changed.views[0].allowed_lateness = "3h".parse().unwrap();
    let changed = tidewater::Pipeline::new(changed).unwrap();
    let error = run(&changed, to_the_end(1, None), SourceControl::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("different pipeline definition")
            && error.contains("allowed_lateness = \"2h\"")
            && error.contains("allowed_lateness = \"3h\""),
        "{error}"
    );
    assert_eq!(warehouse_contents(&path), before, "nothing was written");

    // The same definition with other brokers settings and intervals resumes (nothing to do).
    let mut moved = pipeline.config.clone();
    moved.sources[0].poll_batch = 7;
    moved.warehouse.snapshot_interval = "20ms".parse().unwrap();
    let summary = run(
        &tidewater::Pipeline::new(moved).unwrap(),
        to_the_end(1, None),
        SourceControl::new(),
    )
    .unwrap();
    assert_eq!(summary.snapshots, 0, "nothing new to commit");
    assert_eq!(warehouse_contents(&path), before);
}
