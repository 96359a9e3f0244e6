//! Nexmark throughput: generated events straight into one query, on public items only.
//!
//! `cargo run --release -p tidewater-dataflows --example nexmark -- q5 1000000 [workers]`
//!
//! Each worker generates its share of events `0..N` (`index % workers == worker`) and feeds it
//! in epochs of 100,000 events per worker (stepping the dataflow every 4,096 events within an
//! epoch), waiting for the query to finish each epoch before generating the next. The rate
//! printed is events over wall-clock time, worker start-up and generation included (the time
//! spent generating is printed too, to tell the two apart).
//!
//! `cargo run --release -p tidewater-dataflows --example nexmark -- generate 1000000` times the
//! generator alone.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use differential_dataflow::input::Input;
use tidewater_dataflows::nexmark::{
    build_query, NexmarkConfig, NexmarkEvent, NexmarkGenerator, Query,
};

/// Events each worker feeds per epoch.
const EVENTS_PER_WORKER_EPOCH: u64 = 100_000;

/// Events fed between two steps of the worker, within an epoch.
const EVENTS_PER_STEP: usize = 4_096;

/// What one worker did: its output updates and the time it spent generating events.
struct WorkerReport {
    output_updates: u64,
    generating: Duration,
}

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: nexmark <q1|q2|q5|q7|q8|generate> <events> [workers]";
    if std::env::args().nth(1).as_deref() == Some("generate") {
        let events: u64 = std::env::args()
            .nth(2)
            .map_or(1_000_000, |n| n.parse().expect(usage));
        return generate_only(events);
    }
    let query: Query = args
        .next()
        .expect(usage)
        .parse()
        .unwrap_or_else(|e| panic!("{e}; {usage}"));
    let events: u64 = args.next().map_or(1_000_000, |n| n.parse().expect(usage));
    let workers: usize = args.next().map_or(1, |n| n.parse().expect(usage));
    let generator = NexmarkGenerator::new(NexmarkConfig::default());

    let started = Instant::now();
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let output_updates = Rc::new(Cell::new(0u64));
        let counter = Rc::clone(&output_updates);
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection::<NexmarkEvent, isize>();
            let (probe, _) = build_query(query, events)
                .inspect_batch(move |_, updates| counter.set(counter.get() + updates.len() as u64))
                .probe();
            (input, probe)
        });
        let epoch_size = EVENTS_PER_WORKER_EPOCH * peers as u64;
        let mut generating = Duration::ZERO;
        for start in (0..events).step_by(epoch_size as usize) {
            let mut began = Instant::now();
            let share = generator.share(start..(start + epoch_size).min(events), index, peers);
            for (n, event) in share.enumerate() {
                input.insert(event);
                // Let the dataflow take each slice while it is still in cache; the epoch
                // stays open, so this changes no result, only memory traffic.
                if n % EVENTS_PER_STEP == EVENTS_PER_STEP - 1 {
                    input.flush();
                    generating += began.elapsed();
                    worker.step();
                    began = Instant::now();
                }
            }
            generating += began.elapsed();
            input.advance_to(*input.time() + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
        }
        WorkerReport {
            output_updates: output_updates.get(),
            generating,
        }
    })
    .expect("timely starts");
    let reports: Vec<WorkerReport> = guards
        .join()
        .into_iter()
        .map(|r| r.expect("worker finishes"))
        .collect();
    let elapsed = started.elapsed().as_secs_f64();
    let output_updates: u64 = reports.iter().map(|r| r.output_updates).sum();
    let generating = reports
        .iter()
        .map(|r| r.generating.as_secs_f64())
        .fold(0.0, f64::max);
    println!(
        "{query}: {events} events, {workers} worker(s): {elapsed:.3} s, {:.0} events/s \
         ({generating:.3} s generating on the busiest worker), {output_updates} output updates",
        events as f64 / elapsed
    );
}

/// The generator alone on one thread: the ceiling the query rates above are measured against.
fn generate_only(events: u64) {
    let generator = NexmarkGenerator::new(NexmarkConfig::default());
    let started = Instant::now();
    let mut bytes = 0usize;
    for event in generator.share(0..events, 0, 1) {
        // Reading a field keeps the optimiser from skipping the generation.
        bytes += match &event {
            NexmarkEvent::Bid(bid) => bid.url.len(),
            NexmarkEvent::Auction(auction) => auction.description.len(),
            NexmarkEvent::Person(person) => person.name.len(),
        };
    }
    let elapsed = started.elapsed().as_secs_f64();
    println!(
        "generate: {events} events on 1 thread: {elapsed:.3} s, {:.0} events/s ({bytes} string bytes)",
        events as f64 / elapsed
    );
}
