//! The published copy (`publish` in `[warehouse]`): a complete copy of the warehouse in a file
//! of its own, which any program may open at any time, also while the engine runs (DuckDB lets
//! only one process open a file that is being written).
//!
//! After a commit, once `publish_interval` has passed since the last copy started (at once
//! for the first commit, and at the latest one interval after a commit, also when nothing is
//! committed after it), a thread of its own copies the warehouse on a second connection to the same database: `ATTACH` a
//! temporary file next to the target, `COPY FROM DATABASE` in one transaction (so the copy
//! holds exactly one committed snapshot, whatever the writer commits meanwhile), checkpoint,
//! `DETACH`, fsync, and `rename` over the target, which readers therefore see whole or not at
//! all. The writer does not wait for it. A failed copy is reported and the engine goes on: the
//! warehouse is only read, and the previous copy stays in place.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use duckdb::Connection;

use crate::error::SinkError;
use crate::warehouse::Warehouse;

/// The alias of the copy while it is written (attached to the warehouse's database instance).
const COPY_ALIAS: &str = "tidewater_publish";

/// What the publisher did during a run.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublishStats {
    pub target: PathBuf,
    /// Copies that were renamed over the target.
    pub published: u64,
    pub failures: u64,
    /// The last snapshot a published copy holds (`None`: none published, or it had none).
    pub last_snapshot: Option<i64>,
    /// How long the last successful copy took, from `ATTACH` to `rename`.
    pub last_duration: Option<Duration>,
    pub max_duration: Duration,
    pub last_error: Option<String>,
}

/// Publishes copies of one warehouse; see the module documentation.
pub struct Publisher {
    state: Mutex<State>,
    stats: Arc<Mutex<PublishStats>>,
}

struct State {
    /// Tells the copying thread about a commit; `None` once finished.
    commits: Option<SyncSender<()>>,
    thread: Option<JoinHandle<Copier>>,
}

impl Publisher {
    /// Starts publishing `warehouse` to `target`. Fails (before anything runs) when the
    /// target's directory does not exist or the target is the warehouse itself.
    pub fn start(
        warehouse: &Warehouse,
        target: &Path,
        interval: Duration,
    ) -> Result<Publisher, SinkError> {
        let error = |detail: String| SinkError::Publish {
            path: target.to_owned(),
            detail,
        };
        let parent = parent_dir(target);
        if !parent.is_dir() {
            return Err(error(format!(
                "directory {} does not exist",
                parent.display()
            )));
        }
        let same = |a: &Path, b: &Path| match (a.canonicalize(), b.canonicalize()) {
            (Ok(a), Ok(b)) => a == b,
            _ => a == b,
        };
        if same(target, warehouse.path()) {
            return Err(error(
                "it is the warehouse itself; publish to another file".to_owned(),
            ));
        }
        let conn = warehouse
            .connection()
            .try_clone()
            .map_err(|e| error(e.to_string()))?;
        let database: String = conn
            .query_row("SELECT current_database()", [], |row| row.get(0))
            .map_err(|e| error(e.to_string()))?;
        let stats = Arc::new(Mutex::new(PublishStats {
            target: target.to_owned(),
            ..PublishStats::default()
        }));
        let copier = Copier {
            conn,
            database,
            target: target.to_owned(),
            stats: Arc::clone(&stats),
        };
        // One notice may wait while a copy runs; more would say nothing new.
        let (commits, received) = sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("tidewater-publish".to_owned())
            .spawn(move || copier.publish_after_commits(&received, interval))
            .map_err(|e| error(e.to_string()))?;
        Ok(Publisher {
            state: Mutex::new(State {
                commits: Some(commits),
                thread: Some(thread),
            }),
            stats,
        })
    }

    /// Called after each committed snapshot; never waits for a copy.
    pub fn after_commit(&self) {
        let state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(commits) = &state.commits {
            // Full: the thread has not yet taken the last notice, which says the same.
            let _ = commits.try_send(());
        }
    }

    pub fn stats(&self) -> PublishStats {
        self.stats.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Ends a run: waits for the copy in progress, then publishes the last snapshot unless the
    /// last copy already holds it. Closes the publisher's connection (the database closes once
    /// the writer's is closed too).
    pub fn finish(&self) -> PublishStats {
        if let Some(copier) = self.stop() {
            let stats = self.stats();
            let up_to_date =
                stats.published > 0 && copier.last_snapshot().ok() == Some(stats.last_snapshot);
            if !up_to_date {
                copier.publish_and_record();
            }
        }
        self.stats()
    }

    /// Stops the copying thread and takes back its connection.
    fn stop(&self) -> Option<Copier> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.commits = None;
        state.thread.take().and_then(|thread| thread.join().ok())
    }
}

impl Drop for Publisher {
    /// A run that failed before `finish` still waits for a copy in progress.
    fn drop(&mut self) {
        self.stop();
    }
}

/// The copying end: a connection to the warehouse's database.
struct Copier {
    conn: Connection,
    /// The warehouse's catalog name in that connection.
    database: String,
    target: PathBuf,
    stats: Arc<Mutex<PublishStats>>,
}

impl Copier {
    /// The copying thread: publishes once the interval since the last copy has passed and a
    /// snapshot was committed since; ends (returning the connection) when the writer is done.
    fn publish_after_commits(self, commits: &Receiver<()>, interval: Duration) -> Copier {
        let mut last_copy: Option<Instant> = None;
        let mut unpublished = false;
        loop {
            let due = last_copy.map(|at| at + interval);
            let notice = match (unpublished, due) {
                (true, Some(due)) => {
                    commits.recv_timeout(due.saturating_duration_since(Instant::now()))
                }
                _ => commits.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match notice {
                Ok(()) => unpublished = true,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return self,
            }
            if unpublished && due.is_none_or(|due| Instant::now() >= due) {
                last_copy = Some(Instant::now());
                unpublished = false;
                self.publish_and_record();
            }
        }
    }

    fn last_snapshot(&self) -> duckdb::Result<Option<i64>> {
        self.conn.query_row(
            &format!(
                "SELECT max(snapshot_id) FROM {}._snapshots",
                quote_identifier(&self.database)
            ),
            [],
            |row| row.get(0),
        )
    }

    fn publish_and_record(&self) {
        let started = Instant::now();
        let result = self.publish();
        let mut stats = self.stats.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(snapshot) => {
                let took = started.elapsed();
                stats.published += 1;
                stats.last_snapshot = snapshot;
                stats.last_duration = Some(took);
                stats.max_duration = stats.max_duration.max(took);
            }
            Err(error) => {
                eprintln!("tidewater: warning: {error}; the engine goes on");
                stats.failures += 1;
                stats.last_error = Some(error.to_string());
            }
        }
    }

    /// One copy; returns the snapshot it holds. On error the target is left as it was.
    fn publish(&self) -> Result<Option<i64>, SinkError> {
        let tmp = temporary_path(&self.target);
        let wal = wal_path(&tmp);
        let error = |detail: String| SinkError::Publish {
            path: self.target.clone(),
            detail,
        };
        // Leftovers of a copy that was interrupted (kill -9): never copied into.
        for stale in [&tmp, &wal] {
            remove_if_present(stale).map_err(|e| error(format!("{}: {e}", stale.display())))?;
        }
        let copied = self.copy_to(&tmp).map_err(|e| error(e.to_string()));
        let renamed = copied.and_then(|snapshot| {
            if wal.exists() {
                return Err(error(format!(
                    "the copy left a write-ahead log ({}), it is not complete on its own",
                    wal.display()
                )));
            }
            let io = |e: std::io::Error| error(e.to_string());
            std::fs::File::open(&tmp)
                .and_then(|f| f.sync_all())
                .map_err(io)?;
            std::fs::rename(&tmp, &self.target).map_err(io)?;
            // The rename itself survives a power loss once the directory is synced.
            std::fs::File::open(parent_dir(&self.target))
                .and_then(|d| d.sync_all())
                .map_err(io)?;
            Ok(snapshot)
        });
        if renamed.is_err() {
            let _ = remove_if_present(&tmp);
            let _ = remove_if_present(&wal);
        }
        renamed
    }

    /// Copies the whole warehouse, as of one committed snapshot, into a new file `tmp`.
    fn copy_to(&self, tmp: &Path) -> duckdb::Result<Option<i64>> {
        self.conn.execute_batch(&format!(
            "ATTACH {} AS {COPY_ALIAS}",
            quote_literal(&tmp.display().to_string())
        ))?;
        let copied: duckdb::Result<Option<i64>> = (|| {
            // One transaction: the snapshot id read and the data copied are the same state.
            self.conn.execute_batch("BEGIN TRANSACTION")?;
            let snapshot = self.last_snapshot()?;
            self.conn.execute_batch(&format!(
                "COPY FROM DATABASE {} TO {COPY_ALIAS}",
                quote_identifier(&self.database)
            ))?;
            self.conn.execute_batch("COMMIT")?;
            self.conn
                .execute_batch(&format!("CHECKPOINT {COPY_ALIAS}"))?;
            Ok(snapshot)
        })();
        if copied.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        let detached = self.conn.execute_batch(&format!("DETACH {COPY_ALIAS}"));
        let snapshot = copied?;
        detached?;
        Ok(snapshot)
    }
}

fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// `dir/.name.publishing`: next to the target (so `rename` stays on one file system), hidden.
fn temporary_path(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "warehouse".to_owned());
    parent_dir(target).join(format!(".{name}.publishing"))
}

fn wal_path(path: &Path) -> PathBuf {
    PathBuf::from(format!("{}.wal", path.display()))
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// A SQL string literal.
pub(crate) fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A SQL identifier, quoted (database names come from file names).
pub(crate) fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_temporary_copy_is_a_hidden_file_next_to_the_target() {
        assert_eq!(
            temporary_path(Path::new("out/copy.duckdb")),
            Path::new("out/.copy.duckdb.publishing")
        );
        assert_eq!(
            temporary_path(Path::new("copy.duckdb")),
            Path::new("./.copy.duckdb.publishing")
        );
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(quote_identifier("a\"b"), "\"a\"\"b\"");
    }
}
