//! Tests of the `tidewater` binary: clear errors that stop a run before it consumes, help, and a
//! third-party Kafka client (kcat) producing into `tidewater broker`.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tidewater_connectors::EmbeddedBroker;
use tidewater_dataflows::decode::decode_reading;

fn tidewater() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidewater"))
}

fn write_pipeline(dir: &Path, brokers: &str, topic: &str, warehouse: &Path) -> PathBuf {
    let path = dir.join("pipeline.toml");
    let text = format!(
        "[[sources]]\nname = \"turnstiles\"\nbrokers = \"{brokers}\"\ntopic = \"{topic}\"\nevent_time = \"ts\"\n{}\n\n[[views]]\nname = \"station_hourly\"\ngroup_by = [\"station\"]\nwindow = {{ type = \"tumbling\", size = \"1h\" }}\nallowed_lateness = \"100000d\"\naggregates = [{{ column = \"readings\", fn = \"count\" }}, {{ column = \"entries\", fn = \"sum\", field = \"entries\" }}, {{ column = \"exits\", fn = \"sum\", field = \"exits\" }}]\n\n[warehouse]\npath = \"{}\"\nsnapshot_interval = \"100ms\"\n",
        common::TURNSTILE_SCHEMA,
        warehouse.display()
    );
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `tidewater run --exit-at-end` and returns its output and how long it took.
fn run_pipeline(config: &Path, extra: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = tidewater()
        .args(["run", "--config", config.to_str().unwrap(), "--exit-at-end"])
        .args(extra)
        .output()
        .unwrap();
    (output, started.elapsed())
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The line the binary prints for a fatal error; exactly one.
fn error_line(output: &Output) -> String {
    let text = stderr(output);
    let lines: Vec<_> = text
        .lines()
        .filter(|l| l.starts_with("tidewater: error:"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line in:\n{text}");
    lines[0].to_owned()
}

/// Runs a pipeline that must fail; returns its one error line and how long it took.
fn failed_run_error(config: &Path) -> (String, Duration) {
    let (output, took) = run_pipeline(config, &[]);
    assert!(
        !output.status.success(),
        "the run should fail:\n{}",
        stderr(&output)
    );
    (error_line(&output), took)
}

#[test]
fn help_lists_the_commands_and_their_options() {
    let output = tidewater().arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8_lossy(&output.stdout);
    for command in ["broker", "produce", "run", "demo"] {
        assert!(text.contains(command), "{text}");
    }
    let output = tidewater().args(["run", "--help"]).output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    for option in ["--config", "--workers", "--exit-at-end"] {
        assert!(text.contains(option), "{text}");
    }
}

/// `tidewater produce`: as fast as it can, a backfill (about 200 ms of event time per reading);
/// with `--rate`, a live feed whose event time advances about as fast as the clock.
#[test]
fn produce_generates_a_backfill_or_at_a_rate_a_live_feed() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    let readings = 3_000;
    // (topic, extra arguments, bounds of the event-time span in seconds)
    let cases: [(&str, &[&str], _); 2] = [
        ("backfill", &[], 300.0..=1_000.0),
        // 1.5 s of a live feed: rush hours make event time up to 3x faster, nights 7x slower.
        ("live", &["--rate", "2000"], 0.2..=12.0),
    ];
    for (topic, extra, bounds) in cases {
        broker.create_topic(topic, 2).unwrap();
        let output = tidewater()
            .args(["produce", "--brokers", &brokers, "--topic", topic])
            .args(["--events", &readings.to_string(), "--late-fraction", "0"])
            .args(extra)
            .output()
            .unwrap();
        assert!(output.status.success(), "{}", stderr(&output));
        assert!(
            stderr(&output).contains(&format!("{readings} messages delivered")),
            "{}",
            stderr(&output)
        );
        let times: Vec<i64> = read_topic(&brokers, topic, readings)
            .iter()
            .map(|m| decode_reading(&m.payload).unwrap().ts)
            .collect();
        assert_eq!(times.len(), readings);
        let span = (times.iter().max().unwrap() - times.iter().min().unwrap()) as f64 / 1e6;
        assert!(
            bounds.contains(&span),
            "{topic}: {readings} readings span {span} s of event time, not {bounds:?} s"
        );
    }
    let error = tidewater()
        .args(["produce", "--brokers", &brokers, "--topic", "live"])
        .args(["--events", "1", "--rate", "0"])
        .output()
        .unwrap();
    assert!(!error.status.success());
    assert!(error_line(&error).contains("--rate must be above 0"));
}

/// `tidewater check` on the demo's own pipeline file (as `demo --print-pipeline` prints it):
/// every view with its table schema and the shared arrangements; a broken file is one error
/// line with its location, a non-zero exit, and no warehouse.
#[test]
fn check_prints_views_and_schemas_or_one_located_error() {
    let dir = tempfile::tempdir().unwrap();
    let printed = tidewater()
        .args(["demo", "--print-pipeline"])
        .output()
        .unwrap();
    assert!(printed.status.success(), "{}", stderr(&printed));
    let file = dir.path().join("turnstile.toml");
    std::fs::write(&file, &printed.stdout).unwrap();
    let output = tidewater()
        .args(["check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", stderr(&output));
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("ok, 1 source(s), 7 view(s)"), "{text}");
    // The file may also be named the way `run` takes it.
    let as_run_takes_it = tidewater()
        .args(["check", "--config", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        as_run_takes_it.status.success(),
        "{}",
        stderr(&as_run_takes_it)
    );
    assert_eq!(as_run_takes_it.stdout, output.stdout);
    for expected in [
        "view station_hourly (from turnstiles = topic `turnstile`): group by station, tumbling 1h",
        "CREATE TABLE station_hourly (\n    station VARCHAR NOT NULL,\n    window_start TIMESTAMP NOT NULL,",
        "view turnstile_sessions",
        "session",
        "hopping 15m",
        "count_distinct",
        "shared arrangements: station_hourly, station_hourly_peaks",
    ] {
        assert!(text.contains(expected), "{expected:?} not in:\n{text}");
    }

    let text = String::from_utf8_lossy(&printed.stdout).replace(
        "{ column = \"exits\", fn = \"sum\", field = \"exits\" },\n]",
        "{ column = \"exits\", fn = \"median\", field = \"exits\" },\n]",
    );
    assert!(text.contains("median"));
    std::fs::write(&file, text).unwrap();
    let output = tidewater()
        .args(["check", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let line = error_line(&output);
    assert!(
        line.contains("turnstile.toml") && line.contains("line ") && line.contains("median"),
        "{line}"
    );
    assert!(!dir.path().join("warehouse.duckdb").exists());
}

#[test]
fn unreachable_broker_fails_within_10_seconds() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = format!("127.0.0.1:{}", free_loopback_port());
    let config = write_pipeline(
        dir.path(),
        &brokers,
        "turnstile",
        &dir.path().join("w.duckdb"),
    );
    let (line, took) = failed_run_error(&config);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(
        line.contains("cannot reach Kafka brokers") && line.contains(&brokers),
        "{line}"
    );
}

#[test]
fn missing_topic_and_bad_pipeline_files_are_clear_errors() {
    let broker = EmbeddedBroker::start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(
        dir.path(),
        &broker.bootstrap_servers(),
        "no_such_topic",
        &dir.path().join("w.duckdb"),
    );
    let (line, _) = failed_run_error(&config);
    assert!(
        line.contains("topic `no_such_topic` does not exist"),
        "{line}"
    );

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "[[sources]]\nname = \"s\"\nbrokers = \"x\"\ntopic = \"t\"\nbatch = 3\n[warehouse]\npath = \"w\"\n",
    )
    .unwrap();
    let (line, _) = failed_run_error(&bad);
    assert!(
        line.contains("bad.toml") && line.contains("line 5") && line.contains("batch"),
        "{line}"
    );
}

#[test]
fn unwritable_warehouse_stops_before_consuming() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("turnstile", 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let not_a_dir = dir.path().join("plain-file");
    std::fs::write(&not_a_dir, "x").unwrap();
    for warehouse in [
        dir.path().join("missing-dir").join("w.duckdb"),
        not_a_dir.join("w.duckdb"),
    ] {
        let config = write_pipeline(
            dir.path(),
            &broker.bootstrap_servers(),
            "turnstile",
            &warehouse,
        );
        let (line, _) = failed_run_error(&config);
        assert!(
            line.contains("cannot be written") && line.contains(&warehouse.display().to_string()),
            "{line}"
        );
    }
}

#[test]
fn warehouse_locked_by_another_process_stops_before_consuming() {
    let broker = EmbeddedBroker::start().unwrap();
    broker.create_topic("turnstile", 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let warehouse = dir.path().join("w.duckdb");
    // This test process holds the file open (and locked); the engine is another process.
    let holder = duckdb::Connection::open(&warehouse).unwrap();
    holder
        .execute_batch("CREATE TABLE analyst_notes (note VARCHAR)")
        .unwrap();
    let config = write_pipeline(
        dir.path(),
        &broker.bootstrap_servers(),
        "turnstile",
        &warehouse,
    );
    let (line, _) = failed_run_error(&config);
    assert!(line.contains("locked by another process"), "{line}");
    drop(holder);
}

#[test]
fn earlier_offsets_lost_to_retention_are_reported() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("small", 1).unwrap();
    // ~7 MiB into one partition: the embedded broker keeps only the newest 5 MiB.
    let data = readings(35_000, 3, 0.0);
    produce(&brokers, "small", &reading_messages(&data));
    let dir = tempfile::tempdir().unwrap();
    let config = write_pipeline(dir.path(), &brokers, "small", &dir.path().join("w.duckdb"));
    let (output, _) = run_pipeline(&config, &["--workers", "1"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stderr(&output);
    assert!(
        text.contains("partition 0 of `small` starts at offset")
            && text.contains("no longer retains"),
        "{text}"
    );
}

/// Stops a child process with SIGTERM when the test ends, however it ends.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn kcat_available() -> bool {
    Command::new("kcat")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn events_produced_with_kcat_into_tidewater_broker_are_consumed() {
    if !kcat_available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "kcat must be installed in CI (.ci/run installs it)"
        );
        eprintln!("SKIPPED: kcat is not installed (apt-get install kcat); this test needs a third-party Kafka client");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let address_file = dir.path().join("broker.addr");
    let broker = ChildGuard(
        tidewater()
            .args([
                "broker",
                "--topic",
                "kcat",
                "--partitions",
                "3",
                "--address-file",
                address_file.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let brokers = loop {
        if let Ok(text) = std::fs::read_to_string(&address_file) {
            if !text.is_empty() {
                break text;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the broker did not write its address"
        );
        std::thread::sleep(Duration::from_millis(50));
    };

    let data = readings(2_000, 13, 0.1);
    let mut kcat = Command::new("kcat")
        .args(["-P", "-b", &brokers, "-t", "kcat", "-K", "\t"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = kcat.stdin.take().unwrap();
        for reading in &data {
            writeln!(stdin, "{}\t{}", reading.turnstile_id(), reading.to_json()).unwrap();
        }
    }
    assert!(kcat.wait().unwrap().success(), "kcat failed to produce");

    let warehouse = dir.path().join("w.duckdb");
    let config = write_pipeline(dir.path(), &brokers, "kcat", &warehouse);
    let (output, _) = run_pipeline(&config, &["--workers", "2"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let messages = read_topic(&brokers, "kcat", data.len());
    assert!(
        messages.iter().any(|m| m.partition == 2),
        "kcat spread the keys over the partitions"
    );
    let expected = oracle(messages.iter().map(|m| m.payload.as_slice()), HOUR_US);
    assert_views_equal(
        &read_view(&open_warehouse(&warehouse), "station_hourly", HOUR_US),
        &expected,
        "kcat",
    );
    drop(broker);
}
