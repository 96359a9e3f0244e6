//! Bounded state over a long run (ignored: minutes, not for CI). Generated turnstile readings
//! with steadily advancing event time flow through the engine's view dataflow (Kafka replaced by
//! timely inputs, snapshots counted instead of written); resident memory is reported every 10M
//! events and must not grow once windows start to close.
//!
//! `TIDEWATER_LONG_RUN_EVENTS=50000000 cargo test --release --test long_run -- --ignored --nocapture`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use tidewater::demo::TURNSTILE_PIPELINE;
use tidewater::Pipeline;
use tidewater_connectors::{GeneratorConfig, TurnstileGenerator};
use tidewater_dataflows::operators::{CollectSnapshots, Snapshot};
use tidewater_dataflows::{build_views, RawRecord, SourceProgress, SourceStreams};
use timely::dataflow::operators::vec::Input;
use timely::dataflow::operators::Probe;

/// Resident and peak resident memory of this process, in MiB.
fn memory_mib() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<u64>().ok())
            .map_or(0, |kb| kb / 1024)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

#[test]
#[ignore]
fn memory_stays_flat_while_event_time_advances() {
    let events: u64 = std::env::var("TIDEWATER_LONG_RUN_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000_000);
    let views: Vec<String> = std::env::var("TIDEWATER_LONG_RUN_VIEWS")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_else(|_| {
            [
                "station_hourly",
                "station_hourly_peaks",
                "turnstile_sessions",
                "line_daily",
                "station_daily_turnstiles",
            ]
            .map(str::to_owned)
            .to_vec()
        });
    let mut pipeline = Pipeline::from_toml(TURNSTILE_PIPELINE, "turnstile.toml").unwrap();
    pipeline.config.views.retain(|v| views.contains(&v.name));
    let pipeline = Arc::new(Pipeline::new(pipeline.config).unwrap());
    eprintln!("views: {}", views.join(", "));
    let rows = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let counted = Arc::clone(&rows);
    timely::execute(timely::Config::process(2), move |worker| {
        let counted = Arc::clone(&counted);
        let (mut records, mut progress, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (records_in, records) = scope.new_input::<RawRecord>();
            let (progress_in, progress) = scope.new_input::<SourceProgress>();
            let parts = build_views(
                scope,
                &pipeline.sources,
                &pipeline.views,
                vec![SourceStreams { records, progress }],
            );
            let (probe, parts) = parts.probe();
            parts.collect_snapshots(move |snapshot: Snapshot| {
                counted.fetch_add(snapshot.changes.len() as u64, Ordering::Relaxed);
            });
            (records_in, progress_in, probe)
        });
        // Each worker generates its own readings as one partition.
        let partition = worker.index() as i32;
        let mut generator = TurnstileGenerator::new(GeneratorConfig {
            seed: 7 + partition as u64,
            ..Default::default()
        });
        let per_worker = events / worker.peers() as u64;
        let per_epoch = 50_000u64;
        let mut offset = 0i64;
        let mut epoch = 0u64;
        while (offset as u64) < per_worker {
            let batch = per_epoch.min(per_worker - offset as u64);
            for reading in generator.by_ref().take(batch as usize) {
                records.send(RawRecord {
                    partition,
                    offset,
                    payload: reading.to_json().into_bytes(),
                });
                offset += 1;
            }
            progress.send(SourceProgress {
                partition,
                next_offset: offset,
                records: batch,
                max_event_time: None,
                idle: false,
                finished: false,
            });
            epoch += 1;
            records.advance_to(epoch);
            progress.advance_to(epoch);
            // Keep at most two epochs in flight, as a real source is paced by its consumer.
            let behind = epoch.saturating_sub(2);
            worker.step_while(|| probe.less_than(&behind));
            let done = offset as u64 * worker.peers() as u64;
            if worker.index() == 0 && done % 5_000_000 < per_epoch * worker.peers() as u64 {
                let (rss, peak) = memory_mib();
                eprintln!(
                    "{:>5}M events, {:>6.0}s: RSS {rss} MiB, peak {peak} MiB",
                    done / 1_000_000,
                    started.elapsed().as_secs_f64()
                );
            }
        }
    })
    .unwrap();
    let (rss, peak) = memory_mib();
    eprintln!(
        "done: {events} events in {:.0}s ({:.0} events/s), {} row changes, RSS {rss} MiB, peak {peak} MiB",
        started.elapsed().as_secs_f64(),
        events as f64 / started.elapsed().as_secs_f64(),
        rows.load(Ordering::Relaxed)
    );
}
