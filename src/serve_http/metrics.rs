//! `/metrics` in the Prometheus text exposition format (version 0.0.4), written by hand: a
//! few families of counters, gauges and two histograms do not need a metrics library.
//!
//! Names are `tidewater_*` with their unit last. What they measure:
//! - positions are those committed to the warehouse (what a reader of the file sees), so lag
//!   is what the warehouse is behind the topic, not what the consumer has fetched;
//! - freshness is, per snapshot, the time from the close of its epoch (every source had
//!   reported its offsets for it) to the end of its commit: a record read at time t is in the
//!   warehouse by t + snapshot_interval + freshness.

use std::fmt::Write;

use crate::observe::{Counters, Histogram};

/// Prometheus label values escape backslash, double quote and newline.
fn label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

struct Page {
    text: String,
}

impl Page {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", label(v)))
                .collect();
            let _ = write!(self.text, "{{{}}}", pairs.join(","));
        }
        let _ = writeln!(self.text, " {}", number(value));
    }

    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }

    fn histogram(&mut self, name: &str, help: &str, histogram: &Histogram) {
        self.family(name, "histogram", help);
        let bucket = format!("{name}_bucket");
        for (bound, count) in histogram.cumulative() {
            self.sample(&bucket, &[("le", &number(bound))], count as f64);
        }
        self.sample(&bucket, &[("le", "+Inf")], histogram.count as f64);
        self.sample(&format!("{name}_sum"), &[], histogram.sum);
        self.sample(&format!("{name}_count"), &[], histogram.count as f64);
    }
}

fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_owned()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else {
        format!("{value}")
    }
}

/// The metrics page. `view_sizes`: (view, rows, rows of windows not final yet).
pub fn render(counters: &Counters, view_sizes: &[(String, i64, Option<i64>)]) -> String {
    let mut page = Page {
        text: String::new(),
    };
    page.single(
        "tidewater_workers",
        "gauge",
        "Timely worker threads of this process.",
        counters.workers as f64,
    );
    page.single(
        "tidewater_processes",
        "gauge",
        "Processes of the cluster (1 without one).",
        counters.processes as f64,
    );
    page.single(
        "tidewater_snapshots_committed_total",
        "counter",
        "Snapshots committed to the warehouse by this run.",
        counters.snapshots as f64,
    );
    if let Some(last) = &counters.last {
        page.single(
            "tidewater_last_snapshot_id",
            "gauge",
            "Id of the last committed snapshot (_snapshots.snapshot_id).",
            last.snapshot_id as f64,
        );
    }
    if let Some(seconds) = counters.seconds_since_commit {
        page.single(
            "tidewater_last_commit_age_seconds",
            "gauge",
            "Seconds since the last commit (since the start before the first).",
            seconds,
        );
    }
    page.single(
        "tidewater_records_read_total",
        "counter",
        "Records read by this process's sources (replays and records not yet committed included).",
        counters.records_read as f64,
    );
    page.family(
        "tidewater_records_in_total",
        "counter",
        "Records of each source partition (file chunk) committed by this run.",
    );
    for ((source, partition), stats) in &counters.partitions {
        let name = source_name(counters, *source);
        page.sample(
            "tidewater_records_in_total",
            &[("source", name), ("partition", &partition.to_string())],
            stats.records_in as f64,
        );
    }
    page.single(
        "tidewater_records_rejected_total",
        "counter",
        "Records that could not be decoded, committed to _rejects by this run.",
        counters.records_rejected as f64,
    );
    page.single(
        "tidewater_records_late_total",
        "counter",
        "Records for final windows, committed to _late by this run.",
        counters.records_late as f64,
    );
    page.family(
        "tidewater_rows_changed_total",
        "counter",
        "View rows upserted and deleted by this run's snapshots.",
    );
    page.sample(
        "tidewater_rows_changed_total",
        &[("change", "upsert")],
        counters.rows_upserted as f64,
    );
    page.sample(
        "tidewater_rows_changed_total",
        &[("change", "delete")],
        counters.rows_deleted as f64,
    );
    positions(&mut page, counters);
    page.family(
        "tidewater_watermark_timestamp_seconds",
        "gauge",
        "Event-time watermark of each source at the last commit (Unix seconds).",
    );
    for (source, watermark) in &counters.watermarks {
        page.sample(
            "tidewater_watermark_timestamp_seconds",
            &[("source", source_name(counters, *source))],
            *watermark as f64 / 1e6,
        );
    }
    page.histogram(
        "tidewater_snapshot_commit_seconds",
        "Duration of each snapshot's commit transaction.",
        &counters.commit_seconds,
    );
    page.histogram(
        "tidewater_snapshot_freshness_seconds",
        "From the close of a snapshot's epoch by every source to the end of its commit.",
        &counters.freshness_seconds,
    );
    if let Some(freshness) = counters.last.as_ref().and_then(|l| l.freshness_ms) {
        page.single(
            "tidewater_freshness_seconds",
            "gauge",
            "Freshness of the last committed snapshot (see tidewater_snapshot_freshness_seconds).",
            freshness / 1e3,
        );
    }
    page.family(
        "tidewater_view_rows",
        "gauge",
        "Rows in each view table at the latest snapshot.",
    );
    for (view, rows, _) in view_sizes {
        page.sample("tidewater_view_rows", &[("view", view)], *rows as f64);
    }
    page.family(
        "tidewater_view_open_rows",
        "gauge",
        "Rows of windows not final yet in each windowed view (what the engine holds in memory).",
    );
    for (view, _, open) in view_sizes {
        if let Some(open) = open {
            page.sample("tidewater_view_open_rows", &[("view", view)], *open as f64);
        }
    }
    page.text
}

fn source_name(counters: &Counters, source: usize) -> &str {
    counters
        .sources
        .get(source)
        .map_or("?", |s| s.name.as_str())
}

/// Committed offsets, high watermarks and lag: records for Kafka partitions, bytes for file
/// chunks.
fn positions(page: &mut Page, counters: &Counters) {
    let is_kafka = |source: usize| {
        counters
            .sources
            .get(source)
            .is_some_and(|s| s.kafka.is_some())
    };
    let families = [
        (
            true,
            "tidewater_committed_offset",
            "Next offset of each Kafka partition committed with the last snapshot.",
        ),
        (
            true,
            "tidewater_high_watermark_offset",
            "High watermark of each Kafka partition (refreshed every second while serving).",
        ),
        (
            true,
            "tidewater_consumer_lag_records",
            "Records of each Kafka partition not yet in the warehouse: high watermark - committed offset.",
        ),
        (
            false,
            "tidewater_file_committed_bytes",
            "Byte position of each file chunk committed with the last snapshot.",
        ),
        (
            false,
            "tidewater_file_remaining_bytes",
            "Bytes of each file chunk not yet in the warehouse: chunk end - committed position.",
        ),
    ];
    for (kafka, name, help) in families {
        page.family(name, "gauge", help);
        for ((source, partition), stats) in &counters.partitions {
            if is_kafka(*source) != kafka {
                continue;
            }
            let observed = &counters.sources[*source];
            let place = if kafka { "topic" } else { "path" };
            let partition = partition.to_string();
            let labels = [
                ("source", observed.name.as_str()),
                (place, observed.topic.as_str()),
                ("partition", partition.as_str()),
            ];
            let value = match name {
                "tidewater_committed_offset" | "tidewater_file_committed_bytes" => {
                    Some(stats.committed_offset)
                }
                "tidewater_high_watermark_offset" => stats.high_watermark,
                _ => stats.lag(),
            };
            if let Some(value) = value {
                page.sample(name, &labels, value as f64);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::{ObservedSource, PartitionStats};

    #[test]
    fn the_page_is_prometheus_text() {
        let mut counters = Counters {
            workers: 2,
            processes: 1,
            snapshots: 3,
            ..Counters::default()
        };
        counters.sources.push(ObservedSource {
            name: "turnstiles".to_owned(),
            topic: "turn\"stile".to_owned(),
            kafka: Some(tidewater_connectors::KafkaSourceConfig {
                brokers: "127.0.0.1:9092".to_owned(),
                topic: "turn\"stile".to_owned(),
                poll_batch: 1,
                options: Default::default(),
                offset_reset: Default::default(),
            }),
        });
        counters.sources.push(ObservedSource {
            name: "backfill".to_owned(),
            topic: "/data/readings.jsonl".to_owned(),
            kafka: None,
        });
        counters.partitions.insert(
            (0, 1),
            PartitionStats {
                committed_offset: 40,
                high_watermark: Some(100),
                records_in: 40,
                max_event_time: None,
            },
        );
        counters.partitions.insert(
            (1, 0),
            PartitionStats {
                committed_offset: 10,
                high_watermark: Some(25),
                records_in: 2,
                max_event_time: None,
            },
        );
        counters.commit_seconds.observe(0.02);
        let text = render(&counters, &[("station_hourly".to_owned(), 7, Some(2))]);
        for expected in [
            "# TYPE tidewater_snapshots_committed_total counter\ntidewater_snapshots_committed_total 3\n",
            "tidewater_consumer_lag_records{source=\"turnstiles\",topic=\"turn\\\"stile\",partition=\"1\"} 60\n",
            "tidewater_file_remaining_bytes{source=\"backfill\",path=\"/data/readings.jsonl\",partition=\"0\"} 15\n",
            "tidewater_records_in_total{source=\"turnstiles\",partition=\"1\"} 40\n",
            "tidewater_snapshot_commit_seconds_bucket{le=\"0.025\"} 1\n",
            "tidewater_snapshot_commit_seconds_bucket{le=\"+Inf\"} 1\n",
            "tidewater_view_rows{view=\"station_hourly\"} 7\n",
            "tidewater_view_open_rows{view=\"station_hourly\"} 2\n",
        ] {
            assert!(text.contains(expected), "{expected:?} not in\n{text}");
        }
        assert!(!text.contains("tidewater_consumer_lag_records{source=\"backfill\""));
        // Every line is a comment or `name{labels} value`.
        for line in text.lines() {
            let ok = line.starts_with("# HELP ")
                || line.starts_with("# TYPE ")
                || line.rsplit_once(' ').is_some_and(|(name, value)| {
                    name.starts_with("tidewater_") && value.parse::<f64>().is_ok()
                });
            assert!(ok, "{line}");
        }
    }
}
