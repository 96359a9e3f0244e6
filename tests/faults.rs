//! Faults the engine survives without losing or doubling data: the broker going away and coming
//! back mid-run, and the warehouse's disk filling up mid-run (then a restart once there is
//! room). Each run ends with the tables of an undisturbed run.

mod common;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tidewater::{run, CommitHook};
use tidewater_connectors::{EmbeddedBroker, SourceControl};

#[test]
fn a_broker_outage_mid_run_changes_nothing() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("outage", 4).unwrap();
    let messages = produce_turnstile_topic(&brokers, "outage", 40_000, 13);
    let dir = tempfile::tempdir().unwrap();
    let (_, expected) = uninterrupted_contents(&brokers, "outage", dir.path());

    let path = dir.path().join("outage.duckdb");
    let pipeline = turnstile_pipeline(&brokers, "outage", &path);
    let commits = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&commits);
    let hook: CommitHook = Arc::new(move |_, _| {
        counted.fetch_add(1, Ordering::Relaxed);
    });
    let engine =
        std::thread::spawn(move || run(&pipeline, to_the_end(2, Some(hook)), SourceControl::new()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while commits.load(Ordering::Relaxed) < 3 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    broker.set_available(false).unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let during = commits.load(Ordering::Relaxed);
    broker.set_available(true).unwrap();
    let summary = engine.join().unwrap().unwrap();
    assert!(
        !engine_finished_before(during, &summary),
        "the outage came too late to matter"
    );
    assert_eq!(summary.records_in, messages as u64);
    assert_same_contents(
        &warehouse_contents(&path),
        &expected,
        "after a broker outage",
    );
}

/// Whether the run had committed everything before the outage ended (then it tested nothing).
fn engine_finished_before(commits_during_outage: u64, summary: &tidewater::RunSummary) -> bool {
    commits_during_outage >= summary.snapshots
}

#[test]
fn a_full_disk_stops_the_run_cleanly_and_a_restart_completes_it() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("disk", 4).unwrap();
    let messages = produce_turnstile_topic(&brokers, "disk", 40_000, 17);
    let dir = tempfile::tempdir().unwrap();
    let (_, expected) = uninterrupted_contents(&brokers, "disk", dir.path());

    let path = dir.path().join("disk.duckdb");
    let config = dir.path().join("disk.toml");
    std::fs::write(
        &config,
        turnstile_pipeline(&brokers, "disk", &path).to_toml(),
    )
    .unwrap();
    let tidewater = env!("CARGO_BIN_EXE_tidewater");
    // No file of the process may grow past the limit: writes past it fail as on a full disk.
    // How much the first snapshot writes, and how much the whole job, depends on timing (how
    // records fall into epochs), so the limit grows in small steps until a run commits
    // something before it fails.
    let mut committed = 0;
    for limit_mib in (12u64..=40).step_by(2) {
        for file in [path.clone(), dir.path().join("disk.duckdb.wal")] {
            let _ = std::fs::remove_file(file);
        }
        let output = Command::new("prlimit")
            .arg(format!("--fsize={}", limit_mib << 20))
            .args([
                tidewater,
                "run",
                "--config",
                config.to_str().unwrap(),
                "--exit-at-end",
            ])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success(),
            "the run should stop at {limit_mib} MiB (the job wrote less than that, and no smaller limit let a snapshot commit first):\n{stderr}"
        );
        let errors: Vec<&str> = stderr
            .lines()
            .filter(|l| l.starts_with("tidewater: error:"))
            .collect();
        assert_eq!(errors.len(), 1, "one clear error line:\n{stderr}");
        assert!(
            errors[0].contains(&path.display().to_string())
                && errors[0].to_lowercase().contains("too large"),
            "{}",
            errors[0]
        );
        // What was committed is intact.
        committed = open_warehouse(&path)
            .query_row("SELECT count(*) FROM _snapshots", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap();
        if committed > 0 {
            break;
        }
    }
    assert!(
        committed > 0,
        "no snapshot was committed before the disk filled"
    );

    // A restart with room to write finishes the job.
    let output = Command::new(tidewater)
        .args(["run", "--config", config.to_str().unwrap(), "--exit-at-end"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let records: i64 = open_warehouse(&path)
        .query_row("SELECT sum(records_in)::BIGINT FROM _snapshots", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(records, messages as i64);
    assert_same_contents(
        &warehouse_contents(&path),
        &expected,
        "after a full disk and a restart",
    );
}

/// Offsets a restart needs that the broker deleted meanwhile (the embedded broker keeps only
/// the newest 5 MiB of a partition): with `offset_reset = "error"` (the default) the run stops
/// with a clear error; with `earliest` it goes on from the earliest retained offset and records
/// the skipped range in `_snapshots.offsets_skipped`.
#[test]
fn offsets_lost_while_stopped_are_an_error_or_skipped_by_policy() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("retention", 1).unwrap();
    let first = readings(10_000, 21, 0.0);
    produce(&brokers, "retention", &reading_messages(&first));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    let mut config = pipeline(&brokers, "retention", &path, 20).config;
    // Every snapshot a checkpoint: the restart needs exactly the last snapshot's offsets.
    config.warehouse.checkpoint_interval = "20ms".parse().unwrap();
    let mut pipeline = tidewater::Pipeline::new(config).unwrap();
    run(&pipeline, to_the_end(2, None), SourceControl::new()).unwrap();

    // ~7 MiB more: everything the checkpoint needs is deleted.
    let more = readings(35_000, 22, 0.0);
    produce(&brokers, "retention", &reading_messages(&more));
    let error = run(&pipeline, to_the_end(2, None), SourceControl::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("partition 0 of topic `retention`")
            && error.contains("no longer in the topic"),
        "{error}"
    );

    pipeline.config.sources[0].offset_reset = tidewater_connectors::OffsetReset::Earliest;
    let pipeline = tidewater::Pipeline::new(pipeline.config).unwrap();
    run(&pipeline, to_the_end(2, None), SourceControl::new()).unwrap();
    let conn = open_warehouse(&path);
    let skipped: Vec<String> = conn
        .prepare("SELECT offsets_skipped FROM _snapshots WHERE offsets_skipped IS NOT NULL")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(skipped.len(), 1, "{skipped:?}");
    assert!(
        skipped[0].starts_with("retention partition 0: offsets ")
            && skipped[0].contains("skipped (earliest"),
        "{skipped:?}"
    );
    let (low, high) =
        tidewater_connectors::kafka::fetch_watermarks(&pipeline.config.sources[0].kafka()).unwrap()
            [&0];
    let records: i64 = conn
        .query_row(
            "SELECT sum(readings)::BIGINT FROM station_hourly",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        records,
        first.len() as i64 + (high - low),
        "the first run's records, then everything still retained"
    );
}
