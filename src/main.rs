//! The `tidewater` command line.

use std::io::BufRead;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use tidewater::cluster::{lost_peer_panic, panic_text, ClusterOptions, LostPeerPanic};
use tidewater::demo::{print_sample_query, run_demo, DemoOptions, TURNSTILE_PIPELINE};
use tidewater::launcher::{launch, LaunchOptions};
use tidewater::serve_http::{HttpServer, DEFAULT_ADDRESS};
use tidewater::serve_sql::ServeSql;
use tidewater::{run, Observer, Pipeline, RunOptions};
use tidewater_connectors::produce::TopicProducer;
use tidewater_connectors::{EmbeddedBroker, GeneratorConfig, SourceControl, TurnstileGenerator};
use tidewater_dataflows::decode::decode_reading;

/// Records, rows and keys are many small allocations, freed on other worker threads after an
/// exchange: mimalloc's per-thread free lists handle that far better than glibc's arenas
/// (measured with `tidewater bench`; see the README's Performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tidewater: Kafka in, incrementally maintained windowed aggregates out, as consistent
/// snapshots in a DuckDB warehouse file.
#[derive(Parser)]
#[command(name = "tidewater", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run an embedded Kafka-protocol broker on loopback until Ctrl-C (librdkafka's mock cluster;
    /// keeps only the newest 5 MiB per partition).
    Broker(BrokerArgs),
    /// Produce generated turnstile readings, or replay a JSONL file, to a Kafka topic.
    Produce(ProduceArgs),
    /// Run a pipeline: Kafka topics or files → windowed aggregates → DuckDB snapshots.
    ///
    /// A source with `path = "readings.jsonl"` instead of `brokers` and `topic` reads a
    /// JSON-lines (or CSV) file in parallel chunks; the run ends with a final snapshot once
    /// every file is read (with or without --exit-at-end), and a stopped run resumes from the
    /// byte offsets in the warehouse.
    Run(RunArgs),
    /// Run a pipeline as N processes on this machine (loopback ports, merged logs).
    Cluster(ClusterArgs),
    /// Check a pipeline file without running it, and print its views with their table schemas.
    Check(CheckArgs),
    /// Embedded broker + generated readings + the pipeline on all cores, then a sample query.
    Demo(DemoArgs),
    /// Run one read-only SQL statement on a warehouse: through the SQL server of the engine that
    /// writes it (`run --serve`), else on the file itself; optionally as of an earlier snapshot.
    Query(QueryArgs),
    /// Measure throughput: workloads x modes x processes x workers, each against the ceiling of
    /// its input path; writes a table, JSON lines, a DuckDB results table and an SVG plot.
    Bench(BenchArgs),
}

#[derive(Args)]
struct BenchArgs {
    /// Workloads, comma-separated: station-hourly (one tumbling count/sum view), turnstile
    /// (all views of the turnstile pipeline), q1, q2, q5, q7, q8 (Nexmark, memory mode only).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "station-hourly,turnstile,q1,q2,q5,q7,q8"
    )]
    workloads: Vec<tidewater::bench::Workload>,
    /// Modes, comma-separated: memory (generator into the dataflow, the engine's ceiling),
    /// kafka (through the embedded broker, end to end into DuckDB), file (a JSON-lines file
    /// through the file source, end to end into DuckDB).
    #[arg(long, value_delimiter = ',', default_value = "memory,kafka,file")]
    modes: Vec<tidewater::bench::Mode>,
    /// Worker threads per process to sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    workers: Vec<usize>,
    /// Processes to sweep, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1")]
    processes: Vec<usize>,
    /// Events per configuration.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Seed of the generators.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Kafka mode: use this broker (e.g. tansu or Kafka at 127.0.0.1:9092, which must
    /// auto-create topics) instead of the embedded one.
    #[arg(long)]
    brokers: Option<String>,
    /// Kafka mode: seconds of paced producing (at half the measured rate) to measure
    /// freshness; 0 skips it.
    #[arg(long, default_value_t = 10.0)]
    freshness_seconds: f64,
    /// A smoke run in well under two minutes: 20,000 events, 2 s of freshness.
    #[arg(long)]
    quick: bool,
    /// Also run the same hourly-per-station view in PySpark, Bytewax and Pathway (those whose
    /// package the Python in TIDEWATER_PEERS_PYTHON, else python3, can import) on the file
    /// mode's input, check that every system computed the same rows, and report the ratios.
    #[arg(long)]
    peers: bool,
    /// Directory of the result files (results.jsonl and results.duckdb are appended to).
    #[arg(long, default_value = "bench-results")]
    out: PathBuf,
    /// Internal: run one configuration as this process of it (the sweep starts these).
    #[arg(long, hide = true)]
    child_process: Option<usize>,
    /// Internal: the hostfile of a multi-process configuration.
    #[arg(long, hide = true)]
    hostfile: Option<PathBuf>,
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("file").required(true).args(["config", "warehouse"])))]
struct QueryArgs {
    /// The pipeline file (TOML) whose warehouse to read, as `run --config` takes it.
    #[arg(long, visible_alias = "pipeline")]
    config: Option<PathBuf>,
    /// The warehouse file (or a published copy of one).
    #[arg(long)]
    warehouse: Option<PathBuf>,
    /// See every view as of this snapshot (`_snapshots.snapshot_id`), rebuilt from its change
    /// table; a view without one (no `changes = true`) is refused.
    #[arg(long, value_name = "SNAPSHOT")]
    as_of: Option<i64>,
    /// How to print the result.
    #[arg(long, value_enum, default_value = "table")]
    format: tidewater::query::OutputFormat,
    /// One read-only statement (SELECT, WITH, VALUES, FROM, TABLE, SHOW, DESCRIBE, SUMMARIZE,
    /// PIVOT, EXPLAIN), e.g. "SELECT * FROM station_hourly ORDER BY entries DESC LIMIT 10".
    /// It may begin with a `--` comment.
    #[arg(allow_hyphen_values = true)]
    sql: String,
}

#[derive(Args)]
struct BrokerArgs {
    /// Create this topic at start.
    #[arg(long)]
    topic: Option<String>,
    /// Partitions of the created topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Write the bootstrap address to this file once the broker listens (for scripts and tests).
    #[arg(long)]
    address_file: Option<PathBuf>,
}

#[derive(Args)]
struct ProduceArgs {
    /// Kafka bootstrap servers, e.g. 127.0.0.1:9092.
    #[arg(long)]
    brokers: String,
    #[arg(long)]
    topic: String,
    /// Number of generated readings.
    #[arg(long, required_unless_present = "file", conflicts_with = "file")]
    events: Option<u64>,
    /// Seed of the generator: the same seed produces the same readings.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Readings per second (default: as fast as possible). Generated readings are then a live
    /// feed: their event time advances about as fast as the clock. Without it, each reading is
    /// 200 ms of event time after the last on average (a backfill of past days).
    #[arg(long)]
    rate: Option<f64>,
    /// Fraction of readings whose event time is 1-90 minutes in the past (out of order).
    #[arg(long, default_value_t = 0.02)]
    late_fraction: f64,
    /// Replay this JSONL file, one message per line, instead of generating.
    #[arg(long)]
    file: Option<PathBuf>,
}

#[derive(Args)]
struct RunArgs {
    /// The pipeline file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Worker threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    /// Stop after reading up to the end of the topic as it is at start, with a final snapshot
    /// (file sources always stop at the end of their file).
    #[arg(long)]
    exit_at_end: bool,
    /// Processes in the cluster (each runs `--workers` threads); needs --hostfile when > 1.
    #[arg(long, default_value_t = 1)]
    processes: usize,
    /// This process's index, 0 to processes-1; process 0 writes the warehouse.
    #[arg(long, default_value_t = 0)]
    process: usize,
    /// One `host:port` per line for each process, in process order (the same file everywhere).
    #[arg(long)]
    hostfile: Option<PathBuf>,
    /// Seconds to wait for every process of the cluster to connect.
    #[arg(long, default_value_t = 60)]
    connect_timeout: u64,
    #[command(flatten)]
    serve: ServeArgs,
}

/// The servers beside a running pipeline (`run`, `demo`, `cluster`).
#[derive(Args)]
struct ServeArgs {
    /// While running, answer read-only SQL over the Postgres wire protocol (psql, BI tools) on
    /// this address; `--serve` alone listens on 127.0.0.1:5433. Clients must give the password
    /// in TIDEWATER_SERVE_PASSWORD when it is set. In a cluster, process 0 serves.
    #[arg(
        long = "serve",
        value_name = "ADDR",
        num_args = 0..=1,
        default_missing_value = "127.0.0.1:5433"
    )]
    serve_sql: Option<String>,
    /// Serve a live dashboard (/), snapshot events (/events), views as JSON (/api/views) and
    /// Prometheus metrics (/metrics) at HOST:PORT; without a value, or as :PORT or PORT, on
    /// loopback only (port 0 picks a free port; the address is logged).
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = DEFAULT_ADDRESS)]
    serve_http: Option<String>,
}

impl ServeArgs {
    /// The observer and its server, when asked for.
    fn start(&self) -> Result<Option<(Arc<Observer>, HttpServer)>> {
        let Some(address) = &self.serve_http else {
            return Ok(None);
        };
        let observer = Observer::new();
        let server = HttpServer::start(address, Arc::clone(&observer))?;
        Ok(Some((observer, server)))
    }

    /// The SQL server to start with the warehouse, when asked for.
    fn sql(&self) -> Option<ServeSql> {
        self.serve_sql.clone().map(|listen| ServeSql {
            listen,
            password: std::env::var(tidewater::serve_sql::PASSWORD_VARIABLE).ok(),
        })
    }
}

#[derive(Args)]
struct ClusterArgs {
    /// The pipeline file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Processes to start.
    #[arg(long, default_value_t = 2)]
    processes: usize,
    /// Worker threads per process.
    #[arg(long, default_value_t = 1)]
    workers: usize,
    /// Stop after reading up to the end of the topic as it is at start, with a final snapshot.
    #[arg(long)]
    exit_at_end: bool,
    /// Process 0, which writes the warehouse, runs the servers.
    #[command(flatten)]
    serve: ServeArgs,
}

#[derive(Args)]
struct CheckArgs {
    /// The pipeline file (TOML).
    #[arg(required_unless_present = "config")]
    pipeline: Option<PathBuf>,
    /// The pipeline file, given as `run --config` takes it.
    #[arg(long, conflicts_with = "pipeline", value_name = "CONFIG")]
    config: Option<PathBuf>,
}

#[derive(Args)]
struct DemoArgs {
    /// Readings to generate.
    #[arg(long, default_value_t = 200_000)]
    events: u64,
    /// Worker threads (default: all cores).
    #[arg(long)]
    workers: Option<usize>,
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The warehouse file the demo (re)creates.
    #[arg(long, default_value = "tidewater-demo.duckdb")]
    warehouse: PathBuf,
    /// Run this pipeline file instead of the built-in one (its first source must read turnstile
    /// readings from topic `turnstile`; brokers and the warehouse path are replaced).
    #[arg(long)]
    pipeline: Option<PathBuf>,
    /// Print the demo's pipeline file (a complete example to start from) and exit.
    #[arg(long)]
    print_pipeline: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

/// mimalloc's `purge_delay` option (number 15 in mimalloc 2 and 3; the Rust bindings have no
/// name for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Memory a worker frees is mostly needed again within the next epoch (batches, exchange
/// buffers, arrangement merges). mimalloc returns free memory to the OS after a second by
/// default, so every epoch faulted it in again, and zeroing those fresh pages took up to a fifth
/// of a worker's time (`tidewater bench`, 2-core VM). Ten seconds keeps a steady run's memory
/// and still returns what a burst needed. `MIMALLOC_PURGE_DELAY` in the environment wins.
fn keep_freed_memory_for_a_while() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options to a value it documents; no pointers involved.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
    }
}

fn main() {
    keep_freed_memory_for_a_while();
    quiet_peer_panics();
    tidewater::logging::init();
    if let Err(error) = dispatch(Cli::parse()) {
        eprintln!("tidewater: error: {error:#}");
        std::process::exit(1);
    }
}

/// When a peer process of a cluster goes away, timely panics in several threads (see
/// `LostPeerPanic`); the run ends with one clear error. Print the cause in one line instead of
/// a panic report per thread.
fn quiet_peer_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let text = panic_text(info.payload()).unwrap_or("");
        match lost_peer_panic(text) {
            Some(LostPeerPanic::Cause) => eprintln!("tidewater: {text}"),
            Some(LostPeerPanic::Echo) => {}
            None => default(info),
        }
    }));
}

fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Broker(args) => broker(args),
        Command::Produce(args) => produce(args),
        Command::Run(args) => run_pipeline(args),
        Command::Cluster(args) => cluster(args),
        Command::Check(args) => check(args),
        Command::Demo(args) => demo(args),
        Command::Query(args) => query(args),
        Command::Bench(args) => bench(args),
    }
}

fn bench(args: BenchArgs) -> Result<()> {
    let (events, freshness_seconds) = match args.quick {
        true => (20_000, 2.0),
        false => (args.events, args.freshness_seconds),
    };
    if args.workers.contains(&0) || args.processes.contains(&0) {
        bail!("--workers and --processes must be at least 1");
    }
    let options = tidewater::bench::BenchOptions {
        workloads: args.workloads,
        modes: args.modes,
        workers: args.workers,
        processes: args.processes,
        events,
        seed: args.seed,
        brokers: args.brokers,
        freshness_seconds,
        out: args.out,
        peers: args.peers,
        child: args
            .child_process
            .map(|process| tidewater::bench::ChildRole {
                process,
                hostfile: args.hostfile,
            }),
    };
    tidewater::bench::run_bench(&options)?;
    Ok(())
}

fn query(args: QueryArgs) -> Result<()> {
    let (path, published) = match (&args.warehouse, &args.config) {
        (Some(path), _) => (path.clone(), None),
        (None, Some(config)) => {
            let warehouse = Pipeline::load(config)?.config.warehouse;
            (warehouse.path, warehouse.publish)
        }
        (None, None) => bail!("give --config or --warehouse"),
    };
    // A running engine holds the file: its SQL server (`run --serve`) answers instead.
    let server = tidewater::serve_sql::address_file_of(&path);
    if args.as_of.is_none() {
        if let Ok(address) = std::fs::read_to_string(&server) {
            let password = std::env::var(tidewater::serve_sql::PASSWORD_VARIABLE).ok();
            match tidewater::query::run_on_server(address.trim(), password.as_deref(), &args.sql) {
                Ok(result) => {
                    print!("{}", tidewater::query::render(&result, args.format));
                    return Ok(());
                }
                // A server that is gone left its address behind (a killed engine): read the
                // file itself.
                Err(tidewater::EngineError::ServerUnreachable(_)) => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    let options = tidewater_sinks::ReadOptions {
        as_of: args.as_of,
        published,
    };
    let reader = tidewater_sinks::Reader::open(&path, &options)?;
    let result = tidewater::query::run_query(&reader, &args.sql)?;
    print!("{}", tidewater::query::render(&result, args.format));
    Ok(())
}

fn all_cores() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Ctrl-C and SIGTERM set the stop flag (last snapshot, clean exit); a second Ctrl-C exits at once.
fn stop_on_signals(control: &SourceControl) -> Result<()> {
    use signal_hook::consts::{SIGINT, SIGTERM, SIGXFSZ};
    let flag = control.stop_flag();
    for signal in [SIGINT, SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&flag))?;
        signal_hook::flag::register(signal, Arc::clone(&flag))?;
    }
    // A file-size limit (ulimit -f) would kill the process by default; handled, it surfaces as
    // a write error ("File too large"), which stops the run cleanly like a full disk.
    signal_hook::flag::register(SIGXFSZ, Arc::new(std::sync::atomic::AtomicBool::new(false)))?;
    Ok(())
}

fn broker(args: BrokerArgs) -> Result<()> {
    let broker = EmbeddedBroker::start()?;
    if let Some(topic) = &args.topic {
        broker.create_topic(topic, args.partitions)?;
    }
    let address = broker.bootstrap_servers();
    if let Some(file) = &args.address_file {
        std::fs::write(file, &address).with_context(|| format!("writing {}", file.display()))?;
    }
    println!("{address}");
    eprintln!("tidewater broker: listening on {address}; Ctrl-C stops it");
    let control = SourceControl::new();
    stop_on_signals(&control)?;
    while !control.stop_requested() {
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

fn produce(args: ProduceArgs) -> Result<()> {
    if args
        .rate
        .is_some_and(|rate| !rate.is_finite() || rate <= 0.0)
    {
        bail!("--rate must be above 0");
    }
    let mut producer = TopicProducer::new(&args.brokers, &args.topic)?;
    if let Some(path) = &args.file {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        for line in std::io::BufReader::new(file).lines() {
            let line = line.with_context(|| format!("reading {}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            // Key by turnstile where the line is a reading; anything else is sent as it is
            // (the engine will reject it visibly).
            let key = decode_reading(line.as_bytes())
                .ok()
                .map(|r| r.turnstile_id());
            producer.send(key.as_deref().map(str::as_bytes), line.as_bytes())?;
            producer.pace(args.rate);
        }
    } else {
        if !(0.0..=1.0).contains(&args.late_fraction) {
            bail!("--late-fraction must be between 0 and 1");
        }
        let defaults = GeneratorConfig::default();
        let config = GeneratorConfig {
            seed: args.seed,
            late_fraction: args.late_fraction,
            mean_gap_us: args
                .rate
                .map_or(defaults.mean_gap_us, GeneratorConfig::live_gap_us),
            ..defaults
        };
        for reading in TurnstileGenerator::new(config).take(args.events.unwrap_or(0) as usize) {
            producer.send(
                Some(reading.turnstile_id().as_bytes()),
                reading.to_json().as_bytes(),
            )?;
            producer.pace(args.rate);
        }
    }
    let delivered = producer.flush()?;
    eprintln!(
        "tidewater produce: {delivered} messages delivered to `{}`",
        args.topic
    );
    Ok(())
}

fn check(args: CheckArgs) -> Result<()> {
    // clap requires one of the two.
    let path = args.config.or(args.pipeline).unwrap_or_default();
    let pipeline = Pipeline::load(&path)?;
    println!(
        "{}: ok, {} source(s), {} view(s)\n",
        path.display(),
        pipeline.sources.len(),
        pipeline.views.len()
    );
    print!("{}", pipeline.describe());
    Ok(())
}

fn run_pipeline(args: RunArgs) -> Result<()> {
    let pipeline = Pipeline::load(&args.config)?;
    let control = SourceControl::new();
    stop_on_signals(&control)?;
    let workers = args.workers.unwrap_or_else(all_cores);
    for source in &pipeline.config.sources {
        match &source.path {
            Some(path) => eprintln!(
                "tidewater run: source {}: file {} (the run ends when it is read)",
                source.name,
                path.display()
            ),
            None => eprintln!(
                "tidewater run: source {}: topic `{}` on {}",
                source.name, source.topic, source.brokers
            ),
        }
    }
    for view in &pipeline.views {
        eprintln!("tidewater run: view {}: {}", view.name, view.describe());
    }
    eprintln!(
        "tidewater run: warehouse {}, {} workers",
        pipeline.config.warehouse.path.display(),
        workers
    );
    let cluster = match (args.processes, &args.hostfile) {
        (1, None) => None,
        (_, None) => bail!("--processes {} needs --hostfile", args.processes),
        (processes, Some(hostfile)) => Some(ClusterOptions::from_hostfile(
            hostfile,
            processes,
            args.process,
            Duration::from_secs(args.connect_timeout),
        )?),
    };
    if let Some(cluster) = &cluster {
        eprintln!(
            "tidewater run: process {} of {} ({}), {}",
            cluster.process,
            cluster.addresses.len(),
            cluster.addresses[cluster.process],
            if cluster.process == 0 {
                "the warehouse writer"
            } else {
                "not writing the warehouse"
            }
        );
    }
    let serving = args.serve.start()?;
    let options = RunOptions {
        workers,
        exit_at_end: args.exit_at_end,
        progress: true,
        cluster,
        on_commit: None,
        observe: serving.as_ref().map(|(observer, _)| Arc::clone(observer)),
        serve_sql: args.serve.sql(),
    };
    let summary = run(&pipeline, options, Arc::clone(&control))?;
    drop(serving);
    let how = if control.stop_flag().load(Ordering::Relaxed) && !args.exit_at_end {
        "stopped"
    } else {
        "finished"
    };
    eprintln!(
        "tidewater run: {how}: {} records ({} rejected, {} rows in _late) in {:.1}s, {:.0} events/s, {} snapshots committed",
        summary.records_in,
        summary.records_rejected,
        summary.records_late,
        summary.elapsed.as_secs_f64(),
        summary.events_per_second(),
        summary.snapshots
    );
    if let Some(publish) = &summary.publish {
        let millis = |d: Duration| d.as_secs_f64() * 1e3;
        eprintln!(
            "tidewater run: published {} ({} copies, the last of snapshot {}, taking {:.0} ms, the slowest {:.0} ms; {} failed)",
            publish.target.display(),
            publish.published,
            publish.last_snapshot.map_or("none".to_owned(), |s| s.to_string()),
            publish.last_duration.map_or(0.0, millis),
            millis(publish.max_duration),
            publish.failures
        );
    }
    Ok(())
}

fn cluster(args: ClusterArgs) -> Result<()> {
    if args.processes == 0 || args.workers == 0 {
        bail!("--processes and --workers must be at least 1");
    }
    // Checked here once, so that a bad file is one error rather than one per process.
    Pipeline::load(&args.config)?;
    let hostfile = tempfile_path("tidewater-hosts");
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kill = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The first Ctrl-C/SIGTERM stops the cluster cleanly, a second one kills it.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
    ])?;
    let (first, second) = (Arc::clone(&stop), Arc::clone(&kill));
    std::thread::spawn(move || {
        for _ in signals.forever() {
            if first.swap(true, Ordering::SeqCst) {
                second.store(true, Ordering::SeqCst);
            }
        }
    });
    let options = LaunchOptions {
        processes: args.processes,
        workers: args.workers,
        config: args.config,
        exit_at_end: args.exit_at_end,
        hostfile: hostfile.clone(),
        serve_sql: args.serve.serve_sql,
        serve_http: args.serve.serve_http,
    };
    let result = launch(&options, stop, kill);
    let _ = std::fs::remove_file(&hostfile);
    result?;
    eprintln!("tidewater cluster: every process finished");
    Ok(())
}

/// A fresh path in the temporary directory, unique to this process.
fn tempfile_path(stem: &str) -> PathBuf {
    std::env::temp_dir().join(format!("{stem}-{}.txt", std::process::id()))
}

fn demo(args: DemoArgs) -> Result<()> {
    if args.print_pipeline {
        print!("{TURNSTILE_PIPELINE}");
        return Ok(());
    }
    let serving = args.serve.start()?;
    let options = DemoOptions {
        events: args.events,
        workers: args.workers.unwrap_or_else(all_cores),
        partitions: args.partitions,
        seed: args.seed,
        warehouse: args.warehouse,
        pipeline: args.pipeline,
        observe: serving.as_ref().map(|(observer, _)| Arc::clone(observer)),
        serve_sql: args.serve.sql(),
    };
    let summary = run_demo(&options)?;
    drop(serving);
    println!(
        "tidewater demo: {} readings through {} workers in {:.1}s: {:.0} events/s ({} rejected, {} rows in _late, {} snapshots)",
        summary.records_in,
        summary.workers,
        summary.elapsed.as_secs_f64(),
        summary.events_per_second(),
        summary.records_rejected,
        summary.records_late,
        summary.snapshots
    );
    print_sample_query(&options.warehouse).context("querying the demo warehouse")?;
    Ok(())
}
