//! `tidewater demo`: embedded broker → generated readings → pipeline on all cores → warehouse,
//! then throughput and a sample analytic query.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use duckdb::Connection;
use tidewater_connectors::produce::TopicProducer;
use tidewater_connectors::{
    ConnectorError, EmbeddedBroker, GeneratorConfig, SourceControl, TurnstileGenerator,
};

use crate::engine::{run, RunOptions, RunSummary};
use crate::error::EngineError;
use crate::observe::Observer;
use crate::pipeline::Pipeline;
use crate::serve_sql::ServeSql;

pub const DEMO_TOPIC: &str = "turnstile";

#[derive(Clone, Debug)]
pub struct DemoOptions {
    pub events: u64,
    pub workers: usize,
    pub partitions: i32,
    pub seed: u64,
    pub warehouse: PathBuf,
    /// A pipeline file to run instead of the turnstile pipeline (its first source must read
    /// turnstile readings; brokers and warehouse path are replaced).
    pub pipeline: Option<PathBuf>,
    /// Publishes the run (`--serve-http`).
    pub observe: Option<Arc<Observer>>,
    /// Answers SQL while it runs (`--serve`).
    pub serve_sql: Option<ServeSql>,
}

/// Readings the producer may run ahead of the engine per partition: well inside the embedded
/// broker's 5 MiB retention (about 25,000 readings of ~200 bytes).
const MAX_LAG_PER_PARTITION: u64 = 8_000;

/// The turnstile pipeline file (`tidewater demo --print-pipeline` prints it).
pub const TURNSTILE_PIPELINE: &str = include_str!("turnstile.toml");

/// The pipeline the demo runs against a broker at `brokers`.
pub fn demo_pipeline(brokers: &str, warehouse: &Path) -> Pipeline {
    let pipeline = Pipeline::from_toml(TURNSTILE_PIPELINE, "turnstile.toml")
        .expect("the built-in pipeline is valid");
    point_at(pipeline, brokers, warehouse)
}

/// The pipeline with every source reading `brokers` and the warehouse at `warehouse`.
fn point_at(mut pipeline: Pipeline, brokers: &str, warehouse: &Path) -> Pipeline {
    for source in &mut pipeline.config.sources {
        source.brokers = brokers.to_owned();
    }
    pipeline.config.sources[0].topic = DEMO_TOPIC.to_owned();
    pipeline.config.warehouse.path = warehouse.to_owned();
    pipeline
}

/// Removes a warehouse file and its write-ahead log, so that a demo starts from nothing.
fn remove_warehouse(path: &Path) -> std::io::Result<()> {
    for file in [
        path.to_owned(),
        PathBuf::from(format!("{}.wal", path.display())),
    ] {
        match std::fs::remove_file(&file) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

pub fn run_demo(options: &DemoOptions) -> Result<RunSummary, EngineError> {
    remove_warehouse(&options.warehouse).map_err(|e| EngineError::Config {
        path: options.warehouse.display().to_string(),
        detail: format!("cannot replace the demo warehouse: {e}"),
    })?;
    let broker = EmbeddedBroker::start()?;
    broker.create_topic(DEMO_TOPIC, options.partitions)?;
    let brokers = broker.bootstrap_servers();
    tracing::info!(
        "demo: embedded broker at {brokers}, topic `{DEMO_TOPIC}` with {} partitions; producing {} readings while {} workers consume",
        options.partitions, options.events, options.workers
    );
    let config = match &options.pipeline {
        Some(path) => point_at(Pipeline::load(path)?, &brokers, &options.warehouse),
        None => demo_pipeline(&brokers, &options.warehouse),
    };
    let control = SourceControl::new();

    let producer_control = Arc::clone(&control);
    let producer_config = config.config.sources[0].kafka();
    let (events, seed, partitions) = (options.events, options.seed, options.partitions as u64);
    let producer = std::thread::spawn(move || -> Result<(), ConnectorError> {
        let mut producer = TopicProducer::new(&producer_config.brokers, &producer_config.topic)?;
        let generator = TurnstileGenerator::new(GeneratorConfig {
            seed,
            ..Default::default()
        });
        for reading in generator.take(events as usize) {
            // Stay inside the embedded broker's retention: never run too far ahead of the engine.
            while producer
                .sent()
                .saturating_sub(producer_control.records_in())
                > MAX_LAG_PER_PARTITION * partitions
            {
                if producer_control.stop_requested() {
                    return Ok(());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            producer.send(
                Some(reading.turnstile_id().as_bytes()),
                reading.to_json().as_bytes(),
            )?;
        }
        producer.flush()?;
        // Everything is in the topic: the run ends once it has read up to here.
        producer_control.set_end_offsets(
            &producer_config.topic,
            tidewater_connectors::kafka::high_watermarks(&producer_config)?,
        );
        Ok(())
    });

    let options_run = RunOptions {
        workers: options.workers,
        exit_at_end: false,
        progress: true,
        cluster: None,
        on_commit: None,
        observe: options.observe.clone(),
        serve_sql: options.serve_sql.clone(),
    };
    let result = run(&config, options_run, Arc::clone(&control));
    if result.is_err() {
        control.request_stop();
    }
    let produced = producer
        .join()
        .map_err(|_| EngineError::Worker("the demo producer panicked".to_owned()))?;
    let summary = result?;
    produced?;
    drop(broker);
    Ok(summary)
}

/// The sample analytic query of the demo: the busiest station of each hour.
pub const BUSIEST_STATIONS_SQL: &str = "\
SELECT window_start, station, entries, exits, readings
FROM (
    SELECT *, row_number() OVER (PARTITION BY window_start ORDER BY entries DESC, station) AS rank
    FROM station_hourly
)
WHERE rank = 1
ORDER BY window_start
LIMIT 12";

/// Prints the result of the sample query, read from the warehouse file after the run.
pub fn print_sample_query(warehouse: &Path) -> Result<(), duckdb::Error> {
    let conn = Connection::open(warehouse)?;
    let (rows, snapshots): (i64, i64) = conn.query_row(
        "SELECT (SELECT count(*) FROM station_hourly), (SELECT count(*) FROM _snapshots)",
        [],
        |row| Ok((row.get(0)?, row.get(1)?)),
    )?;
    println!(
        "\nwarehouse {}: {rows} rows in station_hourly, {snapshots} snapshots",
        warehouse.display()
    );
    println!("\n-- busiest station per hour\n{BUSIEST_STATIONS_SQL};\n");
    println!(
        "{:<20} {:<18} {:>9} {:>9} {:>9}",
        "window_start", "station", "entries", "exits", "readings"
    );
    let mut statement = conn.prepare(&format!("SELECT strftime(window_start, '%Y-%m-%d %H:%M'), station, entries::BIGINT, exits::BIGINT, readings FROM ({BUSIEST_STATIONS_SQL})"))?;
    let mut rows = statement.query([])?;
    while let Some(row) = rows.next()? {
        let (start, station, entries, exits, readings): (String, String, i64, i64, i64) = (
            row.get(0)?,
            row.get(1)?,
            row.get(2)?,
            row.get(3)?,
            row.get(4)?,
        );
        println!("{start:<20} {station:<18} {entries:>9} {exits:>9} {readings:>9}");
    }
    println!(
        "\nQuery it yourself: duckdb {} \"SELECT * FROM station_hourly LIMIT 10\"",
        warehouse.display()
    );
    Ok(())
}
