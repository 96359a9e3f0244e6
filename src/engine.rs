//! Runs a pipeline: pre-flight checks, the timely workers, and the single warehouse writer.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use duckdb::Connection;
use tidewater_connectors::file::{file_source, plan_file, FileLayout};
use tidewater_connectors::kafka::{kafka_source, Alignment};
use tidewater_connectors::{OffsetReset, SourceControl, SourcePlan};
use tidewater_dataflows::operators::{
    CheckpointSchedule, CollectSnapshots, SharedClock, SourceClock, StateEntry, WRITER_WORKER,
};
use tidewater_dataflows::{build_durable_views, Durability, Epoch, Restore, SourceStreams};
use tidewater_sinks::resume::Positions;
use tidewater_sinks::{CommitInfo, PublishStats, Publisher, SinkError, Warehouse};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::{Inspect, Probe};

use crate::cluster::{
    connect_watchdog, lost_peer_panic, panic_text, relay_stops, share_start, timely_config,
    ClusterOptions, Start,
};
use crate::error::EngineError;
use crate::observe::Observer;
use crate::pipeline::{Connector, Pipeline};
use crate::progress::ProgressLine;
use crate::serve_sql::{ServeSql, SqlServer};

/// Called on the writer after each committed snapshot, with the writer's connection (tests use
/// it to check every snapshot against an oracle).
pub type CommitHook = Arc<dyn Fn(&Connection, &CommitInfo) + Send + Sync>;

#[derive(Clone)]
pub struct RunOptions {
    /// Timely worker threads.
    pub workers: usize,
    /// Stop after reading up to the high watermarks seen at start, with a final snapshot.
    pub exit_at_end: bool,
    /// Print a progress line on stderr every second.
    pub progress: bool,
    /// This process's place in a cluster; `None`: one process.
    pub cluster: Option<ClusterOptions>,
    pub on_commit: Option<CommitHook>,
    /// Publishes counters, positions, snapshots and a reader connection (`--serve-http`).
    pub observe: Option<Arc<Observer>>,
    /// Serve read-only SQL over the Postgres wire protocol while running (writer process only;
    /// see `serve_sql`).
    pub serve_sql: Option<ServeSql>,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            workers: 1,
            exit_at_end: false,
            progress: false,
            cluster: None,
            on_commit: None,
            observe: None,
            serve_sql: None,
        }
    }
}

/// What a finished run did.
#[derive(Clone, Debug, PartialEq)]
pub struct RunSummary {
    pub workers: usize,
    pub records_in: u64,
    pub records_rejected: u64,
    /// Rows written to `_late`: one per view and window a late record missed, so a record late
    /// for several views or hopping windows counts several times.
    pub records_late: u64,
    pub snapshots: u64,
    pub elapsed: Duration,
    /// What the publisher did (`publish` in `[warehouse]`; the writer process only).
    pub publish: Option<PublishStats>,
}

impl RunSummary {
    pub fn events_per_second(&self) -> f64 {
        self.records_in as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Counters and the first failure of the warehouse writer.
#[derive(Default)]
struct WriterState {
    snapshots: Arc<AtomicU64>,
    /// Records covered by the snapshots committed so far.
    committed: Arc<AtomicU64>,
    rejected: AtomicU64,
    late: AtomicU64,
    failure: Mutex<Option<SinkError>>,
}

/// (partition → next offset) of one source's positions.
fn offsets_of(positions: &Positions, source: usize) -> BTreeMap<i32, i64> {
    positions
        .iter()
        .filter(|((s, _), _)| *s == source)
        .map(|((_, partition), (offset, _))| (*partition, *offset))
        .collect()
}

/// Runs the pipeline until its sources stop: at the end offsets (`exit_at_end`, or ones set on
/// `control` later), on `control.request_stop()` (Ctrl-C), or on a fatal error. Every stop ends
/// with the last complete epoch committed.
pub fn run(
    pipeline: &Pipeline,
    options: RunOptions,
    control: Arc<SourceControl>,
) -> Result<RunSummary, EngineError> {
    let started = Instant::now();
    let config = &pipeline.config;
    // Process 0 alone opens the warehouse and decides where every source starts; the other
    // processes of a cluster get that start from it once the cluster has formed.
    let process = options.cluster.as_ref().map_or(0, |c| c.process);
    let (warehouse, start, restored_state) = if process == 0 {
        let prepared = prepare(pipeline, &control)?;
        (Some(prepared.0), Some(prepared.1), prepared.2)
    } else {
        (None, None, Vec::new())
    };
    let publisher = match (&warehouse, &config.warehouse.publish) {
        (Some(warehouse), Some(target)) => Some(Arc::new(Publisher::start(
            warehouse,
            target,
            config.warehouse.publish_interval.0,
        )?)),
        _ => None,
    };
    // Started before the workers, so that a taken port stops the run before it reads anything.
    let sql_server = match (&options.serve_sql, &warehouse) {
        (Some(serve), Some(open)) => {
            let server = SqlServer::start(
                &serve.listen,
                open.connection(),
                open.path(),
                serve.password.clone(),
            )?;
            tracing::info!(
                "serving read-only SQL (Postgres protocol) on {}",
                server.address()
            );
            Some(server)
        }
        _ => None,
    };
    let workers = options.workers.max(1);
    if let Some(observer) = &options.observe {
        let processes = options.cluster.as_ref().map_or(1, |c| c.addresses.len());
        let plans = start.as_ref().map_or(&[][..], |s| &s.plans[..]);
        let committed = warehouse
            .as_ref()
            .and_then(|w| w.resume_point())
            .map(|r| &r.committed);
        observer.start_run(
            pipeline,
            workers,
            processes,
            plans,
            committed,
            Arc::clone(&control),
        );
        // A second connection to the same database instance, for readers of the views.
        match warehouse.as_ref().map(|w| w.connection().try_clone()) {
            Some(Ok(reader)) => observer.attach_reader(reader),
            Some(Err(error)) => tracing::warn!("no reader connection to the warehouse: {error}"),
            None => {}
        }
    }
    let warehouse_slot = Arc::new(Mutex::new(warehouse));
    let writer = Arc::new(WriterState::default());
    let snapshot_interval = config.warehouse.snapshot_interval.0;
    let checkpoint_every = config.warehouse.checkpoint_every();
    // The progress line counts committed records: only the writer process knows them.
    let progress_line = (options.progress && process == 0).then(|| {
        ProgressLine::start(
            Arc::clone(&control),
            Arc::clone(&writer.snapshots),
            Arc::clone(&writer.committed),
        )
    });

    let worker_pipeline = Arc::new((pipeline.clone(), start, restored_state));
    let exit_at_end = options.exit_at_end;
    let cluster = options.cluster.clone();
    let connected = cluster.as_ref().map(connect_watchdog);
    let in_cluster = cluster.is_some();
    let worker_control = Arc::clone(&control);
    let worker_writer = Arc::clone(&writer);
    let on_commit = options.on_commit.clone();
    let worker_publisher = publisher.clone();
    let observe = options.observe.clone();
    // One per source, shared by every worker of the process (see `SharedClock`).
    let process_clocks: Vec<SharedClock> = pipeline
        .config
        .sources
        .iter()
        .map(|_| SharedClock::default())
        .collect();
    let config = timely_config(workers, cluster.as_ref());
    let guards = timely::execute(config, move |worker| {
        if let Some(connected) = &connected {
            connected.store(true, Ordering::SeqCst);
        }
        let mut warehouse = if worker.index() == WRITER_WORKER {
            warehouse_slot
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
        } else {
            None
        };
        let control = Arc::clone(&worker_control);
        let writer = Arc::clone(&worker_writer);
        let on_commit = on_commit.clone();
        let publisher = worker_publisher.clone();
        // Only the writer reports to the observer (its frontiers are every worker's).
        let observer = observe.clone().filter(|_| worker.index() == WRITER_WORKER);
        let (pipeline, start, restored_state) = &*worker_pipeline;
        let start = share_start(worker, start.as_ref().filter(|_| worker.index() == 0));
        if exit_at_end {
            for plan in &start.plans {
                control.set_end_offsets(&plan.topic, plan.high_watermarks.clone());
            }
        }
        let plans = &start.plans;
        let clocks = process_clocks.clone();
        let durability = Durability {
            clocks: clocks.clone(),
            checkpoints: Some(CheckpointSchedule {
                every: checkpoint_every,
                first: start.live_from,
            }),
            restore: start.clocks.as_ref().map(|clocks| {
                // Worker 0 (in the writer process, which read it) brings in the whole state;
                // the arrangements route every entry to its key's worker.
                let mut state: BTreeMap<usize, Vec<StateEntry>> = BTreeMap::new();
                if worker.index() == 0 {
                    for (arrangement, entry) in restored_state {
                        state.entry(*arrangement).or_default().push(entry.clone());
                    }
                }
                Restore {
                    clocks: clocks.clone(),
                    state,
                }
            }),
        };
        // How far the dataflow has got: the sources read ahead of it by at most two epochs.
        let processed = ProbeHandle::new();
        worker.dataflow::<Epoch, _, _>(|scope| {
            let sources = pipeline
                .config
                .sources
                .iter()
                .zip(plans)
                .zip(clocks)
                .enumerate()
                .map(|(index, ((source, plan), clock))| {
                    let (records, progress) = match source.connector() {
                        Connector::Kafka(kafka) => {
                            let alignment = Alignment {
                                clock,
                                max_ahead: source
                                    .max_out_of_orderness
                                    .micros()
                                    .saturating_add(source.max_partition_drift.micros()),
                            };
                            kafka_source(
                                scope,
                                &kafka,
                                plan,
                                snapshot_interval,
                                Arc::clone(&control),
                                processed.clone(),
                                Some(alignment),
                            )
                        }
                        // No event-time alignment: the chunks of a time-ordered file start
                        // far apart in event time, and aligning them would read them one
                        // after the other. Finished chunks release the watermark instead.
                        Connector::File(file) => file_source(
                            scope,
                            &file,
                            plan,
                            snapshot_interval,
                            Arc::clone(&control),
                            processed.clone(),
                        ),
                    };
                    // Every worker builds the same operator; the writer's tells the observer
                    // when every source has closed an epoch (freshness starts there).
                    let frontiers = observer.clone();
                    let progress = progress.inspect_core(move |event| {
                        if let (Err(frontier), Some(observer)) = (event, &frontiers) {
                            observer.source_frontier(index, frontier.first().copied());
                        }
                    });
                    SourceStreams { records, progress }
                })
                .collect();
            build_durable_views(
                scope,
                &pipeline.sources,
                &pipeline.views,
                sources,
                &durability,
            )
            .probe_with(&processed)
            .collect_snapshots(move |snapshot| {
                let Some(open) = warehouse.as_mut() else {
                    return;
                };
                open.note_skipped(control.take_skipped().iter().map(|s| s.to_string()));
                match open.commit(&snapshot) {
                    Ok(Some(info)) => {
                        tracing::debug!(
                            snapshot_id = info.snapshot_id,
                            epoch = info.epoch,
                            records_in = info.records_in,
                            rejected = info.records_rejected,
                            late = info.records_late,
                            upserted = info.rows_upserted,
                            deleted = info.rows_deleted,
                            commit_ms = info.duration.as_secs_f64() * 1e3,
                            "snapshot committed"
                        );
                        if let Some(observer) = &observer {
                            observer.snapshot_done(&snapshot, Some(&info));
                        }
                        writer.snapshots.fetch_add(1, Ordering::Relaxed);
                        writer
                            .committed
                            .fetch_add(info.records_in, Ordering::Relaxed);
                        writer
                            .rejected
                            .fetch_add(info.records_rejected, Ordering::Relaxed);
                        writer.late.fetch_add(info.records_late, Ordering::Relaxed);
                        if let Some(hook) = &on_commit {
                            hook(open.connection(), &info);
                        }
                        if let Some(publisher) = &publisher {
                            publisher.after_commit();
                        }
                    }
                    Ok(None) => {
                        if let Some(observer) = &observer {
                            observer.snapshot_done(&snapshot, None);
                        }
                    }
                    Err(error) => {
                        // Later epochs must not be committed on top of the gap: the
                        // writer closes the file and ignores them.
                        warehouse = None;
                        *writer.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
                        control.request_stop();
                    }
                }
            });
        });
        if cluster.is_some() {
            relay_stops(worker, Arc::clone(&worker_control), processed.clone());
        }
        run_to_completion(worker)
    })
    .map_err(|error| match in_cluster {
        // Typically a port of the hostfile that this host cannot listen on.
        true => EngineError::Cluster(format!("could not start this process: {error}")),
        false => EngineError::Worker(error),
    })?;

    // In a cluster, timely's network threads panic when a peer goes away, and joining them
    // (inside `join`) panics again: that, too, means a lost peer.
    let joined = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| guards.join()));
    drop(progress_line);
    drop(sql_server);
    // Also after a failed run: the warehouse holds its last committed snapshot. This closes
    // the last connection to the warehouse, before the run returns.
    let publish = publisher.map(|publisher| publisher.finish());
    // The writer's connection is closed by now; closing the readers' closes the database.
    if let Some(observer) = &options.observe {
        observer.detach_reader();
    }
    let worker_results = joined.map_err(|_| EngineError::PeerLost)?;
    for result in worker_results {
        // `Err`: a panic `run_to_completion` did not catch (its text is lost by then).
        result
            .map_err(EngineError::Worker)?
            .map_err(worker_failure)?;
    }
    if let Some(error) = writer
        .failure
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        return Err(error.into());
    }
    if let Some(error) = control.take_failure() {
        return Err(error.into());
    }
    Ok(RunSummary {
        workers,
        records_in: control.records_in(),
        records_rejected: writer.rejected.load(Ordering::Relaxed),
        records_late: writer.late.load(Ordering::Relaxed),
        snapshots: writer.snapshots.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        publish,
    })
}

/// A checkpoint's arrangement contents: (arrangement index, entry).
type RestoredState = Vec<(usize, StateEntry)>;

/// The writer process's pre-flight: opens the warehouse (nothing is consumed if it cannot be
/// written), reads where the last run stopped, and plans every source (checking Kafka). Returns
/// the warehouse, the start every process builds its dataflow from, and the checkpoint's state.
fn prepare(
    pipeline: &Pipeline,
    control: &SourceControl,
) -> Result<(Warehouse, Start, RestoredState), EngineError> {
    let config = &pipeline.config;
    // Files first: a missing or unreadable file stops the run before the warehouse is touched.
    let mut file_plans: BTreeMap<usize, (SourcePlan, FileLayout)> = BTreeMap::new();
    for (index, source) in config.sources.iter().enumerate() {
        if let Connector::File(file) = source.connector() {
            file_plans.insert(index, plan_file(&file)?);
        }
    }
    let mut warehouse = Warehouse::open(
        &config.warehouse.path,
        &pipeline.views,
        &pipeline.source_infos(),
        &definition_with_files(pipeline, &file_plans),
    )?;
    warehouse.set_changes_retention(config.warehouse.changes_retention());
    let resume = warehouse.resume_point().cloned();
    let mut plans = Vec::new();
    for (index, source) in config.sources.iter().enumerate() {
        if let Some((mut plan, _)) = file_plans.remove(&index) {
            // A file keeps every byte: resuming never skips (the definition check above
            // guarantees the chunks are the ones the stored offsets belong to).
            if let Some(point) = &resume {
                let from = point
                    .checkpoint
                    .as_ref()
                    .map(|c| offsets_of(&c.positions, index))
                    .unwrap_or_default();
                plan.resume(
                    &from,
                    &offsets_of(&point.committed, index),
                    OffsetReset::Error,
                )?;
            }
            plans.push(plan);
            continue;
        }
        let mut plan = SourcePlan::prepare(&source.kafka())?;
        match &resume {
            Some(point) => {
                let from = point
                    .checkpoint
                    .as_ref()
                    .map(|c| offsets_of(&c.positions, index))
                    .unwrap_or_default();
                let skipped = plan.resume(
                    &from,
                    &offsets_of(&point.committed, index),
                    source.offset_reset,
                )?;
                for skipped in skipped {
                    tracing::warn!("{skipped}");
                    control.record_skipped(skipped);
                }
            }
            None => {
                for (partition, earliest) in plan.unretained() {
                    tracing::warn!(
                        "partition {partition} of `{}` starts at offset {earliest}: the broker no longer retains earlier offsets",
                        plan.topic
                    );
                }
            }
        }
        plans.push(plan);
    }
    // A resumed run restores the last checkpoint at epoch 0, replays the records between it
    // and the last snapshot in epoch 1 without writing, and goes on from epoch 2.
    let live_from = if resume.is_some() { 2 } else { 0 };
    warehouse.set_live_from(live_from);
    if let Some(point) = &resume {
        // For a file, offsets are byte positions: what it replays is counted in bytes.
        let (mut records, mut bytes) = (0, 0);
        for (plan, source) in plans.iter().zip(&config.sources) {
            match source.path {
                Some(_) => bytes += plan.replay_records(),
                None => records += plan.replay_records(),
            }
        }
        let replay = match bytes {
            0 => format!("{records} records"),
            _ if records == 0 => format!("{bytes} bytes of files"),
            _ => format!("{records} records and {bytes} bytes of files"),
        };
        tracing::info!(
            "resuming after snapshot {} from {}: {} state entries restored, {replay} to replay",
            point.last_snapshot,
            point.checkpoint.as_ref().map_or(
                "the beginning of every partition".to_owned(),
                |c| format!("the checkpoint of snapshot {}", c.snapshot_id)
            ),
            point.checkpoint.as_ref().map_or(0, |c| c.state.len()),
        );
    }
    let restored = resume.as_ref().map(|point| {
        let checkpoint = point.checkpoint.clone().unwrap_or_default();
        let clocks = (0..config.sources.len())
            .map(|index| SourceClock {
                max_event_times: checkpoint
                    .positions
                    .iter()
                    .filter(|((source, _), _)| *source == index)
                    .filter_map(|((_, partition), (_, max))| max.map(|m| (*partition, m)))
                    .collect(),
                watermark: checkpoint
                    .watermarks
                    .get(&index)
                    .copied()
                    .unwrap_or(i64::MIN),
            })
            .collect::<Vec<_>>();
        (clocks, checkpoint.state)
    });
    let (clocks, state) = match restored {
        Some((clocks, state)) => (Some(clocks), state),
        None => (None, Vec::new()),
    };
    let start = Start {
        plans,
        clocks,
        live_from,
    };
    Ok((warehouse, start, state))
}

/// The definition the warehouse stores and checks on restart: the pipeline's, plus the size and
/// chunks of every file source, so that a restart on a changed file (whose stored byte offsets
/// would mean nothing) is refused instead of mixing data.
fn definition_with_files(
    pipeline: &Pipeline,
    file_plans: &BTreeMap<usize, (SourcePlan, FileLayout)>,
) -> String {
    let mut definition = pipeline.definition();
    for (index, (plan, layout)) in file_plans {
        definition.push_str(&format!(
            "\n# source `{}` reads file {}: {layout}\n",
            pipeline.config.sources[*index].name, plan.topic
        ));
    }
    definition
}

/// Steps the worker until all its dataflows are complete. A panic while stepping comes back
/// as its text (timely's join would reduce it to "Any { .. }").
fn run_to_completion(worker: &mut timely::worker::Worker) -> Result<(), String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        while worker.step_or_park(Some(Duration::from_millis(10))) {}
    }))
    .map_err(|panic| {
        panic_text(panic.as_ref())
            .unwrap_or("a worker panicked")
            .to_owned()
    })
}

/// A worker's panic as an error; timely's own words when a peer process went away.
fn worker_failure(panic: String) -> EngineError {
    match lost_peer_panic(&panic) {
        Some(_) => EngineError::PeerLost,
        None => EngineError::Worker(panic),
    }
}
