//! A benchmark's results: a table on the terminal, JSON lines, a `bench_results` table in a
//! DuckDB file, and an SVG plot of events/s against workers and processes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use duckdb::{params, Connection};
use serde::{Deserialize, Serialize};

use super::measure::human_count;

/// One configuration's figures. Optional figures do not apply to every mode (no commits in
/// memory mode) or were not measured.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BenchResult {
    /// When the sweep started (RFC 3339); every result of a sweep shares it.
    pub run_started: String,
    pub machine: String,
    /// `tidewater`, or the peer system (`pyspark 4.3.0`, ...) on the same input.
    #[serde(default)]
    pub system: String,
    pub workload: String,
    pub mode: String,
    pub processes: usize,
    pub workers: usize,
    pub events: u64,
    pub seconds: f64,
    pub events_per_s: f64,
    /// Events/s divided by the cores the run could use (workers, at most the machine's cores).
    pub events_per_s_per_core: f64,
    pub mb_per_s: f64,
    /// The input path alone (generator, consume-and-discard, or file read), same events.
    pub ceiling_events_per_s: Option<f64>,
    /// `events_per_s / ceiling_events_per_s`.
    pub ceiling_ratio: Option<f64>,
    pub commit_p50_ms: Option<f64>,
    pub commit_p99_ms: Option<f64>,
    pub commit_max_ms: Option<f64>,
    pub freshness_p50_ms: Option<f64>,
    pub freshness_p99_ms: Option<f64>,
    pub peak_rss_mib: Option<f64>,
    pub snapshots: u64,
    pub output_rows: u64,
    pub note: String,
}

fn opt(value: Option<f64>, digits: usize) -> String {
    value.map_or("-".to_owned(), |v| format!("{v:.digits$}"))
}

/// The results as a fixed-width table.
pub fn table(results: &[BenchResult]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<15} {:<15} {:<7} {:>3} {:>3} {:>10} {:>9} {:>9} {:>7} {:>9} {:>6} {:>22} {:>15} {:>8}",
        "system",
        "workload",
        "mode",
        "P",
        "W",
        "events",
        "events/s",
        "per core",
        "MB/s",
        "ceiling",
        "ratio",
        "commit p50/p99/max ms",
        "fresh p50/p99ms",
        "RSS MiB"
    );
    for r in results {
        let commit = match (r.commit_p50_ms, r.commit_p99_ms, r.commit_max_ms) {
            (Some(a), Some(b), Some(c)) => format!("{a:.1}/{b:.1}/{c:.1}"),
            _ => "-".to_owned(),
        };
        let fresh = match (r.freshness_p50_ms, r.freshness_p99_ms) {
            (Some(a), Some(b)) => format!("{a:.0}/{b:.0}"),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "{:<15} {:<15} {:<7} {:>3} {:>3} {:>10} {:>9} {:>9} {:>7.1} {:>9} {:>6} {:>22} {:>15} {:>8}",
            r.system,
            r.workload,
            r.mode,
            r.processes,
            r.workers,
            r.events,
            human_count(r.events_per_s),
            human_count(r.events_per_s_per_core),
            r.mb_per_s,
            r.ceiling_events_per_s.map_or("-".to_owned(), human_count),
            opt(r.ceiling_ratio.map(|x| x * 100.0), 0)
                + if r.ceiling_ratio.is_some() { "%" } else { "" },
            commit,
            fresh,
            opt(r.peak_rss_mib, 0),
        );
    }
    out
}

/// Appends the results to a JSON-lines file.
pub fn append_jsonl(path: &Path, results: &[BenchResult]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    for result in results {
        let line = serde_json::to_string(result).map_err(std::io::Error::other)?;
        writeln!(file, "{line}")?;
    }
    file.flush()
}

/// Appends the results to table `bench_results` of a DuckDB file (created if missing), in one
/// transaction with an appender, flushed explicitly so that an error is not lost.
pub fn append_duckdb(path: &Path, results: &[BenchResult]) -> duckdb::Result<()> {
    let mut conn = Connection::open(path)?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS bench_results (
            run_started VARCHAR, machine VARCHAR, system VARCHAR, workload VARCHAR, mode VARCHAR,
            processes INTEGER, workers INTEGER, events BIGINT, seconds DOUBLE,
            events_per_s DOUBLE, events_per_s_per_core DOUBLE, mb_per_s DOUBLE,
            ceiling_events_per_s DOUBLE, ceiling_ratio DOUBLE,
            commit_p50_ms DOUBLE, commit_p99_ms DOUBLE, commit_max_ms DOUBLE,
            freshness_p50_ms DOUBLE, freshness_p99_ms DOUBLE, peak_rss_mib DOUBLE,
            snapshots BIGINT, output_rows BIGINT, note VARCHAR)",
    )?;
    let tx = conn.transaction()?;
    {
        let mut appender = tx.appender("bench_results")?;
        for r in results {
            appender.append_row(params![
                r.run_started,
                r.machine,
                r.system,
                r.workload,
                r.mode,
                r.processes as i64,
                r.workers as i64,
                r.events as i64,
                r.seconds,
                r.events_per_s,
                r.events_per_s_per_core,
                r.mb_per_s,
                r.ceiling_events_per_s,
                r.ceiling_ratio,
                r.commit_p50_ms,
                r.commit_p99_ms,
                r.commit_max_ms,
                r.freshness_p50_ms,
                r.freshness_p99_ms,
                r.peak_rss_mib,
                r.snapshots as i64,
                r.output_rows as i64,
                r.note,
            ])?;
        }
        appender.flush()?;
    }
    tx.commit()
}

/// Series colors of the plot.
const COLORS: &[&str] = &[
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

/// An SVG line plot of events/s against total workers (processes × workers), one line per
/// (workload, mode, processes). Hand-written, so the report needs nothing to render it.
pub fn scaling_svg(results: &[BenchResult], title: &str) -> String {
    let (width, height) = (720.0, 420.0);
    let (left, right, top, bottom) = (80.0, 220.0, 40.0, 50.0);
    let mut series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for r in results {
        let name = match r.system.as_str() {
            "" | "tidewater" => format!("{} {} P={}", r.workload, r.mode, r.processes),
            peer => format!("{peer} {}", r.workload),
        };
        let point = ((r.processes * r.workers) as f64, r.events_per_s);
        match series.iter_mut().find(|(n, _)| *n == name) {
            Some((_, points)) => points.push(point),
            None => series.push((name, vec![point])),
        }
    }
    for (_, points) in &mut series {
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    let max_x = results
        .iter()
        .map(|r| (r.processes * r.workers) as f64)
        .fold(1.0, f64::max);
    let max_y = nice_ceiling(results.iter().map(|r| r.events_per_s).fold(1.0, f64::max));
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let x_of = |x: f64| {
        left + if max_x <= 1.0 {
            plot_w / 2.0
        } else {
            (x - 1.0) / (max_x - 1.0) * plot_w
        }
    };
    // Workloads a hundred times apart share the plot on a log scale (one decade per grid line).
    let min_y = results
        .iter()
        .map(|r| r.events_per_s)
        .filter(|y| *y > 0.0)
        .fold(max_y, f64::min);
    let log_scale = max_y / min_y.max(1.0) > 20.0;
    let low = 10f64.powf(min_y.max(1.0).log10().floor());
    let high = 10f64.powf(max_y.log10().ceil());
    let y_of = |y: f64| match log_scale {
        true => {
            let fraction = (y.max(low).log10() - low.log10()) / (high.log10() - low.log10());
            top + plot_h - fraction * plot_h
        }
        false => top + plot_h - y / max_y * plot_h,
    };
    let ticks: Vec<f64> = match log_scale {
        true => {
            let decades = (high.log10() - low.log10()).round() as i32;
            (0..=decades).map(|d| low * 10f64.powi(d)).collect()
        }
        false => (0..=4).map(|step| max_y * f64::from(step) / 4.0).collect(),
    };

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        left + plot_w / 2.0,
        escape(title)
    );
    for value in ticks {
        let y = y_of(value);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            y + 4.0,
            human_count(value)
        );
    }
    for x in 1..=(max_x as usize) {
        let px = x_of(x as f64);
        let _ = writeln!(
            svg,
            r#"<text x="{px:.1}" y="{:.1}" text-anchor="middle">{x}</text>"#,
            top + plot_h + 18.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">workers in all (processes × workers per process)</text>"#,
        left + plot_w / 2.0,
        height - 10.0
    );
    let _ = writeln!(
        svg,
        r#"<text x="16" y="{:.1}" text-anchor="middle" transform="rotate(-90 16 {:.1})">events/s</text>"#,
        top + plot_h / 2.0,
        top + plot_h / 2.0
    );
    let _ = writeln!(
        svg,
        r#"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="black"/>"#
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", x_of(*x), y_of(*y)))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for (x, y) in points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{color}"><title>{}: {} events/s</title></circle>"#,
                x_of(*x),
                y_of(*y),
                escape(name),
                human_count(*y)
            );
        }
        let ly = top + 14.0 + i as f64 * 18.0;
        let lx = left + plot_w + 14.0;
        let _ = writeln!(
            svg,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            lx + 18.0,
            lx + 24.0,
            ly + 4.0,
            escape(name)
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// 1, 2 or 5 times a power of ten, at least `value`.
fn nice_ceiling(value: f64) -> f64 {
    let power = 10f64.powf(value.max(1.0).log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * power)
        .find(|v| *v >= value)
        .unwrap_or(10.0 * power)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(workers: usize, rate: f64) -> BenchResult {
        BenchResult {
            workload: "station-hourly".into(),
            mode: "memory".into(),
            processes: 1,
            workers,
            events: 1000,
            events_per_s: rate,
            ..BenchResult::default()
        }
    }

    #[test]
    fn the_plot_has_a_point_per_result_and_a_line_per_series() {
        let svg = scaling_svg(&[result(1, 1000.0), result(2, 1900.0)], "t <1>");
        assert_eq!(svg.matches("<circle").count(), 2);
        assert_eq!(svg.matches("<polyline").count(), 1);
        assert!(svg.contains("t &lt;1&gt;"));
    }

    #[test]
    fn results_land_in_duckdb_and_jsonl() {
        let dir = tempfile::tempdir().unwrap();
        let results = [result(1, 1000.0), result(2, 1900.0)];
        append_duckdb(&dir.path().join("r.duckdb"), &results).unwrap();
        append_duckdb(&dir.path().join("r.duckdb"), &results[..1]).unwrap();
        let conn = Connection::open(dir.path().join("r.duckdb")).unwrap();
        let (rows, sum): (i64, f64) = conn
            .query_row(
                "SELECT count(*), sum(events_per_s) FROM bench_results",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!((rows, sum), (3, 3900.0));
        append_jsonl(&dir.path().join("r.jsonl"), &results).unwrap();
        let text = std::fs::read_to_string(dir.path().join("r.jsonl")).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains("\"events_per_s\":1900.0"));
    }

    #[test]
    fn rates_far_apart_share_a_log_scale() {
        let svg = scaling_svg(&[result(1, 300_000.0), result(2, 12_000_000.0)], "t");
        // Grid lines at 100k, 1M, 10M and 100M.
        for label in [">100.0k<", ">1.00M<", ">10.00M<", ">100.00M<"] {
            assert!(svg.contains(label), "{label} missing");
        }
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(3.2e6), 5e6);
        assert_eq!(nice_ceiling(1e5), 1e5);
        assert_eq!(nice_ceiling(1.1e5), 2e5);
    }
}
