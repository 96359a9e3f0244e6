//! Change tables (`changes = true`): for every snapshot k, summing `diff` over the change rows
//! up to k gives exactly the view as the writer committed it at k (recorded by a commit hook
//! right after each commit, so independently of the change tables), through stops and
//! restarts; `Reader` and `tidewater query --as-of k` show the same rows; retention folds old
//! snapshots away and refuses queries as of them. (Every test of restarts, faults and clusters
//! also checks the change tables of `turnstile_pipeline`, see `common::warehouse_contents`.)

mod common;

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use tidewater::query::run_query;
use tidewater::{CommitHook, Pipeline, RunOptions};
use tidewater_connectors::produce::TopicProducer;
use tidewater_connectors::EmbeddedBroker;
use tidewater_sinks::{ReadOptions, Reader, SinkError};

/// Rows of a table as text (`Debug` of each value), sorted: snapshot id → view → rows.
type Recorded = BTreeMap<i64, BTreeMap<String, Vec<String>>>;

type Messages = Vec<(Option<String>, Vec<u8>)>;

/// The demo's views with short intervals, all but the hopping one with change tables, plus a
/// view without key columns (`everything`).
fn pipeline(brokers: &str, topic: &str, warehouse: &Path) -> Pipeline {
    let mut config = turnstile_pipeline(brokers, topic, warehouse).config;
    let mut everything = config.views[config.views.len() - 1].clone();
    everything.name = "everything".to_owned();
    everything.group_by.clear();
    config.views.push(everything);
    for view in &mut config.views {
        view.changes = view.name != "station_busy_15m";
    }
    config.warehouse.snapshot_interval = "10ms".parse().unwrap();
    config.warehouse.checkpoint_interval = "30ms".parse().unwrap();
    Pipeline::new(config).expect("the pipeline is valid")
}

/// Runs `pipeline` while `messages` are produced to its topic in `slices` slices, waiting for a
/// snapshot to be committed after each (so there are at least `slices` snapshots however
/// fast the engine is); the run then ends at the end of the topic, as a stopped run does.
fn run_in_slices(
    pipeline: &Pipeline,
    messages: &[(Option<String>, Vec<u8>)],
    slices: usize,
    hook: CommitHook,
) {
    let source = pipeline.config.sources[0].kafka();
    let commits = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&commits);
    let options = RunOptions {
        workers: 2,
        exit_at_end: false,
        progress: false,
        cluster: None,
        on_commit: Some(Arc::new(move |conn, info| {
            hook(conn, info);
            counted.fetch_add(1, Ordering::SeqCst);
        })),
        observe: None,
        serve_sql: None,
    };
    let (control, engine) = spawn_engine(pipeline, options);
    let mut producer = TopicProducer::new(&source.brokers, &source.topic).unwrap();
    for slice in messages.chunks(messages.len().div_ceil(slices)) {
        let before = commits.load(Ordering::SeqCst);
        send_all(&mut producer, slice);
        let deadline = Instant::now() + Duration::from_secs(30);
        while commits.load(Ordering::SeqCst) == before {
            assert!(!engine.is_finished(), "the engine stopped");
            assert!(
                Instant::now() < deadline,
                "no snapshot within 30 s of a slice"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    end_at_current_offsets(&control, pipeline);
    engine.join().unwrap().unwrap();
}

fn rows_as_text(conn: &duckdb::Connection, sql: &str) -> Vec<String> {
    let mut statement = conn.prepare(sql).unwrap();
    let mut rows = statement.query([]).unwrap();
    let mut lines = Vec::new();
    while let Some(row) = rows.next().unwrap() {
        let cells: Vec<String> = (0..row.as_ref().column_count())
            .map(|i| format!("{:?}", row.get::<_, duckdb::types::Value>(i).unwrap()))
            .collect();
        lines.push(cells.join(" | "));
    }
    lines.sort();
    lines
}

/// A hook that records every view with a change table right after each commit.
fn recording_hook(pipeline: &Pipeline, recorded: &Arc<Mutex<Recorded>>) -> CommitHook {
    let views: Vec<String> = pipeline
        .views
        .iter()
        .filter(|v| v.changes)
        .map(|v| v.name.clone())
        .collect();
    let recorded = Arc::clone(recorded);
    Arc::new(move |conn, info| {
        let tables = views
            .iter()
            .map(|v| (v.clone(), rows_as_text(conn, &format!("SELECT * FROM {v}"))))
            .collect();
        let previous = recorded.lock().unwrap().insert(info.snapshot_id, tables);
        assert!(
            previous.is_none(),
            "snapshot {} committed twice",
            info.snapshot_id
        );
    })
}

/// The view as of `k` summed from its change table; every row must sum to exactly 1.
fn summed_changes(
    conn: &duckdb::Connection,
    pipeline: &Pipeline,
    view: &str,
    k: i64,
) -> Vec<String> {
    let spec = pipeline.views.iter().find(|v| v.name == view).unwrap();
    let columns: Vec<&str> = spec.columns.iter().map(|c| c.name.as_str()).collect();
    let columns = columns.join(", ");
    let sql = format!(
        "SELECT {columns}, sum(diff)::BIGINT FROM {view}__changes WHERE snapshot_id <= {k} GROUP BY {columns} HAVING sum(diff) <> 0"
    );
    let mut rows = rows_as_text(conn, &sql);
    for row in &mut rows {
        let (values, sum) = row.rsplit_once(" | ").unwrap();
        assert_eq!(
            sum, "BigInt(1)",
            "{view} as of {k}: a row sums to {sum}: {values}"
        );
        *row = values.to_owned();
    }
    rows
}

/// A reader of the warehouse as of snapshot `k`.
fn reader_as_of(path: &Path, k: i64) -> Result<Reader, SinkError> {
    Reader::open(
        path,
        &ReadOptions {
            as_of: Some(k),
            published: None,
        },
    )
}

/// A view's rows through an as-of reader.
fn read_view_as_of(reader: &Reader, view: &str) -> Result<Vec<String>, SinkError> {
    let result = run_query(reader, &format!("SELECT * FROM {view}"))?;
    let mut rows: Vec<String> = result
        .rows
        .iter()
        .map(|row| {
            let cells: Vec<String> = row.iter().map(|v| format!("{v:?}")).collect();
            cells.join(" | ")
        })
        .collect();
    rows.sort();
    Ok(rows)
}

/// The view as of `k` through the library's as-of reader.
fn read_as_of(path: &Path, view: &str, k: i64) -> Result<Vec<String>, SinkError> {
    read_view_as_of(&reader_as_of(path, k)?, view)
}

/// `tidewater query --as-of k --format json`: station_hourly's rows as JSON objects.
fn cli_station_hourly(path: &Path, k: i64) -> Vec<serde_json::Value> {
    let output = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(["query", "--warehouse", path.to_str().unwrap(), "--as-of"])
        .arg(k.to_string())
        .args(["--format", "json"])
        .arg("SELECT station, epoch_us(window_start) AS start, readings, entries, exits, is_final FROM station_hourly ORDER BY ALL")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// What the CLI query above must print, from the rows recorded at commit time.
fn expected_station_hourly(conn: &duckdb::Connection) -> Vec<serde_json::Value> {
    let mut statement = conn
        .prepare("SELECT station, epoch_us(window_start), readings, entries::BIGINT, exits::BIGINT, is_final FROM station_hourly ORDER BY ALL")
        .unwrap();
    let rows = statement
        .query_map([], |row| {
            Ok(serde_json::json!({
                "station": row.get::<_, String>(0)?,
                "start": row.get::<_, i64>(1)?,
                "readings": row.get::<_, i64>(2)?,
                "entries": row.get::<_, i64>(3)?,
                "exits": row.get::<_, i64>(4)?,
                "is_final": row.get::<_, bool>(5)?,
            }))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

#[test]
fn change_tables_give_every_view_as_of_every_snapshot_through_restarts() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("changes", 3).unwrap();
    let mut messages: Messages = turnstile_messages(6_000, 7);
    // Far out of order: windows get late records, sessions merge.
    shuffle(&mut messages[2_000..2_300], 7);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    let pipeline = pipeline(&broker.bootstrap_servers(), "changes", &path);
    let recorded = Arc::new(Mutex::new(Recorded::new()));
    // The station_hourly rows of some snapshots, in the form the CLI prints them.
    let cli_expected = Arc::new(Mutex::new(BTreeMap::new()));
    let record = recording_hook(&pipeline, &recorded);
    let cli_record = Arc::clone(&cli_expected);
    let hook: CommitHook = Arc::new(move |conn, info| {
        record(conn, info);
        if info.snapshot_id % 7 == 3 {
            cli_record
                .lock()
                .unwrap()
                .insert(info.snapshot_id, expected_station_hourly(conn));
        }
    });
    // Three runs, each stopped at the end of what was produced so far, then resumed.
    for third in messages.chunks(messages.len().div_ceil(3)) {
        run_in_slices(&pipeline, third, 8, Arc::clone(&hook));
    }
    let recorded = recorded.lock().unwrap().clone();
    let conn = open_warehouse(&path);
    let last: i64 = conn
        .query_row("SELECT max(snapshot_id) FROM _snapshots", [], |r| r.get(0))
        .unwrap();
    assert_eq!(
        recorded.keys().copied().collect::<Vec<_>>(),
        (1..=last).collect::<Vec<_>>(),
        "every snapshot recorded once"
    );
    assert!(last >= 24, "only {last} snapshots");
    let deletes: i64 = conn
        .query_row(
            "SELECT count(*) FROM turnstile_sessions__changes WHERE diff < 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert!(deletes > 0, "sessions changed or merged");

    for (k, views) in &recorded {
        let reader = reader_as_of(&path, *k).unwrap();
        for (view, rows) in views {
            let context = format!("{view} as of snapshot {k} of {last}");
            assert_eq!(
                &summed_changes(&conn, &pipeline, view, *k),
                rows,
                "{context}: summed changes"
            );
            assert_eq!(
                &read_view_as_of(&reader, view).unwrap(),
                rows,
                "{context}: as-of reader"
            );
        }
    }
    drop(conn);
    // Also: the last snapshot's sums are the tables as they are now.
    warehouse_contents(&path);

    let cli_expected = cli_expected.lock().unwrap().clone();
    assert!(cli_expected.len() >= 3);
    for (k, rows) in &cli_expected {
        assert_eq!(
            &cli_station_hourly(&path, *k),
            rows,
            "tidewater query --as-of {k}"
        );
    }
    // A view without a change table has no past.
    match read_as_of(&path, "station_busy_15m", last) {
        Err(SinkError::NoHistory { view, .. }) => assert_eq!(view, "station_busy_15m"),
        other => panic!("{other:?}"),
    }
}

/// The pipeline of [`pipeline`] with the given retention of its change tables.
fn retained_pipeline(
    brokers: &str,
    topic: &str,
    warehouse: &Path,
    keep: Option<u64>,
    keep_for: Option<&str>,
) -> Pipeline {
    let mut config = pipeline(brokers, topic, warehouse).config;
    config.warehouse.changes_keep_snapshots = keep.and_then(NonZeroU64::new);
    config.warehouse.changes_keep_for = keep_for.map(|d| d.parse().unwrap());
    Pipeline::new(config).unwrap()
}

#[test]
fn retention_folds_old_snapshots_away_and_refuses_queries_as_of_them() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("retention", 3).unwrap();
    let mut messages: Messages = turnstile_messages(4_000, 11);
    shuffle(&mut messages[1_000..1_200], 11);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("w.duckdb");
    let pipeline = retained_pipeline(&brokers, "retention", &path, Some(2), None);
    let recorded = Arc::new(Mutex::new(Recorded::new()));
    // Two runs: the fold goes on where the first run left it.
    for half in messages.chunks(messages.len().div_ceil(2)) {
        run_in_slices(&pipeline, half, 4, recording_hook(&pipeline, &recorded));
    }
    let recorded = recorded.lock().unwrap().clone();
    let last = *recorded.keys().last().unwrap();
    assert!(last >= 8, "only {last} snapshots");

    let conn = open_warehouse(&path);
    let since: i64 = conn
        .query_row(
            "SELECT since FROM _changes WHERE \"view\" = 'station_hourly'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(since, last - 1, "the last 2 snapshots are kept");
    for view in ["station_hourly", "turnstile_sessions", "everything"] {
        // Up to `since` the history is folded: the rows live at `since`, once each.
        let folded = rows_as_text(
            &conn,
            &format!("SELECT * EXCLUDE (snapshot_id, diff) FROM {view}__changes WHERE snapshot_id <= {since}"),
        );
        assert_eq!(folded, recorded[&since][view], "{view}: folded rows");
        let retracted: i64 = conn
            .query_row(
                &format!("SELECT count(*) FROM {view}__changes WHERE snapshot_id <= {since} AND diff <> 1"),
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(retracted, 0, "{view}");
        for k in [since, last] {
            let rows = &recorded[&k][view];
            assert_eq!(
                &summed_changes(&conn, &pipeline, view, k),
                rows,
                "{view} as of {k}"
            );
            assert_eq!(
                &read_as_of(&path, view, k).unwrap(),
                rows,
                "{view}: reader as of {k}"
            );
        }
    }
    drop(conn);
    warehouse_contents(&path);
    let error = read_as_of(&path, "station_hourly", since - 1)
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("keep snapshots {since} to {last} only")),
        "{error}"
    );
    let output = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(["query", "--warehouse", path.to_str().unwrap(), "--as-of"])
        .arg((since - 1).to_string())
        .arg("SELECT count(*) FROM station_hourly")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success() && stderr.contains("folded away"),
        "{stderr}"
    );

    // By time: "0s" keeps only the snapshot just committed.
    broker.create_topic("by_time", 3).unwrap();
    let by_time = dir.path().join("by_time.duckdb");
    let pipeline = retained_pipeline(&brokers, "by_time", &by_time, None, Some("0s"));
    let recorded = Arc::new(Mutex::new(Recorded::new()));
    run_in_slices(
        &pipeline,
        &messages[..1_000],
        3,
        recording_hook(&pipeline, &recorded),
    );
    let recorded = recorded.lock().unwrap().clone();
    let last = *recorded.keys().last().unwrap();
    assert!(last >= 3, "only {last} snapshots");
    let conn = open_warehouse(&by_time);
    let since: i64 = conn
        .query_row("SELECT max(since) FROM _changes", [], |r| r.get(0))
        .unwrap();
    assert_eq!(since, last);
    assert_eq!(
        summed_changes(&conn, &pipeline, "station_hourly", last),
        recorded[&last]["station_hourly"]
    );
}
