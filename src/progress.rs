//! A one-line progress display on stderr for long runs.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tidewater_connectors::SourceControl;

/// Prints records committed (and their rate), records read and snapshots every second until
/// dropped. On a terminal
/// the line is redrawn in place; otherwise (CI logs) one line is printed every 10 seconds.
pub struct ProgressLine {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressLine {
    pub fn start(
        control: Arc<SourceControl>,
        snapshots: Arc<AtomicU64>,
        committed: Arc<AtomicU64>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let terminal = std::io::stderr().is_terminal();
            let every = if terminal { 1 } else { 10 };
            let started = Instant::now();
            let (mut last_committed, mut ticks) = (0u64, 0u64);
            while !stop_flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_secs(1));
                ticks += 1;
                let done = committed.load(Ordering::Relaxed);
                if ticks.is_multiple_of(every) {
                    let rate = done.saturating_sub(last_committed) / every;
                    let line = format!(
                        "tidewater: {done} records committed ({rate}/s), {} read, {} snapshots, {:.0}s",
                        control.records_in(),
                        snapshots.load(Ordering::Relaxed),
                        started.elapsed().as_secs_f64()
                    );
                    let mut err = std::io::stderr().lock();
                    let _ = if terminal {
                        write!(err, "\r\x1b[2K{line}")
                    } else {
                        writeln!(err, "{line}")
                    };
                    last_committed = done;
                }
            }
            if terminal {
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            }
        });
        ProgressLine {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
