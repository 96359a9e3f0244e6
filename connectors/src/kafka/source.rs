//! The Kafka source operator.
//!
//! Each worker reads the partitions `assign`ed to it (partition p to worker p mod workers) from
//! the offsets of the plan, in bounded poll batches. Timely time is the ingestion epoch: every
//! snapshot interval a worker closes its epoch by reporting the next offset of each of its
//! partitions on the progress output, then downgrades its capabilities to the next epoch. The
//! records of an epoch are therefore exactly those below the offsets reported for it.
//!
//! A restart (a plan with `replay_until`) reports the checkpoint's offsets at epoch 0, reads
//! exactly up to the last snapshot's offsets in epoch 1 (pausing each partition that gets
//! there, holding back records fetched beyond), and goes on normally from epoch 2.
//!
//! Delivery: the source itself commits nothing to Kafka and keeps no state of its own; it reads
//! from the offsets it is given. Together with a sink that commits offsets with the data (the
//! DuckDB warehouse) and restarts from them, every record is applied exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::base_consumer::PartitionQueue;
use rdkafka::consumer::{BaseConsumer, Consumer, DefaultConsumerContext};
use rdkafka::error::KafkaError;
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};
use tidewater_dataflows::operators::SharedClock;
use tidewater_dataflows::{Epoch, RawRecord, SourceProgress};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, StreamVec};

use super::client::consumer_config;
use super::plan::{fetch_watermarks, SourcePlan};
use super::{KafkaSourceConfig, OffsetReset, SkippedOffsets};
use crate::control::{dataflow_behind, SourceControl};
use crate::error::ConnectorError;

/// Longest pause of an idle source before it polls again; bounds the latency an idle worker adds.
const IDLE_POLL: Duration = Duration::from_millis(5);

/// Position of one assigned partition.
struct PartitionPosition {
    next_offset: i64,
    records_in_epoch: u64,
}

/// The state of a worker that reads at least one partition.
struct PartitionReader {
    consumer: Arc<BaseConsumer>,
    /// One queue per assigned partition, so that a partition ahead in event time is simply not
    /// polled: its fetched records wait in librdkafka (bounded by `queued.max.messages.kbytes`)
    /// instead of being dropped by a pause and fetched again.
    queues: BTreeMap<i32, PartitionQueue<DefaultConsumerContext>>,
    positions: BTreeMap<i32, PartitionPosition>,
    records_cap: Capability<Epoch>,
    progress_cap: Capability<Epoch>,
    epoch_deadline: Instant,
    replay: Option<Replay>,
    outage: Outage,
    /// Partitions not polled because they are too far ahead in event time.
    ahead: BTreeSet<i32>,
    /// Partitions whose last event was the end of the log (`PartitionEOF`).
    at_end: BTreeSet<i32>,
}

/// One item from a consumer or partition queue, owned so the queue can be polled again.
enum Polled {
    Record(RawRecord),
    Error(KafkaError),
}

impl From<KafkaResult<BorrowedMessage<'_>>> for Polled {
    fn from(result: KafkaResult<BorrowedMessage<'_>>) -> Self {
        match result {
            Ok(message) => Polled::Record(RawRecord {
                partition: message.partition(),
                offset: message.offset(),
                payload: message.payload().unwrap_or_default().to_vec(),
            }),
            Err(error) => Polled::Error(error),
        }
    }
}

enum Accepted {
    Record(RawRecord),
    /// Read past the replay's end, given out after it.
    Held,
    Nothing,
    Fatal,
}

impl PartitionReader {
    /// Takes one polled item: a record for the current epoch, a record held back for after the
    /// replay, the end of a partition, or an error (transient, or fatal and reported).
    fn accept(
        &mut self,
        item: Polled,
        config: &KafkaSourceConfig,
        control: &SourceControl,
        alignment: Option<&Alignment>,
    ) -> Accepted {
        let record = match item {
            Polled::Record(record) => record,
            Polled::Error(KafkaError::PartitionEOF(partition)) => {
                // Caught up with the log: it must not hold the others back.
                if let Some(alignment) = alignment {
                    if self.at_end.insert(partition) {
                        alignment.clock.set_at_end(partition, true);
                    }
                }
                return Accepted::Nothing;
            }
            Polled::Error(error) => {
                return match classify_error(config, &self.positions, error) {
                    Ok(transient) => {
                        self.outage.error(&config.topic, transient);
                        Accepted::Nothing
                    }
                    Err(fatal) => {
                        control.fail(fatal);
                        Accepted::Fatal
                    }
                };
            }
        };
        let partition = record.partition;
        let Some(position) = self.positions.get_mut(&partition) else {
            return Accepted::Nothing;
        };
        if self.at_end.remove(&partition) {
            if let Some(alignment) = alignment {
                alignment.clock.set_at_end(partition, false);
            }
        }
        self.outage.recovered(&config.topic);
        if let Some(replay) = self.replay.as_mut() {
            if record.offset >= replay.until.get(&partition).copied().unwrap_or(0) {
                replay.held.push(record);
                replay.done.insert(partition);
                return Accepted::Held;
            }
        }
        if record.offset > position.next_offset && config.offset_reset != OffsetReset::Error {
            // librdkafka jumped past offsets that were deleted, as the policy allows: say so,
            // and let the warehouse record it.
            let skipped = SkippedOffsets {
                topic: config.topic.clone(),
                partition,
                from: position.next_offset,
                to: record.offset,
                policy: config.offset_reset,
            };
            tracing::warn!("{skipped}");
            control.record_skipped(skipped);
        }
        position.next_offset = record.offset + 1;
        position.records_in_epoch += 1;
        Accepted::Record(record)
    }
}

/// Marks partitions too far ahead of the slowest partition still reading (see [`SharedClock`])
/// so that they are not polled, and those back within reach so that they are again.
fn align_partitions(state: &mut PartitionReader, alignment: &Alignment) {
    let view = alignment.clock.view();
    let Some(reference) = view.alignment_reference() else {
        return;
    };
    let limit = reference.saturating_add(alignment.max_ahead);
    for partition in state.positions.keys() {
        let ahead = view
            .max_event_times
            .get(partition)
            .is_some_and(|max| *max > limit);
        if ahead {
            state.ahead.insert(*partition);
        } else {
            state.ahead.remove(partition);
        }
    }
}

/// A restart's replay: epoch 0 reports where the replay starts (the checkpoint), epoch 1 holds
/// exactly the records up to the last snapshot's offsets, and the run goes on from epoch 2. A
/// partition that reaches its end is no longer polled (its fetched records wait in its
/// librdkafka queue; no pause, whose purge and refetch could skip records); the one record per
/// partition that was taken past the end waits in `held` for epoch 2.
struct Replay {
    until: BTreeMap<i32, i64>,
    started: bool,
    done: BTreeSet<i32>,
    held: Vec<RawRecord>,
}

impl Replay {
    /// Marks partitions whose position reached their end.
    fn mark_done(&mut self, positions: &BTreeMap<i32, PartitionPosition>) {
        for (partition, position) in positions {
            if position.next_offset >= self.until.get(partition).copied().unwrap_or(0) {
                self.done.insert(*partition);
            }
        }
    }
}

/// Builds this worker's Kafka source. Returns the stream of records and the stream of
/// per-epoch partition progress. Every worker builds the same operator (timely requires the
/// same dataflow everywhere); a worker whose consumer cannot be set up reports the error through
/// `control`, which stops all sources.
/// Keeps the partitions of a process aligned in event time: a partition whose largest event time
/// is more than `max_ahead` (µs) past the slowest partition still reading is paused until that
/// one catches up, so one fast partition cannot hold every window open while a slow one lags
/// (the source watermark is the minimum over partitions). It changes only how partitions
/// interleave.
pub struct Alignment {
    pub clock: SharedClock,
    pub max_ahead: i64,
}

/// `processed` is a probe on the dataflow's output: the source reads only while the dataflow
/// is at most `MAX_EPOCHS_AHEAD` epochs behind it (see `dataflow_behind`).
pub fn kafka_source<'scope>(
    scope: Scope<'scope, Epoch>,
    config: &KafkaSourceConfig,
    plan: &SourcePlan,
    snapshot_interval: Duration,
    control: Arc<SourceControl>,
    processed: ProbeHandle<Epoch>,
    alignment: Option<Alignment>,
) -> (
    StreamVec<'scope, Epoch, RawRecord>,
    StreamVec<'scope, Epoch, SourceProgress>,
) {
    let mut builder = OperatorBuilder::new(format!("KafkaSource({})", config.topic), scope);
    let address = builder.operator_info().address;
    let activator = scope.activator_for(Rc::clone(&address));
    // librdkafka wakes the source when a queue it drained has records again, so a source that
    // has read all that was fetched neither spins nor sleeps through records that arrive.
    let waker = scope.worker().sync_activator_for(address.to_vec());
    let wake = move || {
        // The worker may be gone at shutdown; nothing is left to wake then.
        let _ = waker.activate();
    };
    let assigned = plan.partitions_of_worker(scope.index(), scope.peers());
    let consumer = if assigned.is_empty() {
        None
    } else {
        assigned_consumer(config, &assigned, wake)
            .map_err(|error| control.fail(error))
            .ok()
    };
    let (records_output, records) = builder.new_output::<Vec<RawRecord>>();
    let (progress_output, progress) = builder.new_output::<Vec<SourceProgress>>();
    let mut records_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<RawRecord>>>::from(records_output);
    let mut progress_output =
        OutputBuilder::<_, CapacityContainerBuilder<Vec<SourceProgress>>>::from(progress_output);
    let poll_batch = config.poll_batch.max(1);
    let source_config = config.clone();
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
        // A worker without partitions drops its capabilities at once: it never holds back the
        // frontier of the others.
        let mut reader = consumer.map(|(consumer, queues)| PartitionReader {
            consumer,
            queues,
            positions: assigned
                .iter()
                .map(|(p, offset)| {
                    (
                        *p,
                        PartitionPosition {
                            next_offset: *offset,
                            records_in_epoch: 0,
                        },
                    )
                })
                .collect(),
            records_cap,
            progress_cap,
            epoch_deadline: Instant::now() + snapshot_interval,
            replay: replay_until.map(|until| Replay {
                until,
                started: false,
                done: BTreeSet::new(),
                held: Vec::new(),
            }),
            outage: Outage::default(),
            ahead: BTreeSet::new(),
            at_end: BTreeSet::new(),
        });

        move |_frontiers| {
            let Some(state) = reader.as_mut() else { return };
            if let Some(replay) = state.replay.as_mut().filter(|r| !r.started) {
                // Epoch 0 of a restart: where the replay starts, so the event-time clocks and
                // watermarks restored at epoch 0 line up with the checkpoint.
                replay.started = true;
                close_epoch(
                    &mut state.positions,
                    &state.progress_cap,
                    &mut progress_output,
                );
                state.records_cap.downgrade(&1);
                state.progress_cap.downgrade(&1);
            }
            let stopping = control.stop_requested();
            let current = *state.records_cap.time();
            if !stopping && dataflow_behind(&processed, current) {
                // Backpressure: the dataflow is behind; read again once it has caught up.
                activator.activate_after(IDLE_POLL);
                return;
            }
            // Not during a replay: its one epoch ends only when every partition has got to its
            // end, and the watermark moves only between epochs.
            if let Some(alignment) = alignment.as_ref().filter(|_| state.replay.is_none()) {
                align_partitions(state, alignment);
            }
            let mut polled = 0;
            if !stopping {
                let mut output = records_output.activate();
                let records_cap = state.records_cap.clone();
                let mut session = output.session(&records_cap);
                let mut records = 0;
                let mut take = |state: &mut PartitionReader, item: Polled| -> bool {
                    match state.accept(item, &source_config, &control, alignment.as_ref()) {
                        Accepted::Record(record) => {
                            records += 1;
                            session.give(record);
                        }
                        Accepted::Held => records += 1,
                        Accepted::Nothing => {}
                        Accepted::Fatal => return false,
                    }
                    true
                };
                // Errors not tied to one partition (a broker gone away) come on the consumer's
                // own queue; records come on the partition queues.
                let mut healthy = true;
                while let Some(item) = state.consumer.poll(Duration::ZERO).map(Polled::from) {
                    healthy &= take(state, item);
                }
                let readable: Vec<i32> = state
                    .queues
                    .keys()
                    .filter(|p| !state.ahead.contains(p))
                    .filter(|p| state.replay.as_ref().is_none_or(|r| !r.done.contains(p)))
                    .copied()
                    .collect();
                // An equal share of the batch for each partition: none starves the others.
                let share = (poll_batch / readable.len().max(1)).max(1);
                for partition in readable {
                    let mut taken = 0;
                    while healthy
                        && taken < share
                        && state
                            .replay
                            .as_ref()
                            .is_none_or(|r| !r.done.contains(&partition))
                    {
                        let Some(item) = state.queues[&partition]
                            .poll(Duration::ZERO)
                            .map(Polled::from)
                        else {
                            break;
                        };
                        taken += 1;
                        healthy &= take(state, item);
                    }
                    polled += taken;
                }
                control.add_records_in(records as u64);
            }

            if let Some(replay) = state.replay.as_mut() {
                replay.mark_done(&state.positions);
            }
            let replay_done = state
                .replay
                .as_ref()
                .is_some_and(|r| r.done.len() == state.positions.len());
            let end_reached = control.end_reached(
                &source_config.topic,
                state.positions.iter().map(|(p, pos)| (p, pos.next_offset)),
            );
            let finished = control.stop_requested() || end_reached;
            let now = Instant::now();
            // The replay epoch ends when the replay does, never on the clock.
            let epoch_over = match &state.replay {
                Some(_) => replay_done,
                None => now >= state.epoch_deadline,
            };
            if finished || epoch_over {
                close_epoch(
                    &mut state.positions,
                    &state.progress_cap,
                    &mut progress_output,
                );
                if finished {
                    reader = None;
                    return;
                }
                let next = *state.records_cap.time() + 1;
                state.records_cap.downgrade(&next);
                state.progress_cap.downgrade(&next);
                state.epoch_deadline = now + snapshot_interval;
                if let Some(replay) = state.replay.take() {
                    end_replay(state, replay, &mut records_output);
                }
            }
            if polled >= poll_batch / 2 {
                activator.activate();
            } else {
                activator.activate_after(
                    IDLE_POLL.min(state.epoch_deadline.saturating_duration_since(now)),
                );
            }
        }
    });
    (records, progress)
}

/// After the replay epoch: the records taken past the replay's end open the next epoch, and
/// every partition is polled again.
fn end_replay(
    state: &mut PartitionReader,
    replay: Replay,
    records_output: &mut OutputBuilder<Epoch, CapacityContainerBuilder<Vec<RawRecord>>>,
) {
    let mut output = records_output.activate();
    let mut session = output.session(&state.records_cap);
    for record in replay.held {
        if let Some(position) = state.positions.get_mut(&record.partition) {
            position.next_offset = record.offset + 1;
            position.records_in_epoch += 1;
            session.give(record);
        }
    }
}

/// Reports the position of every partition of this worker for the current epoch.
fn close_epoch(
    positions: &mut BTreeMap<i32, PartitionPosition>,
    progress_cap: &Capability<Epoch>,
    progress_output: &mut OutputBuilder<Epoch, CapacityContainerBuilder<Vec<SourceProgress>>>,
) {
    let mut output = progress_output.activate();
    let mut session = output.session(progress_cap);
    for (partition, position) in positions.iter_mut() {
        session.give(SourceProgress {
            partition: *partition,
            next_offset: position.next_offset,
            records: std::mem::take(&mut position.records_in_epoch),
            // Filled in after decoding, by the `event_time` operator.
            max_event_time: None,
            idle: false,
            finished: false,
        });
    }
}

/// A consumer with the given partitions assigned at the given offsets, and one queue per
/// partition split off it (before the first poll, as librdkafka requires). `wake` is called
/// whenever one of its queues becomes non-empty.
#[allow(clippy::type_complexity)]
fn assigned_consumer(
    config: &KafkaSourceConfig,
    assigned: &BTreeMap<i32, i64>,
    wake: impl Fn() + Clone + Send + Sync + 'static,
) -> Result<
    (
        Arc<BaseConsumer>,
        BTreeMap<i32, PartitionQueue<DefaultConsumerContext>>,
    ),
    ConnectorError,
> {
    let mut consumer: BaseConsumer = consumer_config(config)
        .create()
        .map_err(|e| ConnectorError::Config(e.to_string()))?;
    consumer.set_nonempty_callback(wake.clone());
    let consumer = Arc::new(consumer);
    let mut assignment = TopicPartitionList::new();
    for (partition, offset) in assigned {
        assignment
            .add_partition_offset(&config.topic, *partition, Offset::Offset(*offset))
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| ConnectorError::Consume {
            topic: config.topic.clone(),
            detail: format!("assigning partitions: {e}"),
        })?;
    let mut queues = BTreeMap::new();
    for partition in assigned.keys() {
        let mut queue = consumer
            .split_partition_queue(&config.topic, *partition)
            .ok_or_else(|| ConnectorError::Consume {
                topic: config.topic.clone(),
                detail: format!("no queue for partition {partition}"),
            })?;
        queue.set_nonempty_callback(wake.clone());
        queues.insert(*partition, queue);
    }
    Ok((consumer, queues))
}

/// Transient consumer errors (a broker gone away), reported without flooding the log: the
/// first one at once, then a summary at most every `OUTAGE_REPORT_EVERY`, and one line when
/// records flow again. librdkafka itself reconnects with backoff.
#[derive(Default)]
struct Outage {
    since: Option<Instant>,
    last_report: Option<Instant>,
    errors: u64,
}

const OUTAGE_REPORT_EVERY: Duration = Duration::from_secs(10);

impl Outage {
    fn error(&mut self, topic: &str, error: KafkaError) {
        let now = Instant::now();
        let since = *self.since.get_or_insert(now);
        self.errors += 1;
        if self
            .last_report
            .is_none_or(|last| now.duration_since(last) >= OUTAGE_REPORT_EVERY)
        {
            tracing::warn!(
                "Kafka consumer of `{topic}`: {error}; retrying with backoff ({} errors in {:.0}s)",
                self.errors,
                now.duration_since(since).as_secs_f64()
            );
            self.last_report = Some(now);
        }
    }

    fn recovered(&mut self, topic: &str) {
        if let Some(since) = self.since.take() {
            tracing::info!(
                "Kafka consumer of `{topic}`: receiving again after {:.1}s and {} errors",
                since.elapsed().as_secs_f64(),
                self.errors
            );
            *self = Outage::default();
        }
    }
}

/// Decides whether a consumer error ends the run (`Err`). Offsets that fell out of retention
/// do (which partition is found by comparing positions with the retained range); transport
/// errors do not (`Ok`), librdkafka reconnects by itself.
fn classify_error(
    config: &KafkaSourceConfig,
    positions: &BTreeMap<i32, PartitionPosition>,
    error: KafkaError,
) -> Result<KafkaError, ConnectorError> {
    let code = error.rdkafka_error_code();
    if matches!(
        code,
        Some(RDKafkaErrorCode::OffsetOutOfRange) | Some(RDKafkaErrorCode::AutoOffsetReset)
    ) {
        let retained = fetch_watermarks(config).unwrap_or_default();
        let (partition, offset, earliest) = positions
            .iter()
            .find_map(|(p, pos)| {
                let (low, _) = retained.get(p).copied()?;
                (pos.next_offset < low).then_some((*p, pos.next_offset, low))
            })
            .unwrap_or((-1, -1, -1));
        return Err(ConnectorError::OffsetOutOfRetention {
            topic: config.topic.clone(),
            partition,
            offset,
            earliest,
        });
    }
    Ok(error)
}
