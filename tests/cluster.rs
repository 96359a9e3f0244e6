//! Multi-process clusters: the same answer at every shape (processes x workers), a dead peer
//! stops the cluster within seconds, and kill -9 of the writer or of another process loses and
//! doubles nothing once the cluster is restarted.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use tidewater_connectors::EmbeddedBroker;

fn tidewater() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tidewater"))
}

fn write_pipeline(dir: &Path, brokers: &str, topic: &str, name: &str) -> (PathBuf, PathBuf) {
    let warehouse = dir.join(format!("{name}.duckdb"));
    let config = dir.join(format!("{name}.toml"));
    std::fs::write(
        &config,
        turnstile_pipeline(brokers, topic, &warehouse).to_toml(),
    )
    .unwrap();
    (config, warehouse)
}

/// `tidewater run` as process `process` of a cluster described by `hostfile`.
fn spawn_process(
    config: &Path,
    hostfile: &Path,
    processes: usize,
    process: usize,
    log: &Path,
    exit_at_end: bool,
) -> Child {
    let mut command = tidewater();
    command
        .args(["run", "--config", config.to_str().unwrap()])
        .args(["--workers", "1", "--processes", &processes.to_string()])
        .args(["--process", &process.to_string()])
        .args(["--hostfile", hostfile.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if exit_at_end {
        command.arg("--exit-at-end");
    }
    command.spawn().unwrap()
}

fn hostfile(dir: &Path, processes: usize) -> PathBuf {
    let path = dir.join("hosts.txt");
    let lines: Vec<String> = (0..processes)
        .map(|_| format!("127.0.0.1:{}", free_loopback_port()))
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

#[test]
fn every_table_is_the_same_at_every_cluster_shape() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("shapes", 4).unwrap();
    let messages = produce_turnstile_topic(&brokers, "shapes", 20_000, 5);
    let dir = tempfile::tempdir().unwrap();

    let mut reference: Option<(String, std::collections::BTreeMap<String, Vec<String>>)> = None;
    for (processes, workers) in [(1, 1), (1, 4), (2, 2), (3, 1)] {
        let shape = format!("{processes}x{workers}");
        let (config, warehouse) = write_pipeline(dir.path(), &brokers, "shapes", &shape);
        let mut command = tidewater();
        if processes == 1 {
            command.arg("run");
        } else {
            command
                .arg("cluster")
                .args(["--processes", &processes.to_string()]);
        }
        let log = dir.path().join(format!("{shape}.log"));
        let mut child = command
            .args(["--config", config.to_str().unwrap(), "--exit-at-end"])
            .args(["--workers", &workers.to_string()])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let status = wait_at_most(&mut child, Duration::from_secs(120));
        if status.is_none() {
            let _ = child.kill();
        }
        let text = std::fs::read_to_string(&log).unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "{shape} failed or took over 120 s:\n{text}"
        );
        if processes > 1 {
            // Only the writer process opened the file, and every process took part.
            for process in 0..processes {
                assert!(
                    text.contains(&format!(
                        "[p{process}] tidewater run: process {process} of {processes}"
                    )),
                    "{text}"
                );
            }
            assert_eq!(text.matches("the warehouse writer").count(), 1, "{text}");
        }
        let contents = warehouse_contents(&warehouse);
        let rows: usize = contents.values().map(Vec::len).sum();
        assert!(rows > 1000, "{shape}: only {rows} rows");
        match &reference {
            None => reference = Some((shape, contents)),
            Some((first, expected)) => {
                assert_same_contents(&contents, expected, &format!("{shape} against {first}"))
            }
        }
    }
    assert!(messages > 0);
}

/// Kills one process of a 2-process cluster running live (no end) and checks that the other
/// stops within 10 s with a message that says what happened.
#[test]
fn a_dead_peer_stops_the_cluster_within_10_seconds() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("peers", 4).unwrap();
    produce_turnstile_topic(&brokers, "peers", 5_000, 3);
    for victim in [1usize, 0] {
        let dir = tempfile::tempdir().unwrap();
        let (config, _) = write_pipeline(dir.path(), &brokers, "peers", "peers");
        let hosts = hostfile(dir.path(), 2);
        let logs: Vec<PathBuf> = (0..2)
            .map(|p| dir.path().join(format!("p{p}.log")))
            .collect();
        let mut children: Vec<Child> = (0..2)
            .map(|p| spawn_process(&config, &hosts, 2, p, &logs[p], false))
            .collect();
        // Running: process 0 has committed a snapshot (bounded wait).
        let started = Instant::now();
        while !std::fs::read_to_string(&logs[0])
            .unwrap()
            .contains("records committed")
        {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "no progress: {}",
                std::fs::read_to_string(&logs[0]).unwrap()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        children[victim].kill().unwrap();
        children[victim].wait().unwrap();
        let survivor = 1 - victim;
        let killed_at = Instant::now();
        let status = wait_at_most(&mut children[survivor], Duration::from_secs(10));
        let text = std::fs::read_to_string(&logs[survivor]).unwrap();
        if status.is_none() {
            let _ = children[survivor].kill();
        }
        let status = status.unwrap_or_else(|| {
            panic!("process {survivor} still runs 10 s after process {victim} died:\n{text}")
        });
        assert!(!status.success(), "{text}");
        assert!(
            text.contains("lost the connection to a peer process"),
            "process {survivor} after {:?}:\n{text}",
            killed_at.elapsed()
        );
    }
}

/// The chaos test of exactly-once delivery, in a 2-process cluster: SIGKILL of the writer
/// process or of the other one at seeded moments, the survivor stopping by itself, a restart
/// of both; in the end every table equals an uninterrupted run's.
#[test]
fn kill_9_of_either_process_loses_and_doubles_nothing() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("cluster_chaos", 4).unwrap();
    let messages = produce_turnstile_topic(&brokers, "cluster_chaos", 60_000, 17);
    let dir = tempfile::tempdir().unwrap();
    let (records_in, expected) = uninterrupted_contents(&brokers, "cluster_chaos", dir.path());
    assert_eq!(records_in, messages as u64);
    let (config, warehouse) = write_pipeline(dir.path(), &brokers, "cluster_chaos", "chaos");

    let mut state = 0x0c1a_57e2_u64;
    let mut next = move |bound: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % bound
    };
    let mut kills = Vec::new();
    let mut finished = false;
    for attempt in 0..30 {
        let hosts = hostfile(dir.path(), 2);
        let logs: Vec<PathBuf> = (0..2)
            .map(|p| dir.path().join(format!("attempt{attempt}_p{p}.log")))
            .collect();
        let mut children: Vec<Child> = (0..2)
            .map(|p| spawn_process(&config, &hosts, 2, p, &logs[p], true))
            .collect();
        let read = |p: usize| std::fs::read_to_string(&logs[p]).unwrap();
        if kills.len() < 8 {
            let victim = kills.len() % 2;
            let delay = Duration::from_millis(800 + next(2_500));
            if wait_at_most(&mut children[victim], delay).is_none() {
                children[victim].kill().unwrap();
                children[victim].wait().unwrap();
                kills.push(victim);
                let survivor = 1 - victim;
                let status = wait_at_most(&mut children[survivor], Duration::from_secs(10));
                assert!(
                    status.is_some(),
                    "attempt {attempt}: process {survivor} still runs 10 s after process {victim} was killed:\n{}",
                    read(survivor)
                );
                continue;
            }
        }
        for (p, child) in children.iter_mut().enumerate() {
            let status = wait_at_most(child, Duration::from_secs(120));
            assert!(
                status.is_some_and(|s| s.success()),
                "attempt {attempt}: process {p} failed or took over 120 s:\n{}",
                read(p)
            );
        }
        finished = true;
        break;
    }
    assert!(finished, "no run reached the end after kills {kills:?}");
    assert!(
        kills.len() >= 6,
        "only {} kills ({kills:?}): the runs ended too early",
        kills.len()
    );
    assert_same_contents(
        &warehouse_contents(&warehouse),
        &expected,
        &format!("after killing processes {kills:?}"),
    );
}

/// `tidewater cluster` forwards one SIGTERM to its processes: each stops cleanly, the last
/// snapshot commits, and the launcher exits 0; a restart goes on to the end and ends equal to
/// an uninterrupted run. While it runs, process 0 answers SQL (`--serve`).
#[test]
fn sigterm_to_the_launcher_stops_every_process_cleanly() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("launcher", 4).unwrap();
    let messages = produce_turnstile_topic(&brokers, "launcher", 20_000, 23);
    let dir = tempfile::tempdir().unwrap();
    let (records_in, expected) = uninterrupted_contents(&brokers, "launcher", dir.path());
    assert_eq!(records_in, messages as u64);
    let (config, warehouse) = write_pipeline(dir.path(), &brokers, "launcher", "launcher");
    let launch = |live: bool, log: &Path| {
        let mut command = tidewater();
        command
            .args(["cluster", "--config", config.to_str().unwrap()])
            .args(["--processes", "2", "--workers", "1"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap());
        if live {
            // Process 0, the writer, serves SQL and the dashboard; the others do not.
            command.args(["--serve", "127.0.0.1:0", "--serve-http", "127.0.0.1:0"]);
        } else {
            command.arg("--exit-at-end");
        }
        command.spawn().unwrap()
    };
    let log = dir.path().join("live.log");
    let mut cluster = launch(true, &log);
    let started = Instant::now();
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("records committed")
    {
        assert!(started.elapsed() < Duration::from_secs(60), "no progress");
        std::thread::sleep(Duration::from_millis(100));
    }
    // While the cluster runs, `tidewater query` reads the warehouse through process 0's server.
    let query = tidewater()
        .args([
            "query",
            "--config",
            config.to_str().unwrap(),
            "--format",
            "csv",
        ])
        .arg("SELECT count(*) > 0 AS committed FROM _snapshots")
        .output()
        .unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        query.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&query.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&query.stdout), "committed\nt\n");
    for server in ["serving read-only SQL", "serving the dashboard"] {
        let lines: Vec<&str> = text.lines().filter(|l| l.contains(server)).collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with("[p0]"),
            "{server}: {lines:?}"
        );
    }
    let pid = cluster.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let status = wait_at_most(&mut cluster, Duration::from_secs(30));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.is_some_and(|s| s.success()), "{text}");
    for process in 0..2 {
        assert!(
            text.contains(&format!("[p{process}] tidewater run: stopped")),
            "process {process} did not stop cleanly:\n{text}"
        );
    }
    let finish_log = dir.path().join("finish.log");
    let mut finish = launch(false, &finish_log);
    let status = wait_at_most(&mut finish, Duration::from_secs(120));
    assert!(
        status.is_some_and(|s| s.success()),
        "{}",
        std::fs::read_to_string(&finish_log).unwrap()
    );
    assert_same_contents(
        &warehouse_contents(&warehouse),
        &expected,
        "stopped by SIGTERM, then run to the end",
    );
}
