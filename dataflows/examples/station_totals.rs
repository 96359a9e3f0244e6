//! Station totals per tumbling hour, updated incrementally as readings arrive over epochs,
//! including a late reading that revises an earlier window.
//!
//! Run: `cargo run --release -p tidewater-dataflows --example station_totals`

use differential_dataflow::input::Input;
use tidewater_dataflows::decode::{decode_reading, format_rfc3339};
use tidewater_dataflows::{station_window_totals, TumblingWindow, WindowConfig};

fn main() {
    let batches: [&[&str]; 3] = [
        &[
            r#"{"ca":"A002","unit":"R051","scp":"02-00-00","station":"59 ST","linename":"NQR456W","division":"BMT","ts":"2024-03-04T08:10:00Z","desc":"REGULAR","entries":120,"exits":40}"#,
            r#"{"ca":"A002","unit":"R051","scp":"02-00-01","station":"59 ST","linename":"NQR456W","division":"BMT","ts":"2024-03-04T08:40:00Z","desc":"REGULAR","entries":95,"exits":31}"#,
        ],
        &[
            r#"{"ca":"R101","unit":"R001","scp":"02-00-00","station":"FULTON ST","linename":"2345ACJZ","division":"IRT","ts":"2024-03-04T09:05:00Z","desc":"REGULAR","entries":210,"exits":180}"#,
        ],
        // Late: belongs to the 08:00 window, which is revised.
        &[
            r#"{"ca":"A002","unit":"R051","scp":"02-00-02","station":"59 ST","linename":"NQR456W","division":"BMT","ts":"2024-03-04T08:55:00Z","desc":"REGULAR","entries":7,"exits":3}"#,
        ],
    ];
    timely::execute_directly(move |worker| {
        let window = TumblingWindow::new(&WindowConfig::default());
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, readings) = scope.new_collection();
            let (probe, _) = station_window_totals(readings, window)
                .inspect(|((group, totals), epoch, diff)| {
                    let change = if *diff > 0 { "+" } else { "-" };
                    println!(
                        "epoch {epoch}: {change} {} {:<10} readings={} entries={} exits={}",
                        format_rfc3339(group.window_start),
                        group.station,
                        totals.readings,
                        totals.entries,
                        totals.exits
                    );
                })
                .probe();
            (input, probe)
        });
        for (epoch, batch) in batches.iter().enumerate() {
            for payload in batch.iter() {
                input.insert(decode_reading(payload.as_bytes()).expect("valid reading"));
            }
            input.advance_to(epoch as u64 + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
        }
    });
}
