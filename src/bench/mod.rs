//! `tidewater bench`: the project's own throughput harness.
//!
//! A sweep runs every (workload, mode, processes, workers) configuration in turn, each with its
//! input path's ceiling measured in the same run, and reports events/s, events/s per core,
//! MB/s, snapshot commit latency, freshness and peak memory: as a table, as JSON lines, as rows
//! of `bench_results` in a DuckDB file, and as an SVG scaling plot.
//!
//! Modes (see each module): [`memory`] (generator straight into the dataflow: the engine's
//! ceiling), [`kafka`] (through a broker, end to end into DuckDB).

pub mod file;
pub mod kafka;
pub mod measure;
pub mod memory;
pub mod peers;
pub mod report;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidewater_connectors::{EmbeddedBroker, SourceControl};
use tidewater_dataflows::nexmark::Query;

use crate::cluster::{timely_config, ClusterOptions};
use crate::demo::TURNSTILE_PIPELINE;
use crate::engine::{RunOptions, RunSummary};
use crate::error::EngineError;
use crate::launcher::free_loopback_addresses;
use crate::pipeline::Pipeline;
use kafka::{Broker, KafkaBench};
use measure::{available_cores, peak_rss_mib, reset_peak_rss, Latencies, ProgressBar};
use report::BenchResult;

/// What is computed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Workload {
    /// All views of the turnstile pipeline (`tidewater demo --print-pipeline`).
    Turnstile,
    /// Its `station_hourly` view alone: tumbling count and sums per key.
    StationHourly,
    /// A built-in Nexmark query over generated persons, auctions and bids (memory mode only).
    Nexmark(Query),
}

impl Workload {
    pub const ALL: &[Workload] = &[
        Workload::StationHourly,
        Workload::Turnstile,
        Workload::Nexmark(Query::Q1),
        Workload::Nexmark(Query::Q2),
        Workload::Nexmark(Query::Q5),
        Workload::Nexmark(Query::Q7),
        Workload::Nexmark(Query::Q8),
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Turnstile => "turnstile",
            Workload::StationHourly => "station-hourly",
            Workload::Nexmark(query) => query.name(),
        }
    }

    /// Modes this workload runs in: Nexmark queries are dataflows over typed events, not
    /// pipelines of a source's payloads, so they have no broker or file path yet.
    fn supports(self, mode: Mode) -> bool {
        !matches!(self, Workload::Nexmark(_)) || mode == Mode::Memory
    }

    /// The pipeline of a turnstile workload (Nexmark uses only its snapshot interval).
    fn pipeline(self) -> Pipeline {
        let mut pipeline = Pipeline::from_toml(TURNSTILE_PIPELINE, "turnstile.toml")
            .expect("the built-in pipeline is valid");
        if self == Workload::StationHourly {
            pipeline.config.views.retain(|v| v.name == "station_hourly");
        }
        Pipeline::new(pipeline.config).expect("a subset of a valid pipeline is valid")
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        Workload::ALL
            .iter()
            .copied()
            .find(|w| w.name() == text)
            .ok_or_else(|| {
                let names: Vec<&str> = Workload::ALL.iter().map(|w| w.name()).collect();
                format!("unknown workload {text:?}; one of: {}", names.join(", "))
            })
    }
}

/// Where the events come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Generator straight into the dataflow, no warehouse: the engine's ceiling.
    Memory,
    /// Through a Kafka-protocol broker, end to end into DuckDB.
    Kafka,
    /// From a JSON-lines file through the file source, end to end into DuckDB.
    File,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Memory => "memory",
            Mode::Kafka => "kafka",
            Mode::File => "file",
        }
    }
}

/// A whole sweep.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    pub workloads: Vec<Workload>,
    pub modes: Vec<Mode>,
    pub workers: Vec<usize>,
    pub processes: Vec<usize>,
    /// Events per configuration.
    pub events: u64,
    pub seed: u64,
    /// Kafka mode: this broker instead of the embedded one.
    pub brokers: Option<String>,
    /// Kafka mode: seconds of paced producing to measure freshness (0: skip).
    pub freshness_seconds: f64,
    /// Results go here: `results.jsonl`, `results.duckdb`, `scaling.svg`.
    pub out: PathBuf,
    /// Also run the peers (PySpark, Bytewax, Pathway) on the file mode's input and compare.
    pub peers: bool,
    /// Set in the child processes a sweep starts, one configuration each.
    pub child: Option<ChildRole>,
}

/// A child's place: which process of its configuration it is, and the cluster's hostfile.
#[derive(Clone, Debug)]
pub struct ChildRole {
    pub process: usize,
    pub hostfile: Option<PathBuf>,
}

/// One configuration of a sweep.
#[derive(Clone, Copy, Debug)]
struct Configuration {
    workload: Workload,
    mode: Mode,
    processes: usize,
    workers: usize,
}

/// Runs the sweep, prints the table, and writes the result files. Returns the results.
pub fn run_bench(options: &BenchOptions) -> Result<Vec<BenchResult>, EngineError> {
    if let Some(role) = &options.child {
        return run_child(options, role);
    }
    std::fs::create_dir_all(&options.out).map_err(|e| io_error(&options.out, e))?;
    let run_started = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let machine = machine_description();
    eprintln!(
        "tidewater bench: {machine}; {} events per configuration",
        options.events
    );
    let scratch = tempfile::Builder::new()
        .prefix("tidewater-bench-")
        .tempdir()
        .map_err(|e| io_error(&std::env::temp_dir(), e))?;

    let input = file::readings_path(scratch.path(), options.events, options.seed);
    if options.modes.contains(&Mode::File) || options.peers {
        eprintln!(
            "tidewater bench: writing {} readings to {}",
            options.events,
            input.display()
        );
        file::write_readings(&input, options.events, options.seed)
            .map_err(|e| io_error(&input, e))?;
    }
    let mut results = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for &workload in &options.workloads {
        for &mode in &options.modes {
            for &processes in &options.processes {
                for &workers in &options.workers {
                    let configuration = Configuration {
                        workload,
                        mode,
                        processes,
                        workers,
                    };
                    if !workload.supports(mode) {
                        eprintln!(
                            "tidewater bench: skipping {workload} in {} mode: Nexmark queries run in memory mode only",
                            mode.name()
                        );
                        continue;
                    }
                    if processes > 1 && mode != Mode::Memory {
                        eprintln!(
                            "tidewater bench: skipping {workload} in {} mode with {processes} processes: only memory mode runs as a cluster here (run `tidewater cluster` against a broker for the rest)",
                            mode.name()
                        );
                        continue;
                    }
                    // A failed configuration is reported and the sweep goes on; the sweep
                    // fails at the end, after writing what it measured.
                    let result = match spawn_configuration(options, configuration, scratch.path()) {
                        Ok(result) => result,
                        Err(error) => {
                            eprintln!("tidewater bench: error: {error}");
                            failures.push(error.to_string());
                            continue;
                        }
                    };
                    eprint!(
                        "{}",
                        report::table(std::slice::from_ref(&result))
                            .lines()
                            .nth(1)
                            .map(|l| format!("{l}\n"))
                            .unwrap_or_default()
                    );
                    results.push(result);
                }
            }
        }
    }

    if options.peers {
        match compare_with_peers(options, &results, &input, scratch.path()) {
            Ok(peers) => results.extend(peers),
            Err(error) => {
                eprintln!("tidewater bench: error: {error}");
                failures.push(error.to_string());
            }
        }
    }
    for result in &mut results {
        result.run_started = run_started.clone();
        result.machine = machine.clone();
    }

    println!("\n{}", report::table(&results));
    let jsonl = options.out.join("results.jsonl");
    report::append_jsonl(&jsonl, &results).map_err(|e| io_error(&jsonl, e))?;
    let duckdb = options.out.join("results.duckdb");
    report::append_duckdb(&duckdb, &results)
        .map_err(|e| EngineError::Bench(format!("{}: {e}", duckdb.display())))?;
    let svg = options.out.join("scaling.svg");
    let title = format!(
        "Tidewater events/s, {} events per run, {machine}",
        options.events
    );
    std::fs::write(&svg, report::scaling_svg(&results, &title)).map_err(|e| io_error(&svg, e))?;
    println!(
        "results: {} (JSON lines), {} (table bench_results), {} (plot)",
        jsonl.display(),
        duckdb.display(),
        svg.display()
    );
    if !failures.is_empty() {
        return Err(EngineError::Bench(format!(
            "{} of the sweep's configurations failed (the others are reported above): {}",
            failures.len(),
            failures.join("; ")
        )));
    }
    Ok(results)
}

/// Runs one configuration in fresh child processes (one per process of the configuration), so
/// that each starts from a clean heap and reports its own peak memory; returns the result that
/// process 0 prints.
fn spawn_configuration(
    options: &BenchOptions,
    configuration: Configuration,
    scratch: &Path,
) -> Result<BenchResult, EngineError> {
    let exe = std::env::current_exe()
        .map_err(|e| EngineError::Bench(format!("finding the tidewater binary: {e}")))?;
    let Configuration {
        workload,
        mode,
        processes,
        workers,
    } = configuration;
    let hostfile = scratch.join(format!(
        "hosts-{workload}-{}-{processes}x{workers}",
        mode.name()
    ));
    if processes > 1 {
        let addresses = free_loopback_addresses(processes)?;
        std::fs::write(&hostfile, addresses.join("\n") + "\n")
            .map_err(|e| io_error(&hostfile, e))?;
    }
    let mut children = Vec::new();
    for process in 0..processes {
        let mut command = Command::new(&exe);
        command
            .arg("bench")
            .args(["--child-process", &process.to_string()])
            .args(["--workloads", workload.name()])
            .args(["--modes", mode.name()])
            .args(["--workers", &workers.to_string()])
            .args(["--processes", &processes.to_string()])
            .args(["--events", &options.events.to_string()])
            .args(["--seed", &options.seed.to_string()])
            .args([
                "--freshness-seconds",
                &options.freshness_seconds.to_string(),
            ])
            .arg("--out")
            .arg(scratch)
            .stdout(Stdio::piped());
        if processes > 1 {
            command.arg("--hostfile").arg(&hostfile);
        }
        if let Some(brokers) = &options.brokers {
            command.args(["--brokers", brokers]);
        }
        let child = command
            .spawn()
            .map_err(|e| EngineError::Bench(format!("starting a benchmark process: {e}")))?;
        children.push(child);
    }
    let mut result = None;
    let mut failure = None;
    for (process, child) in children.into_iter().enumerate() {
        let output = child
            .wait_with_output()
            .map_err(|e| EngineError::Bench(format!("waiting for a benchmark process: {e}")))?;
        if !output.status.success() {
            failure.get_or_insert(format!(
                "{workload} {} {processes}x{workers}: benchmark process {process} failed ({})",
                mode.name(),
                output.status
            ));
            continue;
        }
        if process == 0 {
            let text = String::from_utf8_lossy(&output.stdout);
            let line = text.lines().last().unwrap_or_default();
            result = Some(serde_json::from_str::<BenchResult>(line).map_err(|e| {
                EngineError::Bench(format!(
                    "reading a benchmark process's result {line:?}: {e}"
                ))
            })?);
        }
    }
    match (failure, result) {
        (Some(failure), _) => Err(EngineError::Bench(failure)),
        (None, Some(result)) => Ok(result),
        (None, None) => Err(EngineError::Bench("no benchmark result".to_owned())),
    }
}

/// A child's side: runs its one configuration; process 0 prints the result as one JSON line.
fn run_child(options: &BenchOptions, role: &ChildRole) -> Result<Vec<BenchResult>, EngineError> {
    let configuration = Configuration {
        workload: options.workloads[0],
        mode: options.modes[0],
        processes: options.processes[0],
        workers: options.workers[0],
    };
    let cluster = match &role.hostfile {
        Some(hostfile) => Some(ClusterOptions::from_hostfile(
            hostfile,
            configuration.processes,
            role.process,
            Duration::from_secs(60),
        )?),
        None => None,
    };
    let broker = match (&options.brokers, configuration.mode) {
        (Some(servers), _) => Some(Broker::External(servers.clone())),
        (None, Mode::Kafka) => Some(Broker::Embedded(EmbeddedBroker::start()?)),
        (None, _) => None,
    };
    let result = run_configuration(
        options,
        configuration,
        broker.as_ref(),
        &options.out,
        cluster,
    )?;
    if role.process == 0 {
        let line = serde_json::to_string(&result).map_err(|e| EngineError::Bench(e.to_string()))?;
        println!("{line}");
    }
    Ok(vec![result])
}

fn run_configuration(
    options: &BenchOptions,
    configuration: Configuration,
    broker: Option<&Broker>,
    scratch: &Path,
    cluster: Option<ClusterOptions>,
) -> Result<BenchResult, EngineError> {
    let Configuration {
        workload,
        mode,
        processes,
        workers,
    } = configuration;
    let label = format!("{workload}-{}-{processes}x{workers}", mode.name());
    let pipeline = workload.pipeline();
    reset_peak_rss();
    let mut result = BenchResult {
        system: "tidewater".to_owned(),
        workload: workload.to_string(),
        mode: mode.name().to_owned(),
        processes,
        workers,
        ..BenchResult::default()
    };
    let (events, bytes, elapsed, ceiling) = match mode {
        Mode::Memory => {
            let done = Arc::new(AtomicU64::new(0));
            let bar_done = Arc::clone(&done);
            let bar = ProgressBar::start(label.clone(), options.events, move || {
                bar_done.load(Ordering::Relaxed)
            });
            let config = timely_config(workers, cluster.as_ref());
            // The ceiling runs once, in process 0, after the run, with as many threads as the
            // whole configuration had workers; other processes skip it (0 threads).
            let process = cluster.as_ref().map_or(0, |c| c.process);
            let ceiling_threads = if process == 0 { processes * workers } else { 0 };
            let (run, ceiling) = match workload {
                Workload::Nexmark(query) => {
                    let interval = pipeline.config.warehouse.snapshot_interval.0;
                    let run = memory::run_nexmark(
                        query,
                        options.events,
                        options.seed,
                        interval,
                        config,
                        done,
                    );
                    (
                        run,
                        memory::nexmark_ceiling(options.events, options.seed, ceiling_threads),
                    )
                }
                _ => {
                    let run = memory::run_turnstile(
                        &pipeline,
                        options.events,
                        options.seed,
                        config,
                        done,
                    );
                    (
                        run,
                        memory::turnstile_ceiling(options.events, options.seed, ceiling_threads),
                    )
                }
            };
            let mut run = run.map_err(EngineError::Worker)?;
            drop(bar);
            if processes > 1 {
                // Process 0 finishes only after every process fed its share: all events are in.
                let local = run.events.max(1);
                run.payload_bytes = run.payload_bytes * options.events / local;
                run.events = options.events;
            }
            result.snapshots = run.snapshots;
            result.output_rows = run.output_rows;
            result.freshness_p50_ms = run.freshness.percentile(50.0);
            result.freshness_p99_ms = run.freshness.percentile(99.0);
            result.note = match workload {
                Workload::Nexmark(_) => "typed events, no decode; ceiling: the generator; freshness: generated → epoch complete at the output".into(),
                _ => "JSON payloads decoded by the engine; ceiling: generating them; freshness: generated → epoch complete at the output (no commit)".into(),
            };
            (run.events, run.payload_bytes, run.elapsed, ceiling)
        }
        Mode::Kafka => {
            let broker = broker.expect("a broker is started for kafka mode");
            let run = kafka::run_kafka(
                &pipeline,
                &KafkaBench {
                    events: options.events,
                    workers,
                    seed: options.seed,
                    freshness_seconds: options.freshness_seconds,
                },
                broker,
                scratch,
                &label,
            )?;
            result.snapshots = run.snapshots;
            result.output_rows = run.output_rows;
            note_commits(&mut result, &run.commits);
            result.freshness_p50_ms = run.freshness.percentile(50.0);
            result.freshness_p99_ms = run.freshness.percentile(99.0);
            result.note = format!(
                "ceiling: rdkafka consume-and-discard; freshness: produce → committed, snapshot interval {} ms",
                run.snapshot_interval.as_millis()
            );
            (run.events, run.payload_bytes, run.elapsed, run.ceiling)
        }
        Mode::File => {
            let input = file::readings_path(scratch, options.events, options.seed);
            let warehouse = scratch.join(format!("{label}.duckdb"));
            let run = file::run_file(
                &pipeline,
                &input,
                workers,
                &warehouse,
                &label,
                options.events,
            )?;
            result.snapshots = run.snapshots;
            result.output_rows = run.output_rows;
            note_commits(&mut result, &run.commits);
            result.note = format!(
                "ceiling: the file's chunks read and discarded; warehouse {}",
                run.warehouse.display()
            );
            (run.events, run.bytes, run.elapsed, run.ceiling)
        }
    };
    let seconds = elapsed.as_secs_f64().max(1e-9);
    result.events = events;
    result.seconds = seconds;
    result.events_per_s = events as f64 / seconds;
    let cores = (processes * workers).min(available_cores()).max(1);
    result.events_per_s_per_core = result.events_per_s / cores as f64;
    result.mb_per_s = bytes as f64 / seconds / 1e6;
    let ceiling_rate = events as f64 / ceiling.max(Duration::from_nanos(1)).as_secs_f64();
    result.ceiling_events_per_s = Some(ceiling_rate);
    result.ceiling_ratio = Some(result.events_per_s / ceiling_rate);
    result.peak_rss_mib = peak_rss_mib();
    Ok(result)
}

/// Runs the peers on the file mode's input, checks that they and Tidewater's file-mode run
/// (station-hourly, the most workers of the sweep; run now if the sweep had none) computed the
/// same rows, and returns the peers' results (and Tidewater's run, if made here).
fn compare_with_peers(
    options: &BenchOptions,
    results: &[BenchResult],
    input: &Path,
    scratch: &Path,
) -> Result<Vec<BenchResult>, EngineError> {
    let mut added = Vec::new();
    let tidewater = results
        .iter()
        .filter(|r| r.workload == Workload::StationHourly.name() && r.mode == Mode::File.name())
        .filter(|r| r.processes == 1)
        .max_by_key(|r| r.workers)
        .cloned();
    let tidewater = match tidewater {
        Some(result) => result,
        None => {
            let workers = options.workers.iter().copied().max().unwrap_or(1);
            let configuration = Configuration {
                workload: Workload::StationHourly,
                mode: Mode::File,
                processes: 1,
                workers,
            };
            let result = spawn_configuration(options, configuration, scratch)?;
            added.push(result.clone());
            result
        }
    };
    let warehouse = scratch.join(format!(
        "{}-file-1x{}.duckdb",
        Workload::StationHourly.name(),
        tidewater.workers
    ));
    let ours = peers::station_hourly_csv(&warehouse)
        .map_err(|e| EngineError::Bench(format!("{}: {e}", warehouse.display())))?;
    let python = peers::python();
    let runs = peers::run_peers(&python, input, scratch)?;
    let mut fastest: Option<(String, f64)> = None;
    for run in &runs {
        let theirs = std::fs::read_to_string(&run.output).map_err(|e| io_error(&run.output, e))?;
        if let Some(difference) = peers::differences(&ours, &theirs) {
            return Err(EngineError::Bench(format!(
                "{} computed other rows than Tidewater on {}: {difference}",
                run.peer,
                input.display()
            )));
        }
        let rate = run.events as f64 / run.seconds.max(1e-9);
        // Threads the peer ran with, as its settings say (`local[2]`, `2 threads`).
        let threads = if run.settings.contains("local[2]") || run.settings.contains("2 threads") {
            2
        } else {
            1
        };
        if fastest.as_ref().is_none_or(|(_, best)| rate > *best) {
            fastest = Some((run.peer.clone(), rate));
        }
        added.push(BenchResult {
            system: format!("{} {}", run.peer, run.version),
            workload: Workload::StationHourly.name().to_owned(),
            mode: Mode::File.name().to_owned(),
            processes: 1,
            workers: threads,
            events: run.events,
            seconds: run.seconds,
            events_per_s: rate,
            events_per_s_per_core: rate / threads as f64,
            mb_per_s: std::fs::metadata(input).map_or(0.0, |m| m.len() as f64)
                / run.seconds.max(1e-9)
                / 1e6,
            output_rows: run.rows,
            note: format!(
                "{}; {:.1} s with start-up; same {} rows as Tidewater",
                run.settings, run.total_seconds, run.rows
            ),
            ..BenchResult::default()
        });
    }
    if let Some((peer, rate)) = fastest {
        println!(
            "\nTidewater file mode ({} workers) {} events/s = {:.1}x the fastest peer ({peer}, {} events/s); all computed the same {} rows",
            tidewater.workers,
            measure::human_count(tidewater.events_per_s),
            tidewater.events_per_s / rate,
            measure::human_count(rate),
            ours.lines().count().saturating_sub(1)
        );
    }
    Ok(added)
}

/// What an engine run to the end of its input measured.
pub struct EngineRun {
    pub summary: RunSummary,
    pub commits: Latencies,
    /// Rows upserted and deleted over all commits.
    pub output_rows: u64,
}

/// Runs `pipeline` to the end of its input on `workers` (`--exit-at-end`), with a progress bar
/// over `events`, recording each commit's latency and rows.
pub fn run_to_end(
    pipeline: &Pipeline,
    workers: usize,
    events: u64,
    label: &str,
) -> Result<EngineRun, EngineError> {
    let commits = Arc::new(Mutex::new((Latencies::default(), 0u64)));
    let hook_commits = Arc::clone(&commits);
    let control = SourceControl::new();
    let bar_control = Arc::clone(&control);
    let bar = ProgressBar::start(format!("{label} engine"), events, move || {
        bar_control.records_in()
    });
    let summary = crate::engine::run(
        pipeline,
        RunOptions {
            workers,
            exit_at_end: true,
            observe: None,
            serve_sql: None,
            on_commit: Some(Arc::new(move |_, info| {
                let mut commits = hook_commits.lock().unwrap_or_else(|e| e.into_inner());
                commits.0.push(info.duration);
                commits.1 += info.rows_upserted + info.rows_deleted;
            })),
            ..RunOptions::default()
        },
        control,
    )?;
    drop(bar);
    let (commits, output_rows) =
        std::mem::take(&mut *commits.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(EngineRun {
        summary,
        commits,
        output_rows,
    })
}

/// Fills a result's commit latency figures.
fn note_commits(result: &mut BenchResult, commits: &Latencies) {
    result.commit_p50_ms = commits.percentile(50.0);
    result.commit_p99_ms = commits.percentile(99.0);
    result.commit_max_ms = commits.max();
}

/// Cores, CPU model and memory, for the report.
pub fn machine_description() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map_or("unknown CPU".to_owned(), |m| m.trim().to_owned());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory_gib = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(String::new(), |kib| {
            format!(", {:.0} GiB", kib / 1024.0 / 1024.0)
        });
    format!("{} cores, {model}{memory_gib}", available_cores())
}

fn io_error(path: &Path, error: std::io::Error) -> EngineError {
    EngineError::Bench(format!("{}: {error}", path.display()))
}
