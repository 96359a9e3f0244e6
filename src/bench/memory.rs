//! `memory` mode: generated records go straight into the dataflow, with no broker and no
//! warehouse, so the figure is the engine's own ceiling. Each worker generates its share and
//! feeds it through timely inputs, closing an epoch every snapshot interval as a source would,
//! and never more than two epochs ahead of the output (the sources' backpressure).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tidewater_connectors::{GeneratorConfig, TurnstileGenerator};
use tidewater_dataflows::operators::CollectSnapshots;
use tidewater_dataflows::{build_views, Epoch, RawRecord, SourceProgress, SourceStreams};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::Probe;

use super::measure::Latencies;
use crate::pipeline::Pipeline;

/// Epochs the input may run ahead of the output, as the Kafka source allows.
const MAX_EPOCHS_AHEAD: u64 = 2;
/// Records generated between two looks at the clock and the dataflow.
const BATCH: u64 = 1024;

/// What one memory-mode run did (as seen by this process).
#[derive(Clone, Debug, Default)]
pub struct MemoryRun {
    pub events: u64,
    pub payload_bytes: u64,
    pub elapsed: Duration,
    /// Row changes the views emitted over the run.
    pub output_rows: u64,
    pub snapshots: u64,
    /// Per record: generated → in a complete snapshot (estimated per epoch, see `freshness`).
    pub freshness: Latencies,
}

/// When each epoch's records were generated: (first record, epoch closed) over all workers.
type EpochSpans = Arc<Mutex<BTreeMap<Epoch, (Instant, Instant)>>>;

/// Worker `index` of `peers` generates this many of `events`.
pub fn share_of(events: u64, index: usize, peers: usize) -> u64 {
    let (peers, index) = (peers as u64, index as u64);
    events / peers + u64::from(index < events % peers)
}

/// Runs `pipeline`'s views over `events` generated turnstile readings (JSON payloads, decoded
/// by the engine as Kafka payloads are). Worker `w` generates its share with seed `seed + w`.
pub fn run_turnstile(
    pipeline: &Pipeline,
    events: u64,
    seed: u64,
    config: timely::Config,
    done: Arc<AtomicU64>,
) -> Result<MemoryRun, String> {
    let pipeline = Arc::new(pipeline.clone());
    let interval = pipeline.config.warehouse.snapshot_interval.0;
    let spans: EpochSpans = Arc::default();
    let outcome: Arc<Mutex<MemoryRun>> = Arc::default();
    let started = Instant::now();
    let worker_outcome = Arc::clone(&outcome);
    let worker_spans = Arc::clone(&spans);
    let guards = timely::execute(config, move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let processed = ProbeHandle::new();
        let outcome = Arc::clone(&worker_outcome);
        let spans = Arc::clone(&worker_spans);
        let snapshot_spans = Arc::clone(&worker_spans);
        let (mut records, mut progress) = worker.dataflow::<Epoch, _, _>(|scope| {
            let (records_in, records) = scope.new_input::<RawRecord>();
            let (progress_in, progress) = scope.new_input::<SourceProgress>();
            build_views(
                scope,
                &pipeline.sources,
                &pipeline.views,
                vec![SourceStreams { records, progress }],
            )
            .probe_with(&processed)
            .collect_snapshots(move |snapshot| {
                let now = Instant::now();
                let mut outcome = outcome.lock().unwrap_or_else(|e| e.into_inner());
                outcome.snapshots += 1;
                outcome.output_rows += snapshot.changes.len() as u64;
                let records: u64 = snapshot.progress.iter().map(|(_, p)| p.records).sum();
                let spans = snapshot_spans.lock().unwrap_or_else(|e| e.into_inner());
                if let Some((first, closed)) = spans.get(&snapshot.epoch) {
                    freshness(&mut outcome.freshness, *first, *closed, now, records);
                }
            });
            (records_in, progress_in)
        });

        let share = share_of(events, index, peers);
        let mut generator = TurnstileGenerator::new(GeneratorConfig {
            seed: seed + index as u64,
            ..GeneratorConfig::default()
        });
        let partition = index as i32;
        let (mut sent, mut in_epoch, mut bytes) = (0u64, 0u64, 0u64);
        let mut epoch_started = Instant::now();
        let mut deadline = epoch_started + interval;
        while sent < share {
            let batch = BATCH.min(share - sent);
            for _ in 0..batch {
                let payload = generator.next().expect("endless").to_json().into_bytes();
                bytes += payload.len() as u64;
                records.send(RawRecord {
                    partition,
                    offset: sent as i64,
                    payload,
                });
                sent += 1;
            }
            in_epoch += batch;
            done.fetch_add(batch, Ordering::Relaxed);
            let now = Instant::now();
            if now >= deadline || sent == share {
                let epoch = *records.time();
                progress.send(SourceProgress {
                    partition,
                    next_offset: sent as i64,
                    records: in_epoch,
                    max_event_time: None,
                    idle: false,
                });
                note_span(&spans, epoch, epoch_started, now);
                records.advance_to(epoch + 1);
                progress.advance_to(epoch + 1);
                in_epoch = 0;
                epoch_started = now;
                deadline = now + interval;
            }
            worker.step();
            let current = *records.time();
            while current >= MAX_EPOCHS_AHEAD && processed.less_than(&(current - MAX_EPOCHS_AHEAD))
            {
                worker.step_or_park(Some(Duration::from_millis(1)));
            }
        }
        drop((records, progress));
        while worker.step_or_park(Some(Duration::from_millis(1))) {}
        let mut outcome = worker_outcome.lock().unwrap_or_else(|e| e.into_inner());
        outcome.events += sent;
        outcome.payload_bytes += bytes;
    })
    .map_err(|e| format!("could not start the workers: {e}"))?;
    for result in guards.join() {
        result.map_err(|e| format!("a worker failed: {e}"))?;
    }
    let mut run = std::mem::take(&mut *outcome.lock().unwrap_or_else(|e| e.into_inner()));
    run.elapsed = started.elapsed();
    Ok(run)
}

/// Widens the recorded span of `epoch` by one worker's span.
fn note_span(spans: &EpochSpans, epoch: Epoch, first: Instant, closed: Instant) {
    let mut spans = spans.lock().unwrap_or_else(|e| e.into_inner());
    let span = spans.entry(epoch).or_insert((first, closed));
    span.0 = span.0.min(first);
    span.1 = span.1.max(closed);
}

/// Freshness samples of an epoch's `records`, generated evenly between `first` and `closed` and
/// all visible at `visible`: one sample per percent of the epoch, weighted alike (an epoch is
/// one snapshot interval of records, so epochs weigh about the same).
fn freshness(
    latencies: &mut Latencies,
    first: Instant,
    closed: Instant,
    visible: Instant,
    records: u64,
) {
    if records == 0 {
        return;
    }
    let span = closed.saturating_duration_since(first);
    for step in 0..100u32 {
        let generated = first + span.mul_f64((f64::from(step) + 0.5) / 100.0);
        latencies.push(visible.saturating_duration_since(generated));
    }
}

/// The input path alone: the same generation of the same payloads, discarded, on `workers`
/// threads. Returns (events, payload bytes, elapsed).
pub fn turnstile_ceiling(events: u64, seed: u64, workers: usize) -> (u64, u64, Duration) {
    let started = Instant::now();
    let bytes: u64 = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|index| {
                scope.spawn(move || {
                    TurnstileGenerator::new(GeneratorConfig {
                        seed: seed + index as u64,
                        ..GeneratorConfig::default()
                    })
                    .take(share_of(events, index, workers) as usize)
                    .map(|reading| {
                        std::hint::black_box(reading.to_json().into_bytes()).len() as u64
                    })
                    .sum::<u64>()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
    });
    (events, bytes, started.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_events() {
        for (events, peers) in [(10, 3), (0, 2), (7, 7), (1_000_001, 4)] {
            let total: u64 = (0..peers).map(|i| share_of(events, i, peers)).sum();
            assert_eq!(total, events);
        }
    }
}
