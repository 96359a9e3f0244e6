//! `run --serve`: a real `psql` reads the warehouse while snapshots commit. Every answer is one
//! committed snapshot (checked against the oracle below that snapshot's offsets), writes and
//! escapes from the warehouse are refused and change nothing, and the password is enforced.

mod common;

use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use tidewater::serve_sql::ServeSql;
use tidewater::{run, RunOptions};
use tidewater_connectors::produce::TopicProducer;
use tidewater_connectors::{EmbeddedBroker, SourceControl};

/// Field separator of psql's unaligned output: no station name holds it.
const SEPARATOR: &str = "\u{1f}";

/// `psql -c sql` against the server; `None` when psql is not installed.
fn psql(port: u16, password: Option<&str>, sql: &str) -> Option<Output> {
    let mut command = Command::new("psql");
    command
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args([
            "-U",
            "analyst",
            "-d",
            "warehouse",
            "-X",
            "-A",
            "-t",
            "-F",
            SEPARATOR,
        ])
        .args(["-v", "ON_ERROR_STOP=1", "-c", sql])
        .env("PGCONNECT_TIMEOUT", "5")
        .env("PGSSLMODE", "disable")
        .env_remove("PGPASSWORD");
    if let Some(password) = password {
        command.env("PGPASSWORD", password);
    }
    match command.output() {
        Ok(output) => Some(output),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("psql: {e}"),
    }
}

fn psql_installed() -> bool {
    let installed = Command::new("psql").arg("--version").output().is_ok();
    if !installed {
        assert!(
            std::env::var_os("CI").is_none(),
            "psql is not installed (Debian package postgresql-client); CI needs it"
        );
        eprintln!("skipped: psql is not installed (Debian package postgresql-client)");
    }
    installed
}

/// The view as one statement read it, with the snapshot it read.
fn parse_view(stdout: &[u8]) -> (i64, View) {
    let text = String::from_utf8_lossy(stdout);
    let mut snapshot = None;
    let mut view = View::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(SEPARATOR).collect();
        assert_eq!(fields.len(), 6, "unexpected row {line:?}");
        let snap: i64 = fields[0].parse().unwrap();
        assert!(
            snapshot.is_none_or(|s| s == snap),
            "one statement saw two snapshots"
        );
        snapshot = Some(snap);
        let number = |i: usize| fields[i].parse::<i64>().unwrap();
        view.insert(
            (number(1), fields[2].to_owned()),
            (number(3), number(4), number(5)),
        );
    }
    (snapshot.unwrap_or(0), view)
}

/// Every row of the view with the id of the snapshot the statement saw, in one statement.
const VIEW_WITH_SNAPSHOT: &str = "SELECT (SELECT max(snapshot_id) FROM _snapshots), \
     epoch_us(window_start), station, readings, entries, exits FROM station_hourly";

#[test]
fn psql_reads_committed_snapshots_while_the_engine_runs_and_cannot_write() {
    if !psql_installed() {
        return;
    }
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    let topic = "served";
    broker.create_topic(topic, 3).unwrap();
    let data = readings(6_000, 5, 0.3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warehouse.duckdb");
    let config = pipeline(&brokers, topic, &path, 20);
    let port = free_loopback_port();
    let options = RunOptions {
        workers: 2,
        serve_sql: Some(ServeSql {
            listen: format!("127.0.0.1:{port}"),
            password: None,
        }),
        ..RunOptions::default()
    };
    let (control, engine) = spawn_engine(&config, options);

    // A reader that keeps asking while the readings arrive and snapshots commit.
    let reading = Arc::new(AtomicBool::new(true));
    let reader_flag = Arc::clone(&reading);
    let reader = std::thread::spawn(move || {
        let mut answers = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while reader_flag.load(Ordering::Relaxed)
            && answers.len() < 400
            && Instant::now() < deadline
        {
            let output = psql(port, None, VIEW_WITH_SNAPSHOT).unwrap();
            if output.status.success() {
                answers.push(parse_view(&output.stdout));
            } else {
                // Before the server listens (the engine is still starting).
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        answers
    });

    let mut producer = TopicProducer::new(&brokers, topic).unwrap();
    let messages = reading_messages(&data);
    for slice in messages.chunks(data.len() / 12) {
        send_all(&mut producer, slice);
        std::thread::sleep(Duration::from_millis(150));
    }

    // Writes, and ways out of the warehouse, are refused while the engine runs.
    for statement in [
        "DELETE FROM station_hourly",
        "DROP TABLE station_hourly",
        "UPDATE station_hourly SET readings = 0",
        "CREATE TABLE mine AS SELECT 1",
        "ATTACH '/tmp/elsewhere.duckdb' AS elsewhere",
        "COPY station_hourly TO '/tmp/station_hourly.csv'",
        "INSTALL httpfs",
        "SELECT 1; DELETE FROM station_hourly",
    ] {
        let output = psql(port, None, statement).unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{statement:?} was accepted");
        assert!(
            stderr.contains("read-only"),
            "{statement:?}: unclear refusal {stderr:?}"
        );
    }
    assert!(!std::path::Path::new("/tmp/station_hourly.csv").exists());

    // `tidewater query` finds the running engine's server next to the warehouse it names.
    let query = |sql: &str| {
        Command::new(env!("CARGO_BIN_EXE_tidewater"))
            .args(["query", "--format", "csv", "--warehouse"])
            .arg(&path)
            .arg(sql)
            .output()
            .unwrap()
    };
    let asked = query("SELECT count(*) > 0 AS answered FROM _snapshots");
    assert!(asked.status.success(), "query via the server: {asked:?}");
    assert_eq!(String::from_utf8_lossy(&asked.stdout), "answered\nt\n");
    let refused = query("DELETE FROM station_hourly");
    assert!(
        !refused.status.success(),
        "a write through `tidewater query` was accepted"
    );
    assert!(String::from_utf8_lossy(&refused.stderr).contains("read-only"));

    end_at_current_offsets(&control, &config);
    engine.join().unwrap().unwrap();
    reading.store(false, Ordering::Relaxed);
    let answers = reader.join().unwrap();

    // Every answer equals the oracle below the offsets of the snapshot it saw.
    let messages = read_topic(&brokers, topic, data.len());
    let conn = open_warehouse(&path);
    let snapshots_seen: std::collections::BTreeSet<i64> =
        answers.iter().map(|(snapshot, _)| *snapshot).collect();
    assert!(
        snapshots_seen.len() >= 3,
        "the reader saw only snapshots {snapshots_seen:?}; the test needs several"
    );
    for (snapshot, view) in &answers {
        let offsets = snapshot_offsets(&conn, *snapshot);
        assert_views_equal(
            view,
            &oracle_below(&messages, &offsets),
            &format!("psql at snapshot {snapshot}"),
        );
    }
    // The refused writes changed nothing: the final view is the oracle of every record.
    assert_views_equal(
        &read_view(&conn, "station_hourly", HOUR_US),
        &oracle(messages.iter().map(|m| m.payload.as_slice()), HOUR_US),
        "final view",
    );
    // The server is gone with the run, and so is its address file.
    assert!(!tidewater::serve_sql::address_file_of(&path).exists());
    assert!(!psql(port, None, "SELECT 1").unwrap().status.success());
}

#[test]
fn the_password_is_required_when_set() {
    if !psql_installed() {
        return;
    }
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("guarded", 1).unwrap();
    produce(
        &brokers,
        "guarded",
        &reading_messages(&readings(200, 9, 0.0)),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("warehouse.duckdb");
    let config = pipeline(&brokers, "guarded", &path, 20);
    let port = free_loopback_port();
    let control = SourceControl::new();
    let engine_control = Arc::clone(&control);
    let options = RunOptions {
        serve_sql: Some(ServeSql {
            listen: format!("127.0.0.1:{port}"),
            password: Some("s3cret".to_owned()),
        }),
        ..RunOptions::default()
    };
    let engine = std::thread::spawn(move || run(&config, options, engine_control));
    let deadline = Instant::now() + Duration::from_secs(30);
    let count = loop {
        let output = psql(
            port,
            Some("s3cret"),
            "SELECT sum(readings) FROM station_hourly",
        )
        .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).trim().to_owned();
        if output.status.success() && text == "200" {
            break text;
        }
        assert!(
            Instant::now() < deadline,
            "never read the 200 readings: {output:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(count, "200");
    for wrong in [None, Some("guess")] {
        let output = psql(port, wrong, "SELECT 1").unwrap();
        assert!(!output.status.success(), "password {wrong:?} was let in");
        let stderr = String::from_utf8_lossy(&output.stderr).to_lowercase();
        assert!(stderr.contains("password"), "unclear refusal: {stderr:?}");
    }
    control.request_stop();
    engine.join().unwrap().unwrap();
}

/// `tidewater demo --serve`: while the demo runs, `tidewater query` on its warehouse goes
/// through the demo's server (the file is held by the demo) and sees snapshots advance.
#[test]
fn the_demo_answers_sql_while_it_runs() {
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("demo.duckdb");
    let log = dir.path().join("demo.log");
    // Far more readings than the test needs: the demo still runs when the test ends.
    let demo = Command::new(env!("CARGO_BIN_EXE_tidewater"))
        .args(["demo", "--events", "5000000", "--workers", "1"])
        .arg("--warehouse")
        .arg(&warehouse)
        .args(["--serve", "127.0.0.1:0"])
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut demo = KillOnDrop(demo);
    let last_snapshot = || {
        let output = Command::new(env!("CARGO_BIN_EXE_tidewater"))
            .args(["query", "--format", "csv", "--warehouse"])
            .arg(&warehouse)
            .arg("SELECT coalesce(max(snapshot_id), 0) AS last FROM _snapshots")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        match text.strip_prefix("last\n") {
            Some(id) if output.status.success() => id.trim().parse::<i64>().unwrap(),
            _ => panic!(
                "{}\n{}",
                String::from_utf8_lossy(&output.stderr),
                std::fs::read_to_string(&log).unwrap()
            ),
        }
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let server_file = tidewater::serve_sql::address_file_of(&warehouse);
    while !server_file.exists() {
        assert!(demo.0.try_wait().unwrap().is_none(), "the demo ended");
        assert!(Instant::now() < deadline, "no SQL server announced");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut seen = Vec::new();
    while seen.len() < 2 || seen[0] == seen[seen.len() - 1] {
        assert!(demo.0.try_wait().unwrap().is_none(), "the demo ended");
        assert!(
            Instant::now() < deadline,
            "snapshots never advanced: {seen:?}"
        );
        seen.push(last_snapshot());
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen.windows(2).all(|w| w[0] <= w[1]), "{seen:?}");
}
