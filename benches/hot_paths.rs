//! Criterion benches of the hot paths: decode, window assignment, the aggregate update of a
//! group (from raw rows and from per-epoch partials), the whole view dataflow per window kind,
//! and the DuckDB commit of a snapshot with 10k changed rows.
//!
//! Run: `cargo bench --bench hot_paths`

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use tidewater::demo::TURNSTILE_PIPELINE;
use tidewater::Pipeline;
use tidewater_connectors::{GeneratorConfig, TurnstileGenerator};
use tidewater_dataflows::aggregate::{compute, compute_partials, fold_into_partial, partial_of};
use tidewater_dataflows::operators::{CollectSnapshots, Snapshot, ViewChange};
use tidewater_dataflows::{
    build_views, RawRecord, SourceProgress, SourceStreams, Value, WindowKind,
};
use tidewater_sinks::Warehouse;
use timely::dataflow::operators::vec::Input;

fn payloads(n: usize) -> Vec<Vec<u8>> {
    TurnstileGenerator::new(GeneratorConfig::default())
        .take(n)
        .map(|r| r.to_json().into_bytes())
        .collect()
}

/// The turnstile pipeline with only the named views (all of them if none are named).
fn pipeline_with(views: &[&str]) -> Pipeline {
    let mut pipeline = Pipeline::from_toml(TURNSTILE_PIPELINE, "turnstile.toml").unwrap();
    if !views.is_empty() {
        pipeline
            .config
            .views
            .retain(|v| views.contains(&v.name.as_str()));
    }
    Pipeline::new(pipeline.config).unwrap()
}

fn decode(c: &mut Criterion) {
    let payloads = payloads(10_000);
    let pipeline = pipeline_with(&["station_hourly"]);
    let schema = &pipeline.sources[0].schema;
    let mut group = c.benchmark_group("decode");
    group.throughput(Throughput::Elements(payloads.len() as u64));
    group.bench_function("json_reading_x10k", |b| {
        b.iter(|| {
            for p in &payloads {
                black_box(schema.decode(black_box(p)).unwrap());
            }
        })
    });
    group.finish();
}

fn window_assignment(c: &mut Criterion) {
    let times: Vec<i64> = TurnstileGenerator::new(GeneratorConfig::default())
        .take(10_000)
        .map(|r| r.ts)
        .collect();
    let mut group = c.benchmark_group("window");
    group.throughput(Throughput::Elements(times.len() as u64));
    for (name, window) in [
        (
            "tumbling_1h_x10k",
            WindowKind::Hopping {
                size: 3_600_000_000,
                slide: 3_600_000_000,
            },
        ),
        (
            "hopping_15m_1m_x10k",
            WindowKind::Hopping {
                size: 900_000_000,
                slide: 60_000_000,
            },
        ),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                times.iter().fold(0i64, |acc, t| {
                    window
                        .fixed_windows(black_box(*t))
                        .fold(acc, |acc, (start, _)| acc ^ start)
                })
            })
        });
    }
    group.finish();
}

/// The aggregate update of one (window, group): what `reduce` computes each time the group
/// changes, from raw rows (one per record) and from per-epoch partial rows.
fn aggregate_update(c: &mut Criterion) {
    let pipeline = pipeline_with(&["station_hourly", "station_hourly_peaks"]);
    let aggregates: Vec<_> = pipeline
        .views
        .iter()
        .flat_map(|v| v.aggregates.clone())
        .collect();
    // Input fields in projection order: entries, exits (see `ViewSpec::input_fields`).
    let schema = &pipeline.sources[0].schema;
    let fields: Vec<usize> = ["entries", "exits"]
        .iter()
        .map(|f| schema.index_of(f).unwrap())
        .collect();
    let positions: Vec<Option<usize>> = aggregates
        .iter()
        .map(|a| {
            a.field
                .map(|f| fields.iter().position(|&p| p == f).unwrap())
        })
        .collect();
    let rows: Vec<Vec<Value>> = (0..1_000i64)
        .map(|i| vec![Value::Int(i % 97), Value::Int(i % 89)])
        .collect();
    // The same 1,000 records as 20 epochs' partials of 50 records each.
    let partials: Vec<Vec<Value>> = rows
        .chunks(50)
        .map(|chunk| {
            let mut partial = partial_of(&chunk[0]);
            for row in &chunk[1..] {
                fold_into_partial(&mut partial, row);
            }
            partial
        })
        .collect();
    let raw_input: Vec<(&Vec<Value>, isize)> = rows.iter().map(|r| (r, 1)).collect();
    let partial_input: Vec<(&Vec<Value>, isize)> = partials.iter().map(|r| (r, 1)).collect();
    assert_eq!(
        compute(&aggregates, &positions, &raw_input),
        compute_partials(&aggregates, &positions, &partial_input)
    );
    let mut group = c.benchmark_group("aggregate");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("six_aggregates_1k_raw_rows", |b| {
        b.iter(|| black_box(compute(&aggregates, &positions, black_box(&raw_input))))
    });
    group.bench_function("six_aggregates_1k_records_as_20_partials", |b| {
        b.iter(|| {
            black_box(compute_partials(
                &aggregates,
                &positions,
                black_box(&partial_input),
            ))
        })
    });
    group.bench_function("fold_1k_records_into_partials", |b| {
        b.iter(|| {
            let mut partial = partial_of(&rows[0]);
            for row in &rows[1..] {
                fold_into_partial(&mut partial, black_box(row));
            }
            black_box(partial)
        })
    });
    group.finish();
}

/// Runs `payloads` through the view dataflow of `pipeline` on one worker, in 10 epochs.
fn run_views(pipeline: &Pipeline, payloads: &[Vec<u8>]) -> usize {
    let (pipeline, payloads) = (pipeline.clone(), payloads.to_vec());
    let changes = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&changes);
    timely::execute(timely::Config::thread(), move |worker| {
        let counted = std::sync::Arc::clone(&counted);
        let (mut records, mut progress) = worker.dataflow::<u64, _, _>(|scope| {
            let (records_in, records) = scope.new_input::<RawRecord>();
            let (progress_in, progress) = scope.new_input::<SourceProgress>();
            build_views(
                scope,
                &pipeline.sources,
                &pipeline.views,
                vec![SourceStreams { records, progress }],
            )
            .collect_snapshots(move |snapshot: Snapshot| {
                counted.fetch_add(snapshot.changes.len(), std::sync::atomic::Ordering::Relaxed);
            });
            (records_in, progress_in)
        });
        let chunk = payloads.len().div_ceil(10);
        for (epoch, part) in payloads.chunks(chunk).enumerate() {
            for (i, payload) in part.iter().enumerate() {
                records.send(RawRecord {
                    partition: 0,
                    offset: (epoch * chunk + i) as i64,
                    payload: payload.clone(),
                });
            }
            progress.send(SourceProgress {
                partition: 0,
                next_offset: ((epoch + 1) * chunk) as i64,
                records: part.len() as u64,
                max_event_time: None,
                idle: false,
                finished: false,
            });
            records.advance_to(epoch as u64 + 1);
            progress.advance_to(epoch as u64 + 1);
            worker.step();
        }
    })
    .unwrap();
    changes.load(std::sync::atomic::Ordering::Relaxed)
}

fn views(c: &mut Criterion) {
    let payloads = payloads(100_000);
    let mut group = c.benchmark_group("views");
    group.sample_size(10);
    group.throughput(Throughput::Elements(payloads.len() as u64));
    for (name, views) in [
        ("tumbling_station_hourly_100k", vec!["station_hourly"]),
        ("hopping_15m_1m_100k", vec!["station_busy_15m"]),
        ("session_turnstiles_100k", vec!["turnstile_sessions"]),
        ("global_division_totals_100k", vec!["division_totals"]),
        ("all_turnstile_views_100k", vec![]),
    ] {
        let pipeline = pipeline_with(&views);
        group.bench_function(name, |b| {
            b.iter(|| black_box(run_views(&pipeline, &payloads)))
        });
    }
    group.finish();
}

fn sink_commit(c: &mut Criterion) {
    let pipeline = pipeline_with(&["station_hourly"]);
    let changes: Vec<ViewChange> = (0..10_000i64)
        .map(|i| {
            let key = vec![
                Value::String(format!("STATION {i}")),
                Value::Timestamp(i * 3_600_000_000),
            ];
            let mut row = key.clone();
            row.extend([
                Value::Timestamp((i + 1) * 3_600_000_000),
                Value::Int(i),
                Value::BigInt(i as i128 * 3),
                Value::BigInt(i as i128 * 2),
                Value::Bool(false),
            ]);
            ViewChange {
                view: 0,
                key,
                row: Some(row),
            }
        })
        .collect();
    let mut group = c.benchmark_group("sink");
    group.sample_size(10);
    group.throughput(Throughput::Elements(changes.len() as u64));
    group.bench_function("commit_10k_upserts", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("bench.duckdb");
                let warehouse = Warehouse::open(
                    &path,
                    &pipeline.views,
                    &pipeline.source_infos(),
                    &pipeline.definition(),
                )
                .unwrap();
                let snapshot = Snapshot {
                    epoch: 1,
                    changes: changes.clone(),
                    progress: vec![(
                        0,
                        SourceProgress {
                            partition: 0,
                            next_offset: 10_000,
                            records: 10_000,
                            max_event_time: None,
                            idle: false,
                            finished: false,
                        },
                    )],
                    ..Snapshot::default()
                };
                (dir, warehouse, snapshot)
            },
            |(_dir, mut warehouse, snapshot)| black_box(warehouse.commit(&snapshot).unwrap()),
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    decode,
    window_assignment,
    aggregate_update,
    views,
    sink_commit
);
criterion_main!(benches);
