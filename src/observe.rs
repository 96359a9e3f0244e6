//! What a running engine shows to observers (the `--serve-http` server, or a test): counters
//! and partition positions updated by the warehouse writer at each commit, the times epochs
//! closed (for freshness), a broadcast of committed snapshots, and a second DuckDB connection
//! to the warehouse for reading views.
//!
//! The engine never waits on an observer: it takes one short lock per snapshot (and per
//! frontier change of a source), the broadcast drops events for subscribers that fall behind,
//! and readers query their own connection (DuckDB's MVCC gives each read one committed
//! snapshot; the writer is never blocked by it).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use duckdb::Connection;
use serde::Serialize;
use tidewater_connectors::{KafkaSourceConfig, SourceControl, SourcePlan};
use tidewater_dataflows::operators::Snapshot;
use tidewater_dataflows::Epoch;
use tidewater_sinks::resume::Positions;
use tidewater_sinks::CommitInfo;
use tokio::sync::broadcast;

use crate::pipeline::{Connector, Pipeline};

/// Snapshot events kept for a subscriber that has not read them yet; a slower one skips ahead.
const EVENT_BUFFER: usize = 256;

/// Epoch close times kept at most (the writer normally removes them as it commits).
const MAX_OPEN_EPOCHS: usize = 4096;

/// One committed snapshot, as `/events` sends it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SnapshotEvent {
    pub snapshot_id: i64,
    pub epoch: u64,
    /// Wall-clock time of the commit, RFC 3339 (UTC, milliseconds).
    pub committed_at: String,
    pub records_in: u64,
    pub records_rejected: u64,
    pub records_late: u64,
    pub rows_upserted: u64,
    pub rows_deleted: u64,
    pub rows_changed: u64,
    /// The commit's transaction, in milliseconds.
    pub commit_ms: f64,
    /// From the close of the snapshot's epoch (every source had reported its offsets for it)
    /// to the end of its commit, in milliseconds; `None` when the close was not seen.
    pub freshness_ms: Option<f64>,
    /// Records committed by this run so far.
    pub records_in_total: u64,
    /// Kafka sources: records in the topics not yet committed (high watermark − committed
    /// offset, summed over partitions); `None` without Kafka sources.
    pub lag_records: Option<i64>,
    /// File sources: bytes not yet committed; `None` without file sources.
    pub remaining_bytes: Option<i64>,
}

/// A source as observers see it.
#[derive(Clone, Debug)]
pub struct ObservedSource {
    pub name: String,
    /// The topic, or the file's path as written.
    pub topic: String,
    /// `Some` for a Kafka source (its high watermarks can be refreshed), `None` for a file.
    pub kafka: Option<KafkaSourceConfig>,
}

/// Where one partition (or file chunk) stands.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PartitionStats {
    /// The next offset (byte position for a file) committed with the last snapshot.
    pub committed_offset: i64,
    /// The end of the partition: Kafka's high watermark (refreshed while serving), the chunk's
    /// end for a file.
    pub high_watermark: Option<i64>,
    /// Records of this partition committed by this run.
    pub records_in: u64,
    /// Largest event time committed (µs since the Unix epoch).
    pub max_event_time: Option<i64>,
}

impl PartitionStats {
    /// Records (bytes for a file) not yet committed, when the end is known.
    pub fn lag(&self) -> Option<i64> {
        self.high_watermark
            .map(|high| (high - self.committed_offset).max(0))
    }
}

/// A view table as observers see it.
#[derive(Clone, Debug, PartialEq)]
pub struct ViewInfo {
    pub name: String,
    /// (column, SQL type).
    pub columns: Vec<(String, String)>,
    /// The first `key_len` columns identify a row (group fields and `window_start`).
    pub key_len: usize,
    /// Whether rows have `window_start`/`window_end` and `is_final`.
    pub windowed: bool,
    /// Group, window and aggregates in words (as `tidewater check` prints them).
    pub description: String,
}

/// Latency buckets of the commit histogram, in seconds.
pub const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A cumulative histogram over [`LATENCY_BUCKETS`] (Prometheus style).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Histogram {
    /// Observations at most each bucket's bound (not cumulative; see `cumulative`).
    pub counts: [u64; LATENCY_BUCKETS.len()],
    pub sum: f64,
    pub count: u64,
}

impl Histogram {
    pub fn observe(&mut self, seconds: f64) {
        if let Some(bucket) = LATENCY_BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.counts[bucket] += 1;
        }
        self.sum += seconds;
        self.count += 1;
    }

    /// (upper bound, observations at most that), ascending, without `+Inf` (that is `count`).
    pub fn cumulative(&self) -> impl Iterator<Item = (f64, u64)> + '_ {
        LATENCY_BUCKETS
            .iter()
            .zip(self.counts.iter())
            .scan(0, |total, (bound, count)| {
                *total += count;
                Some((*bound, *total))
            })
    }
}

/// A consistent copy of everything counted, for the metrics page.
#[derive(Clone, Debug, Default)]
pub struct Counters {
    /// Worker threads of this process, and processes in the cluster.
    pub workers: usize,
    pub processes: usize,
    pub sources: Vec<ObservedSource>,
    /// (source index, partition) → its stats.
    pub partitions: BTreeMap<(usize, i32), PartitionStats>,
    /// Source index → watermark at the last commit (µs; absent before every partition had a record).
    pub watermarks: BTreeMap<usize, i64>,
    pub snapshots: u64,
    pub records_in: u64,
    pub records_rejected: u64,
    pub records_late: u64,
    pub rows_upserted: u64,
    pub rows_deleted: u64,
    pub commit_seconds: Histogram,
    pub freshness_seconds: Histogram,
    /// Records read by this process's sources (committed or not, replays included).
    pub records_read: u64,
    pub last: Option<SnapshotEvent>,
    /// Seconds since the last commit (or since the run started, before any).
    pub seconds_since_commit: Option<f64>,
}

/// See the module's documentation. Shared as `Arc<Observer>` by the engine and the server.
pub struct Observer {
    state: Mutex<State>,
    events: broadcast::Sender<SnapshotEvent>,
    reader: Mutex<Option<Connection>>,
}

#[derive(Default)]
struct State {
    counters: Counters,
    views: Vec<ViewInfo>,
    control: Option<Arc<SourceControl>>,
    last_commit: Option<Instant>,
    /// Positions reported by snapshots, committed or not yet (a restart's replay epochs are
    /// committed with the first live snapshot).
    pending: Positions,
    /// Per source: the frontier of its progress stream (`None`: every epoch is closed).
    frontiers: Vec<Option<Epoch>>,
    /// Epochs below this one are closed by every source.
    closed_below: Epoch,
    /// When each epoch not yet committed was closed by every source.
    closed_at: BTreeMap<Epoch, Instant>,
    /// When every source was done (all epochs from `closed_below` on closed then).
    all_closed_at: Option<Instant>,
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").finish_non_exhaustive()
    }
}

impl Observer {
    pub fn new() -> Arc<Observer> {
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        Arc::new(Observer {
            state: Mutex::new(State::default()),
            events,
            reader: Mutex::new(None),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Called by the engine once it knows where every source starts: `plans` (empty in a
    /// process that does not write the warehouse) and, when resuming, the positions the
    /// warehouse had committed.
    pub fn start_run(
        &self,
        pipeline: &Pipeline,
        workers: usize,
        processes: usize,
        plans: &[SourcePlan],
        committed: Option<&Positions>,
        control: Arc<SourceControl>,
    ) {
        let mut state = self.state();
        let counters = &mut state.counters;
        counters.workers = workers;
        counters.processes = processes;
        counters.sources = pipeline
            .config
            .sources
            .iter()
            .map(|source| match source.connector() {
                Connector::Kafka(kafka) => ObservedSource {
                    name: source.name.clone(),
                    topic: kafka.topic.clone(),
                    kafka: Some(kafka),
                },
                Connector::File(file) => ObservedSource {
                    name: source.name.clone(),
                    topic: file.path.display().to_string(),
                    kafka: None,
                },
            })
            .collect();
        for (index, plan) in plans.iter().enumerate() {
            for (partition, start) in &plan.start_offsets {
                let committed = committed.and_then(|c| c.get(&(index, *partition)));
                counters.partitions.insert(
                    (index, *partition),
                    PartitionStats {
                        committed_offset: committed.map_or(*start, |(offset, _)| *offset),
                        high_watermark: plan.high_watermarks.get(partition).copied(),
                        records_in: 0,
                        max_event_time: committed.and_then(|(_, max)| *max),
                    },
                );
            }
        }
        state.views = pipeline
            .views
            .iter()
            .map(|view| ViewInfo {
                name: view.name.clone(),
                columns: view
                    .columns
                    .iter()
                    .map(|c| (c.name.clone(), c.sql_type.to_owned()))
                    .collect(),
                key_len: view.key_len,
                windowed: view.window.is_windowed(),
                description: view.describe(),
            })
            .collect();
        state.frontiers = vec![Some(0); pipeline.config.sources.len()];
        state.control = Some(control);
        state.last_commit = Some(Instant::now());
    }

    /// Gives observers a connection of their own to the warehouse (`Connection::try_clone` of
    /// the writer's: the same database instance, so reads see committed snapshots).
    pub fn attach_reader(&self, connection: Connection) {
        *self.reader.lock().unwrap_or_else(|e| e.into_inner()) = Some(connection);
    }

    /// Closes the observers' connection (the engine does at the end of a run, so that the
    /// database is closed when the run returns).
    pub fn detach_reader(&self) {
        self.reader.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// A fresh connection to the warehouse for one reader; `None` when this process does not
    /// write one or the run has ended.
    pub fn reader(&self) -> Result<Option<Connection>, duckdb::Error> {
        self.reader
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(Connection::try_clone)
            .transpose()
    }

    pub fn views(&self) -> Vec<ViewInfo> {
        self.state().views.clone()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<SnapshotEvent> {
        self.events.subscribe()
    }

    pub fn counters(&self) -> Counters {
        let state = self.state();
        let mut counters = state.counters.clone();
        counters.records_read = state.control.as_ref().map_or(0, |c| c.records_in());
        counters.seconds_since_commit = state.last_commit.map(|t| t.elapsed().as_secs_f64());
        counters
    }

    /// A source's progress stream has a new frontier (`None`: empty, the source is done).
    /// Epochs every source has closed get their closing time.
    pub fn source_frontier(&self, source: usize, frontier: Option<Epoch>) {
        let now = Instant::now();
        let mut state = self.state();
        let Some(slot) = state.frontiers.get_mut(source) else {
            return;
        };
        *slot = frontier;
        let Some(below) = state.frontiers.iter().flatten().min().copied() else {
            // Every source is done: the epochs still open closed now.
            state.all_closed_at.get_or_insert(now);
            return;
        };
        let from = state
            .closed_below
            .max(below.saturating_sub(MAX_OPEN_EPOCHS as Epoch));
        for epoch in from..below {
            state.closed_at.insert(epoch, now);
        }
        state.closed_below = state.closed_below.max(below);
        while state.closed_at.len() > MAX_OPEN_EPOCHS {
            state.closed_at.pop_first();
        }
    }

    /// High watermarks fetched from Kafka for one source.
    pub fn set_high_watermarks(&self, source: usize, marks: &BTreeMap<i32, i64>) {
        let mut state = self.state();
        for (partition, high) in marks {
            state
                .counters
                .partitions
                .entry((source, *partition))
                .or_default()
                .high_watermark = Some(*high);
        }
    }

    /// The writer has handled a complete snapshot: committed it (`committed` is its info), or
    /// found nothing to commit (an empty epoch, or a restart's replay).
    pub fn snapshot_done(&self, snapshot: &Snapshot, committed: Option<&CommitInfo>) {
        let now = Instant::now();
        let mut state = self.state();
        let state = &mut *state;
        for (source, progress) in &snapshot.progress {
            state.pending.insert(
                (*source, progress.partition),
                (progress.next_offset, progress.max_event_time),
            );
        }
        let Some(info) = committed else {
            return;
        };
        let counters = &mut state.counters;
        for ((source, partition), (offset, max)) in &state.pending {
            let stats = counters
                .partitions
                .entry((*source, *partition))
                .or_default();
            stats.committed_offset = *offset;
            stats.max_event_time = max.or(stats.max_event_time);
        }
        for (source, progress) in &snapshot.progress {
            if let Some(stats) = counters.partitions.get_mut(&(*source, progress.partition)) {
                stats.records_in += progress.records;
            }
        }
        counters.watermarks.extend(
            snapshot
                .watermarks
                .iter()
                .filter(|(_, w)| **w > i64::MIN)
                .map(|(s, w)| (*s, *w)),
        );
        let closed = state.closed_at.get(&info.epoch).copied().or(state
            .all_closed_at
            .filter(|_| info.epoch >= state.closed_below));
        let freshness = closed.map(|closed| now.duration_since(closed));
        state.closed_at = state.closed_at.split_off(&(info.epoch + 1));
        counters.snapshots += 1;
        counters.records_in += info.records_in;
        counters.records_rejected += info.records_rejected;
        counters.records_late += info.records_late;
        counters.rows_upserted += info.rows_upserted;
        counters.rows_deleted += info.rows_deleted;
        counters.commit_seconds.observe(info.duration.as_secs_f64());
        if let Some(freshness) = freshness {
            counters.freshness_seconds.observe(freshness.as_secs_f64());
        }
        let lag = |kafka: bool| {
            let mut lags = counters
                .partitions
                .iter()
                .filter(|((source, _), _)| {
                    counters
                        .sources
                        .get(*source)
                        .is_some_and(|s| s.kafka.is_some() == kafka)
                })
                .filter_map(|(_, stats)| stats.lag())
                .peekable();
            lags.peek().is_some().then(|| lags.sum::<i64>())
        };
        let event = SnapshotEvent {
            snapshot_id: info.snapshot_id,
            epoch: info.epoch,
            committed_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            records_in: info.records_in,
            records_rejected: info.records_rejected,
            records_late: info.records_late,
            rows_upserted: info.rows_upserted,
            rows_deleted: info.rows_deleted,
            rows_changed: info.rows_upserted + info.rows_deleted,
            commit_ms: millis(info.duration),
            freshness_ms: freshness.map(millis),
            records_in_total: counters.records_in,
            lag_records: lag(true),
            remaining_bytes: lag(false),
        };
        counters.last = Some(event.clone());
        state.last_commit = Some(now);
        // No subscriber is not an error: nobody is watching.
        let _ = self.events.send(event);
    }
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let mut histogram = Histogram::default();
        for seconds in [0.0005, 0.003, 0.003, 0.2, 30.0] {
            histogram.observe(seconds);
        }
        let cumulative: Vec<(f64, u64)> = histogram.cumulative().collect();
        assert_eq!(cumulative[0], (0.001, 1));
        assert_eq!(cumulative[2], (0.005, 3));
        assert_eq!(cumulative[7], (0.25, 4));
        assert_eq!(cumulative.last(), Some(&(10.0, 4)));
        assert_eq!(histogram.count, 5);
        assert!((histogram.sum - 30.2065).abs() < 1e-9);
    }

    #[test]
    fn epochs_closed_by_every_source_get_a_time() {
        let observer = Observer::new();
        observer.state().frontiers = vec![Some(0), Some(0)];
        observer.source_frontier(0, Some(3));
        assert!(observer.state().closed_at.is_empty(), "source 1 is at 0");
        observer.source_frontier(1, Some(2));
        let closed: Vec<Epoch> = observer.state().closed_at.keys().copied().collect();
        assert_eq!(closed, vec![0, 1]);
        observer.source_frontier(1, None);
        assert_eq!(observer.state().closed_below, 3);
        observer.source_frontier(0, None);
        let state = observer.state();
        assert_eq!(state.closed_at.len(), 3, "epochs 0, 1 and 2");
        assert!(
            state.all_closed_at.is_some(),
            "and every later one at the end"
        );
    }
}
