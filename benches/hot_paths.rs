//! Criterion benches of the hot paths: decode, window assignment, incremental aggregate update,
//! and the DuckDB commit of a snapshot with 10k changed rows.
//!
//! Run: `cargo bench --bench hot_paths`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use differential_dataflow::input::Input;
use tidewater_connectors::{GeneratorConfig, TurnstileGenerator};
use tidewater_dataflows::decode::decode_reading;
use tidewater_dataflows::operators::Snapshot;
use tidewater_dataflows::{
    station_window_totals, StationTotals, StationWindow, TumblingWindow, WindowConfig,
};
use tidewater_sinks::Warehouse;

fn payloads(n: usize) -> Vec<Vec<u8>> {
    TurnstileGenerator::new(GeneratorConfig::default())
        .take(n)
        .map(|r| r.to_json().into_bytes())
        .collect()
}

fn decode(c: &mut Criterion) {
    let payloads = payloads(10_000);
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(payloads.len() as u64));
    group.bench_function("json_reading_x10k", |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(decode_reading(black_box(p)).unwrap());
            }
        })
    });
    group.finish();
}

fn window_assignment(c: &mut Criterion) {
    let window = TumblingWindow::new(&WindowConfig::default());
    let times: Vec<i64> = TurnstileGenerator::new(GeneratorConfig::default())
        .take(10_000)
        .map(|r| r.ts)
        .collect();
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(times.len() as u64));
    group.bench_function("tumbling_start_of_x10k", |b| {
        b.iter(|| {
            times
                .iter()
                .fold(0i64, |acc, t| acc ^ window.start_of(black_box(*t)))
        })
    });
    group.finish();
}

fn aggregate_update(c: &mut Criterion) {
    let readings: Vec<_> = TurnstileGenerator::new(GeneratorConfig::default())
        .take(100_000)
        .collect();
    let mut group = c.benchmark_group("aggregate");
    group.throughput(Throughput::Elements(readings.len() as u64));
    group.sample_size(10);
    group.bench_function("station_window_totals_100k_in_10_epochs", |b| {
        b.iter(|| {
            let readings = readings.clone();
            timely::execute_directly(move |worker| {
                let window = TumblingWindow::new(&WindowConfig::default());
                let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                    let (input, collection) = scope.new_collection();
                    let (probe, _) = station_window_totals(collection, window).probe();
                    (input, probe)
                });
                for (epoch, chunk) in readings.chunks(10_000).enumerate() {
                    for r in chunk {
                        input.insert(r.clone());
                    }
                    input.advance_to(epoch as u64 + 1);
                    input.flush();
                    worker.step_while(|| probe.less_than(input.time()));
                }
            })
        })
    });
    group.finish();
}

fn sink_commit(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let mut warehouse =
        Warehouse::open(&dir.path().join("bench.duckdb"), "station_hourly", "bench").unwrap();
    let hour = 3_600_000_000i64;
    let mut epoch = 0u64;
    let mut group = c.benchmark_group("sink");
    group.throughput(Throughput::Elements(10_000));
    group.sample_size(10);
    group.bench_function("commit_snapshot_10k_changed_rows", |b| {
        b.iter_batched(
            || {
                epoch += 1;
                // 10k groups: each retracts its previous row (after the first epoch) and inserts a new one.
                let mut changes = Vec::with_capacity(20_000);
                for i in 0..10_000i64 {
                    let group = StationWindow {
                        window_start: (i % 100) * hour,
                        window_end: (i % 100 + 1) * hour,
                        station: format!("S{}", i / 100),
                    };
                    let totals = |e: u64| StationTotals {
                        readings: e as i64,
                        entries: 10 * e as i64,
                        exits: 7 * e as i64,
                    };
                    if epoch > 1 {
                        changes.push(((group.clone(), totals(epoch - 1)), -1));
                    }
                    changes.push(((group, totals(epoch)), 1));
                }
                let progress = vec![tidewater_dataflows::SourceProgress {
                    partition: 0,
                    next_offset: epoch as i64 * 10_000,
                    records: 10_000,
                }];
                Snapshot {
                    epoch,
                    changes,
                    rejects: Vec::new(),
                    progress,
                }
            },
            |snapshot| warehouse.commit(&snapshot).unwrap(),
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    decode,
    window_assignment,
    aggregate_update,
    sink_commit
);
criterion_main!(benches);
