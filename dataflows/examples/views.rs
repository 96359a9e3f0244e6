//! A view dataflow on its own, on public items only: JSON records of two partitions go through
//! `build_views` (decode → event time → windows → aggregates → finalize) and every completed
//! epoch's row changes are printed.
//!
//! `cargo run --release -p tidewater-dataflows --example views`

use std::sync::Arc;

use tidewater_dataflows::operators::{CollectSnapshots, Snapshot, WatermarkConfig};
use tidewater_dataflows::{
    build_views, FieldConfig, FieldType, Format, RawRecord, Schema, SourceProgress, SourceSpec,
    SourceStreams, TimestampFormat, ViewConfig, ViewSpec,
};
use timely::dataflow::operators::vec::Input;

fn main() {
    let field = |name: &str, field_type| FieldConfig {
        name: name.into(),
        field_type,
        nullable: false,
    };
    let schema = Schema::new(
        Format::Json,
        vec![
            field("station", FieldType::String),
            field("ts", FieldType::Timestamp),
            field("entries", FieldType::Int),
        ],
        "ts",
        TimestampFormat::Rfc3339,
    )
    .unwrap();
    // Entries per station and 10 minutes; a window is final 5 minutes after it ends.
    let view: ViewConfig = serde_json::from_value(serde_json::json!({
        "name": "station_10m",
        "group_by": ["station"],
        "window": { "type": "tumbling", "size": "10m" },
        "allowed_lateness": "5m",
        "aggregates": [
            { "column": "readings", "fn": "count" },
            { "column": "entries", "fn": "sum", "field": "entries" },
        ],
    }))
    .unwrap();
    let views = vec![ViewSpec::new(&view, 0, &schema).unwrap()];
    println!("{};", views[0].create_table_sql());
    let sources = vec![SourceSpec {
        name: "turnstiles".into(),
        schema: Arc::new(schema),
        watermarks: WatermarkConfig {
            max_out_of_orderness: 60_000_000,
            idle_timeout: None,
        },
    }];

    timely::execute_from_args(std::env::args(), move |worker| {
        let (mut records, mut progress) = worker.dataflow::<u64, _, _>(|scope| {
            let (records_in, records) = scope.new_input::<RawRecord>();
            let (progress_in, progress) = scope.new_input::<SourceProgress>();
            let streams = vec![SourceStreams { records, progress }];
            build_views(scope, &sources, &views, streams).collect_snapshots(|s: Snapshot| {
                for change in &s.changes {
                    println!("epoch {}: {:?} -> {:?}", s.epoch, change.key, change.row);
                }
                for (_, late) in &s.late {
                    println!("epoch {}: late record at offset {}", s.epoch, late.offset);
                }
            });
            (records_in, progress_in)
        });
        if worker.index() != 0 {
            return;
        }
        // Two epochs per partition: (partition, minute of the hour, station, entries).
        let epochs = [
            vec![(0, 1, "59 ST", 10), (0, 4, "CANAL ST", 3), (1, 2, "59 ST", 5)],
            vec![(0, 18, "59 ST", 7), (1, 19, "CANAL ST", 2), (0, 3, "59 ST", 1), (1, 9, "59 ST", 4)],
        ];
        let mut next = [0i64; 2];
        for (epoch, batch) in epochs.iter().enumerate() {
            for &(partition, minute, station, entries) in batch {
                let payload = format!(
                    r#"{{"station":"{station}","ts":"2024-03-04T08:{minute:02}:00Z","entries":{entries}}}"#
                );
                records.send(RawRecord {
                    partition,
                    offset: next[partition as usize],
                    payload: payload.into_bytes(),
                });
                next[partition as usize] += 1;
            }
            for partition in 0..2 {
                progress.send(SourceProgress {
                    partition,
                    next_offset: next[partition as usize],
                    records: 0,
                    max_event_time: None,
                    idle: false,
                    finished: false,
                });
            }
            records.advance_to(epoch as u64 + 1);
            progress.advance_to(epoch as u64 + 1);
        }
    })
    .unwrap();
}
