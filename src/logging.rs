//! Structured logs with `tracing`, on stderr.
//!
//! `RUST_LOG` chooses what is shown (`EnvFilter` syntax, e.g. `RUST_LOG=debug` or
//! `RUST_LOG=tidewater::engine=debug`); without it, `info` for Tidewater's own crates and
//! `warn` for the libraries. Commits are logged at `debug`; start, stop, resume and the served
//! address at `info`; recoverable errors at `warn`. Fatal errors stay the CLI's one
//! `tidewater: error:` line.
//!
//! On a terminal the progress line (`progress.rs`) is redrawn in place without a newline; a log
//! line first clears it (the progress line comes back at its next tick), and both write under
//! stderr's lock, so neither garbles the other.

use std::io::{IsTerminal, Write};

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

/// The filter without `RUST_LOG`.
pub const DEFAULT_FILTER: &str =
    "warn,tidewater=info,tidewater_connectors=info,tidewater_sinks=info,tidewater_dataflows=info";

/// Installs the subscriber (once; later calls do nothing). A `RUST_LOG` that does not parse
/// is reported and the default is used.
pub fn init() {
    let filter = match std::env::var("RUST_LOG") {
        Ok(text) if !text.trim().is_empty() => EnvFilter::try_new(&text).unwrap_or_else(|e| {
            eprintln!("tidewater: RUST_LOG={text:?} does not parse ({e}); using {DEFAULT_FILTER}");
            EnvFilter::new(DEFAULT_FILTER)
        }),
        _ => EnvFilter::new(DEFAULT_FILTER),
    };
    let terminal = std::io::stderr().is_terminal();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(terminal)
        .with_writer(Stderr { terminal })
        .try_init();
}

/// Writes each log line in one piece under stderr's lock, clearing a progress line first.
struct Stderr {
    terminal: bool,
}

impl<'a> MakeWriter<'a> for Stderr {
    type Writer = LogLine;

    fn make_writer(&'a self) -> LogLine {
        LogLine {
            buffer: Vec::with_capacity(128),
            terminal: self.terminal,
        }
    }
}

/// One formatted event, written out when dropped.
pub struct LogLine {
    buffer: Vec<u8>,
    terminal: bool,
}

impl Write for LogLine {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.buffer.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LogLine {
    fn drop(&mut self) {
        if self.buffer.is_empty() {
            return;
        }
        let mut stderr = std::io::stderr().lock();
        if self.terminal {
            // Carriage return and erase line: whatever the progress line had drawn goes.
            let _ = stderr.write_all(b"\r\x1b[2K");
        }
        let _ = stderr.write_all(&self.buffer);
    }
}
