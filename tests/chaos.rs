//! Chaos test of exactly-once delivery: `tidewater run` as a child process over a topic with
//! late and malformed records is killed with SIGKILL at seeded random moments, made to die
//! inside its DuckDB commit (the `TIDEWATER_FAULT_ABORT_IN_COMMIT` hook aborts the process with
//! the transaction written but not committed), and stopped with SIGTERM, then restarted each
//! time on the same warehouse. In the end every table (views, `_late`, `_rejects`) must equal
//! the tables of one uninterrupted run.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use tidewater_connectors::EmbeddedBroker;

/// How one attempt is interrupted.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Interruption {
    Kill,
    AbortInCommit(u64),
    Terminate,
}

/// A small seeded PRNG (xorshift), so the schedule of faults is the same on every run.
struct Schedule(u64);

impl Schedule {
    fn next(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

fn spawn_run(config: &Path, log: &Path, fault: Option<u64>) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_tidewater"));
    command
        .args(["run", "--config", config.to_str().unwrap(), "--exit-at-end"])
        .args(["--workers", "2"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    if let Some(n) = fault {
        command.env("TIDEWATER_FAULT_ABORT_IN_COMMIT", n.to_string());
    }
    command.spawn().unwrap()
}

#[test]
fn kill_9_at_random_moments_loses_and_doubles_nothing() {
    let broker = EmbeddedBroker::start().unwrap();
    let brokers = broker.bootstrap_servers();
    broker.create_topic("chaos", 4).unwrap();
    let messages = produce_turnstile_topic(&brokers, "chaos", 100_000, 9);

    let dir = tempfile::tempdir().unwrap();
    let (records_in, expected) = uninterrupted_contents(&brokers, "chaos", dir.path());
    assert_eq!(records_in, messages as u64);

    let path = dir.path().join("chaos.duckdb");
    let config = dir.path().join("chaos.toml");
    std::fs::write(
        &config,
        turnstile_pipeline(&brokers, "chaos", &path).to_toml(),
    )
    .unwrap();

    let mut schedule = Schedule(0x5eed_cafe);
    let mut interruptions: Vec<Interruption> = Vec::new();
    let mut finished = false;
    for attempt in 0..60 {
        let log = dir.path().join(format!("attempt_{attempt}.log"));
        let planned = match attempt {
            // After enough faults, let a run reach the end.
            _ if interruptions.len() >= 16 => None,
            _ if attempt % 4 == 1 => Some(Interruption::AbortInCommit(1 + schedule.next(6))),
            _ if attempt % 4 == 3 => Some(Interruption::Terminate),
            _ => Some(Interruption::Kill),
        };
        let fault = match planned {
            Some(Interruption::AbortInCommit(n)) => Some(n),
            _ => None,
        };
        let mut child = spawn_run(&config, &log, fault);
        let delay = Duration::from_millis(150 + schedule.next(1_200));
        let status = match planned {
            Some(Interruption::Kill) | Some(Interruption::Terminate) => {
                match wait_at_most(&mut child, delay) {
                    Some(status) => status,
                    None => {
                        if planned == Some(Interruption::Kill) {
                            child.kill().unwrap(); // SIGKILL
                        } else {
                            let pid = child.id().to_string();
                            Command::new("kill").args(["-TERM", &pid]).status().unwrap();
                        }
                        interruptions.push(planned.unwrap());
                        let status = wait_at_most(&mut child, Duration::from_secs(30))
                            .expect("an interrupted run exits within 30 s");
                        if planned == Some(Interruption::Terminate) {
                            assert!(
                                status.success(),
                                "SIGTERM is a clean stop: {}",
                                std::fs::read_to_string(&log).unwrap()
                            );
                        }
                        continue;
                    }
                }
            }
            _ => {
                wait_at_most(&mut child, Duration::from_secs(120)).expect("a run ends within 120 s")
            }
        };
        let text = std::fs::read_to_string(&log).unwrap();
        if text.contains("fault injection: aborting inside commit") {
            assert!(!status.success());
            interruptions.push(planned.unwrap());
            continue;
        }
        assert!(status.success(), "attempt {attempt} failed:\n{text}");
        // Not interrupted: it ran to the end of the topic.
        finished = true;
        break;
    }
    assert!(finished, "no run reached the end: {interruptions:?}");
    let kills = interruptions
        .iter()
        .filter(|i| matches!(i, Interruption::Kill | Interruption::AbortInCommit(_)))
        .count();
    let in_commit = interruptions
        .iter()
        .filter(|i| matches!(i, Interruption::AbortInCommit(_)))
        .count();
    assert!(kills >= 10, "only {kills} kills: {interruptions:?}");
    assert!(in_commit >= 3, "only {in_commit} deaths inside a commit");
    assert_same_contents(
        &warehouse_contents(&path),
        &expected,
        &format!("after {interruptions:?}"),
    );
}
