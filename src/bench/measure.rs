//! What a benchmark run measures besides its rate: latency distributions, peak memory, and a
//! progress line while it runs.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Latency samples in milliseconds; percentiles by the nearest-rank method.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    samples: Vec<f64>,
}

impl Latencies {
    pub fn push(&mut self, latency: Duration) {
        self.samples.push(latency.as_secs_f64() * 1e3);
    }

    pub fn push_millis(&mut self, millis: f64) {
        self.samples.push(millis);
    }

    pub fn len(&self) -> usize {
        self.samples.len()
    }

    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// The `p`-th percentile (0..=100); `None` without samples.
    pub fn percentile(&self, p: f64) -> Option<f64> {
        if self.samples.is_empty() {
            return None;
        }
        let mut sorted = self.samples.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        Some(sorted[rank.clamp(1, sorted.len()) - 1])
    }

    pub fn max(&self) -> Option<f64> {
        self.samples.iter().copied().reduce(f64::max)
    }
}

/// Resets this process's peak resident set size (Linux: `5` to `/proc/self/clear_refs`), so
/// that each configuration of a sweep reports its own peak. Returns false where unsupported.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// This process's peak resident set size in MiB since the last reset (`VmHWM`).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

/// CPU cores this process may use.
pub fn available_cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// A progress bar on stderr for one configuration: events done of the total, and the rate.
/// Redrawn in place on a terminal; in logs (CI) one line every 10 seconds.
pub struct ProgressBar {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ProgressBar {
    /// `done` says how many events are done so far.
    pub fn start(label: String, total: u64, done: impl Fn() -> u64 + Send + 'static) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stop_flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let terminal = std::io::stderr().is_terminal();
            let every = if terminal {
                Duration::from_millis(250)
            } else {
                Duration::from_secs(10)
            };
            let started = Instant::now();
            let mut next = started + every;
            while !stop_flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                if Instant::now() < next {
                    continue;
                }
                next += every;
                let count = done();
                let fraction = (count as f64 / total.max(1) as f64).min(1.0);
                let filled = (fraction * 30.0) as usize;
                let rate = count as f64 / started.elapsed().as_secs_f64().max(1e-9);
                let line = format!(
                    "{label} [{}{}] {:>3.0}% {count}/{total} events, {}/s",
                    "#".repeat(filled),
                    "-".repeat(30 - filled),
                    fraction * 100.0,
                    human_count(rate)
                );
                let mut err = std::io::stderr().lock();
                let _ = if terminal {
                    write!(err, "\r\x1b[2K{line}")
                } else {
                    writeln!(err, "{line}")
                };
            }
            if terminal {
                let _ = write!(std::io::stderr(), "\r\x1b[2K");
            }
        });
        ProgressBar {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for ProgressBar {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `1234567.0` → `1.23M`.
pub fn human_count(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut latencies = Latencies::default();
        for ms in 1..=100 {
            latencies.push_millis(ms as f64);
        }
        assert_eq!(latencies.percentile(50.0), Some(50.0));
        assert_eq!(latencies.percentile(99.0), Some(99.0));
        assert_eq!(latencies.percentile(100.0), Some(100.0));
        assert_eq!(latencies.max(), Some(100.0));
        assert_eq!(Latencies::default().percentile(50.0), None);
    }

    #[test]
    fn peak_rss_is_readable_and_resettable_on_linux() {
        // A 256 MiB peak, far above what tests running in parallel threads add meanwhile.
        let mut buffer = vec![0u8; 256 << 20];
        for page in buffer.chunks_mut(4096) {
            page[0] = 1;
        }
        let peak = peak_rss_mib().expect("VmHWM");
        assert!(peak >= 256.0, "{peak}");
        drop(std::hint::black_box(buffer));
        assert!(reset_peak_rss());
        let after = peak_rss_mib().expect("VmHWM");
        assert!(
            after < peak - 128.0,
            "peak {peak} MiB, after the reset {after} MiB"
        );
    }

    #[test]
    fn counts_read_humanly() {
        assert_eq!(human_count(999.0), "999");
        assert_eq!(human_count(12_345.0), "12.3k");
        assert_eq!(human_count(3_210_000.0), "3.21M");
    }
}
