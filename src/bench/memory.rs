//! `memory` mode: generated records go straight into the dataflow, with no broker and no
//! warehouse, so the figure is the engine's own ceiling. Each worker generates its share and
//! feeds it through timely inputs, closing an epoch every snapshot interval as a source would,
//! and never more than two epochs ahead of the output (the sources' backpressure).
//!
//! Turnstile workloads feed JSON payloads, which the engine decodes as it decodes Kafka
//! payloads; Nexmark queries are built-in dataflows over typed events, fed as such.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use differential_dataflow::input::Input as CollectionInput;
use tidewater_connectors::control::dataflow_behind;
use tidewater_connectors::{GeneratorConfig, TurnstileGenerator};
use tidewater_dataflows::nexmark::{
    build_query, NexmarkConfig, NexmarkEvent, NexmarkGenerator, Query,
};
use tidewater_dataflows::operators::CollectSnapshots;
use tidewater_dataflows::{build_views, Epoch, RawRecord, SourceProgress, SourceStreams};
use timely::dataflow::operators::probe::Handle as ProbeHandle;
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::Probe;

use super::measure::Latencies;
use crate::pipeline::Pipeline;

/// Records generated between two looks at the clock and the dataflow: small enough that the
/// dataflow takes them while they are in cache.
const BATCH: u64 = 1024;

/// What one memory-mode run did (as seen by this process).
#[derive(Clone, Debug, Default)]
pub struct MemoryRun {
    pub events: u64,
    pub payload_bytes: u64,
    pub elapsed: Duration,
    /// Updates the views or the query emitted over the run.
    pub output_rows: u64,
    /// Epochs worker 0 saw completed.
    pub snapshots: u64,
    /// Per record: generated → its epoch complete at the output (see [`freshness_samples`]).
    pub freshness: Latencies,
}

/// Worker `index` of `peers` generates this many of `events`.
pub fn share_of(events: u64, index: usize, peers: usize) -> u64 {
    let (peers, index) = (peers as u64, index as u64);
    events / peers + u64::from(index < events % peers)
}

/// One worker's side of a run: how many events it feeds, how often it closes an epoch, and
/// where it counts progress.
struct Feed {
    share: u64,
    interval: Duration,
    done: Arc<AtomicU64>,
}

/// Feeds `feed.share` events: `send(n)` gives the dataflow `n` more (returning their bytes),
/// `close(records_in_epoch, sent)` ends the current epoch and returns the next one. Steps the
/// worker as it goes, holds back while the output is more than two epochs
/// behind, and records freshness on worker 0. Returns (events, bytes, freshness, epochs).
fn drive(
    worker: &mut timely::worker::Worker,
    feed: &Feed,
    processed: &ProbeHandle<Epoch>,
    mut send: impl FnMut(u64) -> u64,
    mut close: impl FnMut(u64, u64) -> Epoch,
) -> (u64, u64, Latencies, u64) {
    let observer = worker.index() == 0;
    let mut freshness = Latencies::default();
    // Epochs closed here but not yet complete at the output: (epoch, first record, closed).
    let mut pending: VecDeque<(Epoch, Instant, Instant)> = VecDeque::new();
    let mut completed = 0;
    let mut observe = |pending: &mut VecDeque<(Epoch, Instant, Instant)>, completed: &mut u64| {
        while let Some(&(epoch, first, closed)) = pending.front() {
            if processed.less_equal(&epoch) {
                break;
            }
            pending.pop_front();
            *completed += 1;
            if observer {
                freshness_samples(&mut freshness, first, closed, Instant::now());
            }
        }
    };
    let (mut sent, mut bytes, mut in_epoch, mut epoch) = (0u64, 0u64, 0u64, 0 as Epoch);
    let mut epoch_started = Instant::now();
    let mut deadline = epoch_started + feed.interval;
    while sent < feed.share {
        let batch = BATCH.min(feed.share - sent);
        bytes += send(batch);
        sent += batch;
        in_epoch += batch;
        feed.done.fetch_add(batch, Ordering::Relaxed);
        let now = Instant::now();
        if now >= deadline || sent == feed.share {
            pending.push_back((epoch, epoch_started, now));
            epoch = close(in_epoch, sent);
            in_epoch = 0;
            epoch_started = now;
            deadline = now + feed.interval;
        }
        worker.step();
        while dataflow_behind(processed, epoch) {
            worker.step_or_park(Some(Duration::from_millis(1)));
        }
        observe(&mut pending, &mut completed);
    }
    // The last epoch is closed: wait for the output to pass it, still observing.
    while !pending.is_empty() {
        worker.step_or_park(Some(Duration::from_millis(1)));
        observe(&mut pending, &mut completed);
    }
    (sent, bytes, freshness, completed)
}

/// Freshness of an epoch's records, generated evenly between `first` and `closed` and all
/// complete at `visible`: one sample per percent of the epoch (epochs are one snapshot
/// interval of records each, so they weigh about the same).
fn freshness_samples(latencies: &mut Latencies, first: Instant, closed: Instant, visible: Instant) {
    let span = closed.saturating_duration_since(first);
    for step in 0..100u32 {
        let generated = first + span.mul_f64((f64::from(step) + 0.5) / 100.0);
        latencies.push(visible.saturating_duration_since(generated));
    }
}

/// Adds one worker's figures to the run's.
fn merge(outcome: &Mutex<MemoryRun>, fed: (u64, u64, Latencies, u64), output_rows: u64) {
    let (events, bytes, freshness, epochs) = fed;
    let mut run = outcome.lock().unwrap_or_else(|e| e.into_inner());
    run.events += events;
    run.payload_bytes += bytes;
    run.output_rows += output_rows;
    if !freshness.is_empty() {
        run.freshness = freshness;
        run.snapshots = epochs;
    }
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
    let outcome: Arc<Mutex<MemoryRun>> = Arc::default();
    // The clock starts once the first worker has built its dataflow: a cluster's connection
    // set-up (about a second) is not throughput.
    let started: Arc<OnceLock<Instant>> = Arc::default();
    let worker_started = Arc::clone(&started);
    let worker_outcome = Arc::clone(&outcome);
    let guards = timely::execute(config, move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let processed = ProbeHandle::new();
        let output_rows = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&output_rows);
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
                counted.fetch_add(snapshot.changes.len() as u64, Ordering::Relaxed);
            });
            (records_in, progress_in)
        });
        worker_started.get_or_init(Instant::now);
        let mut generator = TurnstileGenerator::new(GeneratorConfig {
            seed: seed + index as u64,
            ..GeneratorConfig::default()
        });
        let partition = index as i32;
        let mut offset = 0i64;
        let feed = Feed {
            share: share_of(events, index, peers),
            interval,
            done: Arc::clone(&done),
        };
        let inputs = std::cell::RefCell::new((&mut records, &mut progress));
        let mut next = 1;
        let fed = drive(
            worker,
            &feed,
            &processed,
            |count| {
                let (records, _) = &mut *inputs.borrow_mut();
                let mut bytes = 0;
                for _ in 0..count {
                    let mut json = String::with_capacity(192);
                    generator.next_json(&mut json);
                    let payload = json.into_bytes();
                    bytes += payload.len() as u64;
                    records.send(RawRecord {
                        partition,
                        offset,
                        payload,
                    });
                    offset += 1;
                }
                bytes
            },
            |in_epoch, sent| {
                let (records, progress) = &mut *inputs.borrow_mut();
                progress.send(SourceProgress {
                    partition,
                    next_offset: sent as i64,
                    records: in_epoch,
                    max_event_time: None,
                    idle: false,
                    finished: false,
                });
                records.advance_to(next);
                progress.advance_to(next);
                next += 1;
                next - 1
            },
        );
        drop((records, progress));
        while worker.step_or_park(Some(Duration::from_millis(1))) {}
        merge(&worker_outcome, fed, output_rows.load(Ordering::Relaxed));
    })
    .map_err(|e| format!("could not start the workers: {e}"))?;
    for result in guards.join() {
        result.map_err(|e| format!("a worker failed: {e}"))?;
    }
    let mut run = std::mem::take(&mut *outcome.lock().unwrap_or_else(|e| e.into_inner()));
    run.elapsed = started.get().map_or(Duration::ZERO, Instant::elapsed);
    Ok(run)
}

/// Runs a Nexmark query over `events` generated events; worker `w` of `p` feeds the events
/// whose index is `w` modulo `p`, so any number of workers sees the same events.
pub fn run_nexmark(
    query: Query,
    events: u64,
    seed: u64,
    interval: Duration,
    config: timely::Config,
    done: Arc<AtomicU64>,
) -> Result<MemoryRun, String> {
    let generator = Arc::new(NexmarkGenerator::new(NexmarkConfig {
        seed,
        ..NexmarkConfig::default()
    }));
    let outcome: Arc<Mutex<MemoryRun>> = Arc::default();
    // The clock starts once the first worker has built its dataflow: a cluster's connection
    // set-up (about a second) is not throughput.
    let started: Arc<OnceLock<Instant>> = Arc::default();
    let worker_started = Arc::clone(&started);
    let worker_outcome = Arc::clone(&outcome);
    let guards = timely::execute(config, move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let processed = ProbeHandle::new();
        let output_rows = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&output_rows);
        let mut input = worker.dataflow::<Epoch, _, _>(|scope| {
            let (input, events) = scope.new_collection::<NexmarkEvent, isize>();
            build_query(query, events)
                .inspect_batch(move |_, updates| {
                    counted.fetch_add(updates.len() as u64, Ordering::Relaxed);
                })
                .probe_with(&processed);
            input
        });
        worker_started.get_or_init(Instant::now);
        let mut share = generator.share(0..events, index, peers);
        let feed = Feed {
            share: share_of(events, index, peers),
            interval,
            done: Arc::clone(&done),
        };
        let fed = {
            let input_cell = std::cell::RefCell::new(&mut input);
            drive(
                worker,
                &feed,
                &processed,
                |count| {
                    let mut input = input_cell.borrow_mut();
                    for event in share.by_ref().take(count as usize) {
                        input.insert(event);
                    }
                    input.flush();
                    0
                },
                |_, _| {
                    let mut input = input_cell.borrow_mut();
                    let next = input.time() + 1;
                    input.advance_to(next);
                    input.flush();
                    next
                },
            )
        };
        drop(input);
        while worker.step_or_park(Some(Duration::from_millis(1))) {}
        merge(&worker_outcome, fed, output_rows.load(Ordering::Relaxed));
    })
    .map_err(|e| format!("could not start the workers: {e}"))?;
    for result in guards.join() {
        result.map_err(|e| format!("a worker failed: {e}"))?;
    }
    let mut run = std::mem::take(&mut *outcome.lock().unwrap_or_else(|e| e.into_inner()));
    run.elapsed = started.get().map_or(Duration::ZERO, Instant::elapsed);
    Ok(run)
}

/// The input path alone for turnstile workloads: the same generation of the same payloads,
/// discarded, on `workers` threads. Returns the elapsed time.
pub fn turnstile_ceiling(events: u64, seed: u64, workers: usize) -> Duration {
    ceiling(workers, |index| {
        let mut generator = TurnstileGenerator::new(GeneratorConfig {
            seed: seed + index as u64,
            ..GeneratorConfig::default()
        });
        (0..share_of(events, index, workers))
            .map(|_| {
                let mut json = String::with_capacity(192);
                generator.next_json(&mut json);
                std::hint::black_box(json.into_bytes()).len() as u64
            })
            .sum::<u64>()
    })
}

/// The input path alone for Nexmark: generating the same events, discarded.
pub fn nexmark_ceiling(events: u64, seed: u64, workers: usize) -> Duration {
    let generator = NexmarkGenerator::new(NexmarkConfig {
        seed,
        ..NexmarkConfig::default()
    });
    ceiling(workers, |index| {
        generator
            .share(0..events, index, workers)
            .map(|event| u64::from(matches!(std::hint::black_box(event), NexmarkEvent::Bid(_))))
            .sum()
    })
}

/// Runs `work(index)` on `workers` threads at once; returns the elapsed time.
fn ceiling(workers: usize, work: impl Fn(usize) -> u64 + Sync) -> Duration {
    let started = Instant::now();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|index| {
                let work = &work;
                scope.spawn(move || work(index))
            })
            .collect();
        for handle in handles {
            std::hint::black_box(handle.join().unwrap_or(0));
        }
    });
    started.elapsed()
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
