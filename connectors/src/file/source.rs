//! The file source operator.
//!
//! Each worker reads the chunks assigned to it (chunk c to worker c mod workers) from the byte
//! offsets of the plan, an equal share of `read_batch` lines per chunk and activation. Epochs
//! are closed exactly as the Kafka source closes them: every snapshot interval the worker
//! reports, per chunk, the byte position after the last line read, then downgrades its
//! capabilities; the records of an epoch are exactly the lines below the reported positions.
//! Blank lines are skipped (they move the position but are no record).
//!
//! A restart (a plan with `replay_until`) reports the checkpoint's positions at epoch 0, reads
//! exactly up to the last snapshot's positions in epoch 1, and goes on from epoch 2. Positions
//! are line starts, so the replay stops exactly there (no record is read past it and held).
//!
//! A worker whose chunks are all read to their end closes a last epoch and drops its
//! capabilities: once every worker has, the run ends with a final snapshot. Chunks read to
//! their end are reported `finished`, so they stop holding back the source watermark.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tidewater_dataflows::{Epoch, RawRecord, SourceProgress};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, StreamVec};

use super::lines::ChunkReader;
use super::FileSourceConfig;
use crate::control::{dataflow_behind, SourceControl};
use crate::error::ConnectorError;
use crate::kafka::SourcePlan;

/// How long a source that may not read (backpressure) waits before it looks again.
const BACKPRESSURE_WAIT: Duration = Duration::from_millis(5);

/// One chunk of this worker and the lines read from it in the current epoch.
struct Chunk {
    reader: ChunkReader,
    records_in_epoch: u64,
}

/// The state of a worker that reads at least one chunk.
struct ChunksOfWorker {
    chunks: BTreeMap<i32, Chunk>,
    records_cap: Capability<Epoch>,
    progress_cap: Capability<Epoch>,
    epoch_deadline: Instant,
    /// During a restart's replay: chunk → the position the replay epoch reads up to.
    replay_until: Option<BTreeMap<i32, i64>>,
    /// Whether epoch 0 of a restart (the checkpoint's positions) has been reported.
    replay_started: bool,
}

impl ChunksOfWorker {
    /// Where the current epoch stops reading chunk `partition` (its end, or the replay's).
    fn limit(&self, partition: i32, chunk: &Chunk) -> Option<i64> {
        self.replay_until
            .as_ref()
            .map(|until| until.get(&partition).copied().unwrap_or(0))
            .filter(|_| !chunk.reader.at_end())
    }

    fn readable(&self, partition: i32, chunk: &Chunk) -> bool {
        !chunk.reader.at_end()
            && self
                .limit(partition, chunk)
                .is_none_or(|limit| chunk.reader.next_offset() < limit)
    }

    fn all_at_end(&self) -> bool {
        self.chunks.values().all(|c| c.reader.at_end())
    }

    fn replay_done(&self) -> bool {
        self.replay_until.is_some()
            && self
                .chunks
                .iter()
                .all(|(p, chunk)| !self.readable(*p, chunk))
    }
}

type RecordsOutput = OutputBuilder<Epoch, CapacityContainerBuilder<Vec<RawRecord>>>;
type ProgressOutput = OutputBuilder<Epoch, CapacityContainerBuilder<Vec<SourceProgress>>>;

/// Builds this worker's file source. Returns the stream of lines and the stream of per-epoch
/// chunk progress. `processed` is a probe on the dataflow's output (backpressure). A chunk that
/// cannot be opened or read stops the run through `control`.
pub fn file_source<'scope>(
    scope: Scope<'scope, Epoch>,
    config: &FileSourceConfig,
    plan: &SourcePlan,
    snapshot_interval: Duration,
    control: Arc<SourceControl>,
    processed: ProbeHandle<Epoch>,
) -> (
    StreamVec<'scope, Epoch, RawRecord>,
    StreamVec<'scope, Epoch, SourceProgress>,
) {
    let assigned = plan.partitions_of_worker(scope.index(), scope.peers());
    let path = config.path.clone();
    let failed = move |detail: String| ConnectorError::FileSource {
        path: path.display().to_string(),
        detail,
    };
    let opened: Result<BTreeMap<i32, Chunk>, ConnectorError> = assigned
        .iter()
        .map(|(partition, start)| {
            let end = plan.high_watermarks.get(partition).copied().unwrap_or(0);
            let reader = ChunkReader::open(&config.path, *start, end)
                .map_err(|e| failed(format!("chunk {partition}: {e}")))?;
            let chunk = Chunk {
                reader,
                records_in_epoch: 0,
            };
            Ok((*partition, chunk))
        })
        .collect();
    let chunks = opened.map_err(|error| control.fail(error)).ok();

    let mut builder = OperatorBuilder::new(format!("FileSource({})", plan.topic), scope);
    let activator = scope.activator_for(builder.operator_info().address);
    let (records_output, records) = builder.new_output::<Vec<RawRecord>>();
    let (progress_output, progress) = builder.new_output::<Vec<SourceProgress>>();
    let mut records_output = RecordsOutput::from(records_output);
    let mut progress_output = ProgressOutput::from(progress_output);
    let read_batch = config.read_batch.max(1);
    let replay_until: Option<BTreeMap<i32, i64>> = plan.replay_until.as_ref().map(|until| {
        until
            .iter()
            .filter(|(p, _)| assigned.contains_key(p))
            .map(|(p, o)| (*p, *o))
            .collect()
    });

    builder.build(move |mut capabilities| {
        let progress_cap = capabilities.pop().expect("progress capability");
        let records_cap = capabilities.pop().expect("records capability");
        // A worker without chunks drops its capabilities at once: it never holds back the
        // frontier of the others.
        let mut reader = chunks
            .filter(|chunks| !chunks.is_empty())
            .map(|chunks| ChunksOfWorker {
                chunks,
                records_cap,
                progress_cap,
                epoch_deadline: Instant::now() + snapshot_interval,
                replay_until,
                replay_started: false,
            });

        move |_frontiers| {
            let Some(state) = reader.as_mut() else { return };
            if state.replay_until.is_some() && !state.replay_started {
                // Epoch 0 of a restart: where the replay starts, so the event-time clocks and
                // watermarks restored at epoch 0 line up with the checkpoint.
                state.replay_started = true;
                close_epoch(state, &mut progress_output);
                state.records_cap.downgrade(&1);
                state.progress_cap.downgrade(&1);
            }
            let stopping = control.stop_requested();
            let current = *state.records_cap.time();
            if !stopping && dataflow_behind(&processed, current) {
                activator.activate_after(BACKPRESSURE_WAIT);
                return;
            }
            if !stopping {
                if let Err(error) = read_lines(state, read_batch, &mut records_output, &control) {
                    control.fail(failed(error.to_string()));
                }
            }
            let finished = control.stop_requested() || state.all_at_end();
            let now = Instant::now();
            // The replay epoch ends when the replay does, never on the clock.
            let epoch_over = match &state.replay_until {
                Some(_) => state.replay_done(),
                None => now >= state.epoch_deadline,
            };
            if finished || epoch_over {
                close_epoch(state, &mut progress_output);
                if finished {
                    reader = None;
                    return;
                }
                let next = *state.records_cap.time() + 1;
                state.records_cap.downgrade(&next);
                state.progress_cap.downgrade(&next);
                state.epoch_deadline = now + snapshot_interval;
                state.replay_until = None;
            }
            // More to read: come back at once (other operators run in between).
            activator.activate();
        }
    });
    (records, progress)
}

/// Reads up to `read_batch` lines, an equal share from each chunk that may be read, into the
/// current epoch.
fn read_lines(
    state: &mut ChunksOfWorker,
    read_batch: usize,
    records_output: &mut RecordsOutput,
    control: &SourceControl,
) -> std::io::Result<()> {
    let readable: Vec<(i32, Option<i64>)> = state
        .chunks
        .iter()
        .filter(|(p, chunk)| state.readable(**p, chunk))
        .map(|(p, chunk)| (*p, state.limit(*p, chunk)))
        .collect();
    let share = (read_batch / readable.len().max(1)).max(1);
    let mut output = records_output.activate();
    let mut session = output.session(&state.records_cap);
    let mut records = 0u64;
    for (partition, limit) in readable {
        let chunk = state.chunks.get_mut(&partition).expect("a readable chunk");
        let mut taken = 0;
        while taken < share && limit.is_none_or(|limit| chunk.reader.next_offset() < limit) {
            let Some(line) = chunk.reader.next_line()? else {
                break;
            };
            taken += 1;
            if line.is_blank() {
                continue;
            }
            chunk.records_in_epoch += 1;
            records += 1;
            session.give(RawRecord {
                partition,
                offset: line.offset,
                payload: line.payload,
            });
        }
    }
    control.add_records_in(records);
    Ok(())
}

/// Reports the position of every chunk of this worker for the current epoch.
fn close_epoch(state: &mut ChunksOfWorker, progress_output: &mut ProgressOutput) {
    let mut output = progress_output.activate();
    let mut session = output.session(&state.progress_cap);
    for (partition, chunk) in state.chunks.iter_mut() {
        session.give(SourceProgress {
            partition: *partition,
            next_offset: chunk.reader.next_offset(),
            records: std::mem::take(&mut chunk.records_in_epoch),
            // Filled in after decoding, by the `event_time` operator.
            max_event_time: None,
            idle: false,
            finished: chunk.reader.at_end(),
        });
    }
}
