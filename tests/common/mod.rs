//! Helpers shared by the integration tests: an embedded broker with a topic, an independent
//! reader of the topic, an independent oracle of the station view, and warehouse readers.
#![allow(dead_code)]

pub mod model;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use duckdb::Connection;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use tidewater::Pipeline;
use tidewater_connectors::produce::TopicProducer;
use tidewater_connectors::{GeneratorConfig, TurnstileGenerator};
use tidewater_dataflows::Reading;

pub const HOUR_US: i64 = 3_600_000_000;

/// Group of the view: (window_start in µs, station).
pub type Group = (i64, String);
/// Aggregates of a group: (readings, entries, exits).
pub type Totals = (i64, i64, i64);
pub type View = BTreeMap<Group, Totals>;

/// One message as it sits in the topic.
#[derive(Clone, Debug)]
pub struct TopicMessage {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
}

/// Kills a child process when the test ends, however it ends.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `pipeline` on a thread of its own until its sources are told to end (see
/// [`end_at_current_offsets`]) or to stop.
pub fn spawn_engine(
    pipeline: &Pipeline,
    options: tidewater::RunOptions,
) -> (
    std::sync::Arc<tidewater_connectors::SourceControl>,
    std::thread::JoinHandle<Result<tidewater::RunSummary, tidewater::EngineError>>,
) {
    let control = tidewater_connectors::SourceControl::new();
    let (pipeline, engine_control) = (pipeline.clone(), std::sync::Arc::clone(&control));
    let engine = std::thread::spawn(move || tidewater::run(&pipeline, options, engine_control));
    (control, engine)
}

/// Tells a running engine to end at the current end of `pipeline`'s first source, as
/// `--exit-at-end` would from now on: it commits a last snapshot and returns.
pub fn end_at_current_offsets(control: &tidewater_connectors::SourceControl, pipeline: &Pipeline) {
    let source = pipeline.config.sources[0].kafka();
    let ends = tidewater_connectors::kafka::high_watermarks(&source).expect("high watermarks");
    control.set_end_offsets(&source.topic, ends);
}

pub fn readings(count: usize, seed: u64, late_fraction: f64) -> Vec<Reading> {
    // Readings 5 s apart on average: a test feed spans many hourly windows.
    TurnstileGenerator::new(GeneratorConfig {
        seed,
        late_fraction,
        mean_gap_us: 5_000_000,
        ..Default::default()
    })
    .take(count)
    .collect()
}

/// Deterministic Fisher-Yates shuffle (so that windows receive many late readings).
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    for i in (1..items.len()).rev() {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let j = ((state >> 33) % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}

/// Produces `(key, payload)` messages and waits until all are delivered.
pub fn produce(brokers: &str, topic: &str, messages: &[(Option<String>, Vec<u8>)]) {
    let mut producer = TopicProducer::new(brokers, topic).expect("producer");
    send_all(&mut producer, messages);
}

/// Sends keyed messages and waits until the broker has them all.
pub fn send_all(producer: &mut TopicProducer, messages: &[(Option<String>, Vec<u8>)]) {
    for (key, payload) in messages {
        producer
            .send(key.as_deref().map(str::as_bytes), payload)
            .expect("send");
    }
    producer.flush().expect("flush");
}

pub fn reading_messages(readings: &[Reading]) -> Vec<(Option<String>, Vec<u8>)> {
    readings
        .iter()
        .map(|r| (Some(r.turnstile_id()), r.to_json().into_bytes()))
        .collect()
}

/// Reads the whole topic with a plain rdkafka consumer, independently of the engine.
pub fn read_topic(brokers: &str, topic: &str, expected: usize) -> Vec<TopicMessage> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "tidewater-test-reader")
        .set("enable.auto.commit", "false")
        .create()
        .expect("consumer");
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(5))
        .expect("metadata");
    let mut assignment = TopicPartitionList::new();
    for partition in metadata.topics()[0].partitions() {
        assignment
            .add_partition_offset(topic, partition.id(), Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).expect("assign");
    let mut messages = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while messages.len() < expected && std::time::Instant::now() < deadline {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            messages.push(TopicMessage {
                partition: m.partition(),
                offset: m.offset(),
                payload: m.payload().unwrap_or_default().to_vec(),
            });
        }
    }
    assert_eq!(
        messages.len(),
        expected,
        "could not read back the whole topic"
    );
    messages
}

/// The oracle of the hourly view over the messages below a snapshot's offsets (partition → next
/// offset; a partition the snapshot does not name contributes nothing).
pub fn oracle_below(messages: &[TopicMessage], offsets: &BTreeMap<i32, i64>) -> View {
    let below = messages
        .iter()
        .filter(|m| {
            offsets
                .get(&m.partition)
                .is_some_and(|next| m.offset < *next)
        })
        .map(|m| m.payload.as_slice());
    oracle(below, HOUR_US)
}

/// The oracle: the station view recomputed from raw payloads with serde_json and plain maps.
/// Payloads that are not a complete, well-typed reading are skipped (the engine rejects them).
pub fn oracle<'a>(payloads: impl IntoIterator<Item = &'a [u8]>, window_us: i64) -> View {
    let mut view = View::new();
    for payload in payloads {
        let Ok(value) = serde_json::from_slice::<serde_json::Value>(payload) else {
            continue;
        };
        let text = |f: &str| value.get(f).and_then(|v| v.as_str()).map(str::to_owned);
        let count = |f: &str| value.get(f).and_then(|v| v.as_i64()).filter(|n| *n >= 0);
        let strings_ok = ["ca", "unit", "scp", "linename", "division", "desc"]
            .iter()
            .all(|f| text(f).is_some());
        let (Some(station), Some(ts), Some(entries), Some(exits)) = (
            text("station"),
            text("ts"),
            count("entries"),
            count("exits"),
        ) else {
            continue;
        };
        let Ok(ts) = chrono::DateTime::parse_from_rfc3339(&ts) else {
            continue;
        };
        if !strings_ok {
            continue;
        }
        let start = ts.timestamp_micros().div_euclid(window_us) * window_us;
        let totals = view.entry((start, station)).or_insert((0, 0, 0));
        totals.0 += 1;
        totals.1 += entries;
        totals.2 += exits;
    }
    view
}

/// The view table as committed, read with SQL; also checks `window_end = window_start + size`.
pub fn read_view(conn: &Connection, table: &str, window_us: i64) -> View {
    let sql = format!("SELECT epoch_us(window_start), epoch_us(window_end), station, readings, entries::BIGINT, exits::BIGINT FROM {table}");
    let mut statement = conn.prepare(&sql).unwrap();
    let mut rows = statement.query([]).unwrap();
    let mut view = View::new();
    while let Some(row) = rows.next().unwrap() {
        let (start, end): (i64, i64) = (row.get(0).unwrap(), row.get(1).unwrap());
        assert_eq!(end - start, window_us, "window_end of a row");
        let previous = view.insert(
            (start, row.get(2).unwrap()),
            (
                row.get(3).unwrap(),
                row.get(4).unwrap(),
                row.get(5).unwrap(),
            ),
        );
        assert!(previous.is_none(), "a group appears twice in {table}");
    }
    view
}

pub fn open_warehouse(path: &Path) -> Connection {
    Connection::open(path).expect("open warehouse")
}

/// Offsets recorded with one snapshot: partition → next offset.
pub fn snapshot_offsets(conn: &Connection, snapshot_id: i64) -> BTreeMap<i32, i64> {
    let mut statement = conn
        .prepare("SELECT \"partition\", next_offset FROM _offsets WHERE snapshot_id = ?")
        .unwrap();
    let rows = statement
        .query_map([snapshot_id], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap();
    rows.map(Result::unwrap).collect()
}

/// The turnstile schema of the generator's JSON readings, as a pipeline file declares it.
pub const TURNSTILE_SCHEMA: &str = r#"schema = [
    { name = "ca", type = "string" },
    { name = "unit", type = "string" },
    { name = "scp", type = "string" },
    { name = "station", type = "string" },
    { name = "linename", type = "string" },
    { name = "division", type = "string" },
    { name = "ts", type = "timestamp" },
    { name = "desc", type = "string" },
    { name = "entries", type = "int" },
    { name = "exits", type = "int" },
]"#;

/// A pipeline with one view, `station_hourly` (readings, entries, exits per station and hour),
/// that accepts any lateness, so its final state depends only on the records read.
pub fn pipeline(
    brokers: &str,
    topic: &str,
    warehouse: &Path,
    snapshot_interval_ms: u64,
) -> Pipeline {
    let source = format!("brokers = \"{brokers}\"\ntopic = \"{topic}\"");
    station_hourly_pipeline(&source, warehouse, snapshot_interval_ms)
}

/// The `station_hourly` pipeline of [`pipeline`] over any source: `source` holds the source's
/// own lines (`brokers`/`topic`, or `path`/`chunks`/`format`).
pub fn station_hourly_pipeline(
    source: &str,
    warehouse: &Path,
    snapshot_interval_ms: u64,
) -> Pipeline {
    let text = format!(
        r#"
[[sources]]
name = "turnstiles"
{source}
event_time = "ts"
{TURNSTILE_SCHEMA}

[[views]]
name = "station_hourly"
group_by = ["station"]
window = {{ type = "tumbling", size = "1h" }}
allowed_lateness = "100000d"
aggregates = [
    {{ column = "readings", fn = "count" }},
    {{ column = "entries", fn = "sum", field = "entries" }},
    {{ column = "exits", fn = "sum", field = "exits" }},
]

[warehouse]
path = {path:?}
snapshot_interval = "{snapshot_interval_ms}ms"
"#,
        path = warehouse.display().to_string()
    );
    Pipeline::from_toml(&text, "test pipeline").expect("test pipeline is valid")
}

/// Compares two views and reports the first differences readably.
pub fn assert_views_equal(actual: &View, expected: &View, context: &str) {
    if actual == expected {
        return;
    }
    let missing: Vec<_> = expected
        .iter()
        .filter(|(k, v)| actual.get(*k) != Some(v))
        .take(5)
        .collect();
    let extra: Vec<_> = actual
        .iter()
        .filter(|(k, v)| expected.get(*k) != Some(v))
        .take(5)
        .collect();
    panic!(
        "{context}: view differs from the oracle ({} rows vs {} expected)\n expected but not found: {missing:?}\n found but not expected: {extra:?}",
        actual.len(),
        expected.len()
    );
}

/// Views of [`turnstile_pipeline`] with a change table: one with late updates, one whose rows
/// are deleted (sessions merge), one without a window.
pub const VIEWS_WITH_CHANGES: [&str; 3] =
    ["station_hourly", "turnstile_sessions", "division_totals"];

/// The demo's turnstile pipeline (all its views) reading `topic` at `brokers` into `warehouse`,
/// with short snapshot and checkpoint intervals so that a short run has many of each. Some
/// views keep change tables, so that every test of restarts, faults and clusters also checks
/// them (see [`warehouse_contents`]).
pub fn turnstile_pipeline(brokers: &str, topic: &str, warehouse: &Path) -> Pipeline {
    let mut pipeline = tidewater::demo::demo_pipeline(brokers, warehouse);
    pipeline.config.sources[0].topic = topic.to_owned();
    pipeline.config.sources[0].poll_batch = 512;
    for view in &mut pipeline.config.views {
        view.changes = VIEWS_WITH_CHANGES.contains(&view.name.as_str());
    }
    pipeline.config.warehouse.snapshot_interval = "50ms".parse().unwrap();
    pipeline.config.warehouse.checkpoint_interval = "200ms".parse().unwrap();
    Pipeline::new(pipeline.config).expect("the demo pipeline is valid")
}

/// Generated readings (many late ones) with malformed messages mixed in, produced to `topic`.
/// Returns how many messages the topic holds.
pub fn produce_turnstile_topic(brokers: &str, topic: &str, count: usize, seed: u64) -> usize {
    let messages = turnstile_messages(count, seed);
    produce(brokers, topic, &messages);
    messages.len()
}

/// The messages of [`produce_turnstile_topic`]: `(key, payload)`.
pub fn turnstile_messages(count: usize, seed: u64) -> Vec<(Option<String>, Vec<u8>)> {
    let mut messages = reading_messages(&readings(count, seed, 0.05));
    for i in 0..count / 2_000 {
        let bad = match i % 3 {
            0 => b"{\"station\": ".to_vec(),
            1 => b"{\"ca\":\"A\",\"ts\":\"not a time\"}".to_vec(),
            _ => vec![0xff, 0x00, 0x17],
        };
        messages.insert(i * 2_000 + 17, (Some(format!("bad-{i}")), bad));
    }
    messages
}

/// Everything a restart must reproduce exactly: every view table, `_late` and `_rejects`
/// (without snapshot ids, which depend on how the run was cut), rows as text, sorted. Change
/// tables depend on how the run was cut too: they are checked with
/// [`assert_change_table_consistent`] instead of being compared.
pub fn warehouse_contents(path: &Path) -> BTreeMap<String, Vec<String>> {
    let conn = Connection::open(path).expect("open warehouse");
    let changes: Vec<String> = conn
        .prepare("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_name LIKE '%\\_\\_changes' ESCAPE '\\'")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    for table in changes {
        let view = table.trim_end_matches("__changes");
        assert_change_table_consistent(&conn, view, path);
    }
    let tables: Vec<String> = conn
        .prepare("SELECT table_name FROM information_schema.tables WHERE table_schema = 'main' AND table_type = 'BASE TABLE' AND table_name NOT LIKE '%\\_\\_changes' ESCAPE '\\' AND (table_name NOT LIKE '\\_%' ESCAPE '\\' OR table_name IN ('_late', '_rejects')) ORDER BY 1")
        .unwrap()
        .query_map([], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut contents = BTreeMap::new();
    for table in tables {
        let select = if table.starts_with('_') {
            format!("SELECT * EXCLUDE (snapshot_id) FROM {table} ORDER BY ALL")
        } else {
            format!("SELECT * FROM {table} ORDER BY ALL")
        };
        let mut statement = conn.prepare(&select).unwrap();
        let mut rows = statement.query([]).unwrap();
        let mut lines = Vec::new();
        while let Some(row) = rows.next().unwrap() {
            let columns = row.as_ref().column_count();
            let cells: Vec<String> = (0..columns)
                .map(|i| format!("{:?}", row.get::<_, duckdb::types::Value>(i).unwrap()))
                .collect();
            lines.push(cells.join(" | "));
        }
        contents.insert(table, lines);
    }
    contents
}

/// A change table that neither lost nor doubled a snapshot: summed up to any snapshot, every
/// row of the view counts 0 or 1 times, and summed up to the last one it is the view table.
pub fn assert_change_table_consistent(conn: &Connection, view: &str, path: &Path) {
    let columns: Vec<String> = conn
        .prepare("SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' AND table_name = ? ORDER BY column_index")
        .unwrap()
        .query_map([view], |row| row.get(0))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert!(!columns.is_empty(), "{}: no view {view}", path.display());
    let columns = columns.join(", ");
    let running_outside: i64 = conn
        .query_row(
            &format!(
                "SELECT count(*) FROM (SELECT sum(diff) OVER (PARTITION BY {columns} ORDER BY snapshot_id) AS running FROM (SELECT snapshot_id, {columns}, sum(diff) AS diff FROM {view}__changes GROUP BY ALL)) WHERE running NOT IN (0, 1)"
            ),
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        running_outside,
        0,
        "{}: rows of {view}__changes count other than 0 or 1 times as of some snapshot",
        path.display()
    );
    let differing: i64 = conn
        .query_row(
            &format!(
                "WITH summed AS (SELECT {columns} FROM {view}__changes GROUP BY {columns} HAVING sum(diff) > 0) SELECT count(*) FROM ((FROM summed EXCEPT ALL FROM {view}) UNION ALL (FROM {view} EXCEPT ALL FROM summed))"
            ),
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(
        differing,
        0,
        "{}: {view}__changes summed is not the table {view}",
        path.display()
    );
}

/// Compares two warehouses' contents table by table, showing the first differing rows.
pub fn assert_same_contents(
    actual: &BTreeMap<String, Vec<String>>,
    expected: &BTreeMap<String, Vec<String>>,
    context: &str,
) {
    assert_eq!(
        actual.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "{context}: tables"
    );
    let counts: Vec<String> = expected
        .iter()
        .map(|(table, rows)| format!("{table}: {} (expected {})", actual[table].len(), rows.len()))
        .collect();
    for (table, rows) in expected {
        let found = &actual[table];
        if found != rows {
            eprintln!("{context}: rows per table: {}", counts.join(", "));
            let missing: Vec<_> = rows.iter().filter(|r| !found.contains(r)).take(3).collect();
            let extra: Vec<_> = found.iter().filter(|r| !rows.contains(r)).take(3).collect();
            // Rows are sorted: equal neighbours are rows found more often than expected.
            let repeated: Vec<_> = found
                .windows(2)
                .filter(|pair| pair[0] == pair[1])
                .filter(|pair| rows.iter().filter(|r| **r == pair[0]).count() < 2)
                .map(|pair| &pair[0])
                .take(5)
                .collect();
            panic!(
                "{context}: table {table} has {} rows, {} expected\n expected, not found: {missing:#?}\n found, not expected: {extra:#?}\n found more often than expected: {repeated:#?}",
                found.len(),
                rows.len()
            );
        }
    }
}

/// Run options of a bounded run: it stops at the end of the topic as it is at start
/// (`--exit-at-end`), without a progress line.
pub fn to_the_end(
    workers: usize,
    on_commit: Option<tidewater::CommitHook>,
) -> tidewater::RunOptions {
    tidewater::RunOptions {
        workers,
        exit_at_end: true,
        progress: false,
        cluster: None,
        observe: None,
        serve_sql: None,
        on_commit,
    }
}

/// One uninterrupted run (2 workers) of the turnstile pipeline over `topic`, into
/// `dir/<topic>_reference.duckdb`: what disturbed runs must end equal to. Returns the records it
/// read and the contents it left.
pub fn uninterrupted_contents(
    brokers: &str,
    topic: &str,
    dir: &Path,
) -> (u64, BTreeMap<String, Vec<String>>) {
    let path = dir.join(format!("{topic}_reference.duckdb"));
    let summary = tidewater::run(
        &turnstile_pipeline(brokers, topic, &path),
        to_the_end(2, None),
        tidewater_connectors::SourceControl::new(),
    )
    .expect("the uninterrupted run");
    (summary.records_in, warehouse_contents(&path))
}

pub fn free_loopback_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Waits for a child process at most `limit`; `None` if it is still running.
pub fn wait_at_most(
    child: &mut std::process::Child,
    limit: std::time::Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
