//! `tidewater cluster`: N processes of one pipeline on this machine. Picks free loopback ports,
//! writes the hostfile, starts `tidewater run --process I` for each, prefixes and merges their
//! logs, forwards Ctrl-C/SIGTERM, and stops the others as soon as one fails.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::error::EngineError;

/// How long the others get to stop cleanly after one process failed, before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct LaunchOptions {
    pub processes: usize,
    /// Worker threads per process.
    pub workers: usize,
    pub config: PathBuf,
    pub exit_at_end: bool,
    /// Where the hostfile is written.
    pub hostfile: PathBuf,
    /// `--serve` and `--serve-http` addresses for process 0, which writes the warehouse.
    pub serve_sql: Option<String>,
    pub serve_http: Option<String>,
}

/// `host:port` on loopback for each process, from ports the OS just handed out (released at
/// once, then bound by timely; a race with another program is possible but unlikely).
pub fn free_loopback_addresses(count: usize) -> Result<Vec<String>, EngineError> {
    let listeners = (0..count)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| EngineError::Cluster(format!("no free loopback port: {e}")))?;
    listeners
        .iter()
        .map(|l| {
            l.local_addr()
                .map(|a| a.to_string())
                .map_err(|e| EngineError::Cluster(e.to_string()))
        })
        .collect()
}

/// Runs the cluster to its end. `stop` is set by Ctrl-C/SIGTERM (forwarded once as SIGTERM);
/// `kill` by a second one (SIGKILL to all). Returns an error naming the first process that
/// failed.
pub fn launch(
    options: &LaunchOptions,
    stop: Arc<AtomicBool>,
    kill: Arc<AtomicBool>,
) -> Result<(), EngineError> {
    let addresses = free_loopback_addresses(options.processes)?;
    std::fs::write(&options.hostfile, addresses.join("\n") + "\n").map_err(|e| {
        EngineError::Cluster(format!("writing {}: {e}", options.hostfile.display()))
    })?;
    let exe = std::env::current_exe()
        .map_err(|e| EngineError::Cluster(format!("finding the tidewater binary: {e}")))?;
    eprintln!(
        "tidewater cluster: {} processes x {} workers on {}",
        options.processes,
        options.workers,
        addresses.join(", ")
    );
    let mut children: Vec<Child> = Vec::new();
    for process in 0..options.processes {
        match spawn(&exe, options, process) {
            Ok(child) => children.push(child),
            Err(error) => {
                signal_all(&mut children, libc::SIGKILL);
                return Err(error);
            }
        }
    }
    let pids: Vec<String> = children.iter().map(|c| c.id().to_string()).collect();
    eprintln!("tidewater cluster: process pids {}", pids.join(" "));

    let mut statuses: Vec<Option<ExitStatus>> = vec![None; children.len()];
    let mut failed: Option<(usize, ExitStatus)> = None;
    let mut forwarded = false;
    let mut stopping_since: Option<Instant> = None;
    loop {
        for (index, child) in children.iter_mut().enumerate() {
            if statuses[index].is_none() {
                if let Ok(Some(status)) = child.try_wait() {
                    statuses[index] = Some(status);
                    if !status.success() && failed.is_none() {
                        failed = Some((index, status));
                    }
                }
            }
        }
        if statuses.iter().all(Option::is_some) {
            break;
        }
        if kill.load(Ordering::SeqCst) {
            signal_all(&mut children, libc::SIGKILL);
        } else if (stop.load(Ordering::SeqCst) || failed.is_some()) && !forwarded {
            if let Some((index, status)) = failed {
                eprintln!(
                    "tidewater cluster: process {index} failed ({status}); stopping the others"
                );
            }
            signal_all(&mut children, libc::SIGTERM);
            forwarded = true;
            stopping_since = Some(Instant::now());
        } else if stopping_since.is_some_and(|since| since.elapsed() > STOP_GRACE) {
            eprintln!(
                "tidewater cluster: processes still running {}s after the stop; killing them",
                STOP_GRACE.as_secs()
            );
            signal_all(&mut children, libc::SIGKILL);
            stopping_since = None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    match failed {
        Some((index, status)) => Err(EngineError::Cluster(format!(
            "process {index} failed ({status})"
        ))),
        None => Ok(()),
    }
}

fn spawn(exe: &Path, options: &LaunchOptions, process: usize) -> Result<Child, EngineError> {
    let mut command = Command::new(exe);
    command
        .arg("run")
        .arg("--config")
        .arg(&options.config)
        .args(["--workers", &options.workers.to_string()])
        .args(["--processes", &options.processes.to_string()])
        .args(["--process", &process.to_string()])
        .arg("--hostfile")
        .arg(&options.hostfile)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: a Ctrl-C in the terminal reaches the launcher only, which
        // forwards one SIGTERM (two signals would make a process exit at once, unclean).
        .process_group(0);
    if options.exit_at_end {
        command.arg("--exit-at-end");
    }
    if process == 0 {
        if let Some(address) = &options.serve_sql {
            command.arg(format!("--serve={address}"));
        }
        if let Some(address) = &options.serve_http {
            command.arg(format!("--serve-http={address}"));
        }
    }
    let mut child = command
        .spawn()
        .map_err(|e| EngineError::Cluster(format!("starting process {process}: {e}")))?;
    let prefix = format!("[p{process}] ");
    if let Some(out) = child.stdout.take() {
        forward_lines(out, prefix.clone(), false);
    }
    if let Some(err) = child.stderr.take() {
        forward_lines(err, prefix, true);
    }
    Ok(child)
}

/// Copies a child's output line by line to ours with a prefix; stdout lines stay on stdout.
fn forward_lines(stream: impl std::io::Read + Send + 'static, prefix: String, to_stderr: bool) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "{prefix}{line}");
            } else {
                let _ = writeln!(std::io::stdout().lock(), "{prefix}{line}");
            }
        }
    });
}

fn signal_all(children: &mut [Child], signal: i32) {
    for child in children.iter_mut() {
        if let Ok(None) = child.try_wait() {
            // SAFETY: kill(2) on a child we spawned and have not reaped (std can only SIGKILL).
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }
}
