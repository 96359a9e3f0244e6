//! `kafka` mode: generated readings through a Kafka-protocol broker (the embedded one unless
//! `--brokers` names another), end to end into a DuckDB warehouse.
//!
//! Three phases on one topic layout, each in this process:
//! 1. **throughput**: everything is produced first, then the engine reads the whole topic with
//!    `--exit-at-end` semantics, so the rate is the engine's and not the producer's;
//! 2. **ceiling**: the same topic is consumed and discarded by plain rdkafka consumers, one per
//!    worker, with the engine's consumer settings — what the input path alone can do;
//! 3. **freshness**: a producer paced at half the measured rate appends to a fresh topic while
//!    the engine runs; a record's freshness is the time from its produce call until the first
//!    committed snapshot whose offsets cover it. Its readings are a live feed: their event time
//!    advances about as fast as the clock (see `freshness`).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Message, Offset, TopicPartitionList};
use tidewater_connectors::kafka::{consumer_config, high_watermarks};
use tidewater_connectors::produce::TopicProducer;
use tidewater_connectors::{
    ConnectorError, EmbeddedBroker, GeneratorConfig, SourceControl, TurnstileGenerator,
};

use super::measure::{Latencies, ProgressBar};
use super::{run_to_end, EngineRun};
use crate::engine::{run, RunOptions};
use crate::error::EngineError;
use crate::pipeline::Pipeline;

/// The embedded broker keeps only the newest 5 MiB per partition: the throughput phase
/// produces everything first, so it spreads the events over enough partitions to keep each
/// well below that.
const BYTES_PER_PARTITION: u64 = 3 * 1024 * 1024;
/// Produced bytes of an average reading (measured: 200-230).
const READING_BYTES: u64 = 240;
/// Every how many records per partition the freshness phase keeps a send time.
const FRESHNESS_SAMPLE_EVERY: i64 = 16;

/// Where the records go: the embedded broker (started here, kept alive for the run) or another.
pub enum Broker {
    Embedded(EmbeddedBroker),
    External(String),
}

impl Broker {
    pub fn bootstrap_servers(&self) -> String {
        match self {
            Broker::Embedded(broker) => broker.bootstrap_servers(),
            Broker::External(servers) => servers.clone(),
        }
    }

    /// Creates the topic on the embedded broker; an external broker must auto-create topics
    /// (tansu and Kafka's default do) or have them already.
    fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), ConnectorError> {
        match self {
            Broker::Embedded(broker) => broker.create_topic(topic, partitions),
            Broker::External(_) => Ok(()),
        }
    }
}

#[derive(Clone, Debug)]
pub struct KafkaBench {
    pub events: u64,
    pub workers: usize,
    pub seed: u64,
    /// Seconds of paced producing in the freshness phase (0: no freshness phase).
    pub freshness_seconds: f64,
}

/// What the three phases measured.
#[derive(Clone, Debug, Default)]
pub struct KafkaRun {
    pub events: u64,
    pub payload_bytes: u64,
    pub elapsed: Duration,
    pub snapshots: u64,
    pub output_rows: u64,
    pub commits: Latencies,
    pub ceiling: Duration,
    pub freshness: Latencies,
    /// Snapshot interval of the pipeline (freshness is bounded below by it).
    pub snapshot_interval: Duration,
}

/// Partitions needed to hold `events` readings inside the embedded broker's retention.
pub fn partitions_for(events: u64, workers: usize) -> i32 {
    let needed = (events * READING_BYTES).div_ceil(BYTES_PER_PARTITION);
    needed.max(8).max(workers as u64) as i32
}

/// Runs the three phases with `pipeline` (its first source reads the readings; its warehouse
/// is replaced by files in `scratch`).
pub fn run_kafka(
    pipeline: &Pipeline,
    bench: &KafkaBench,
    broker: &Broker,
    scratch: &Path,
    label: &str,
) -> Result<KafkaRun, EngineError> {
    let brokers = broker.bootstrap_servers();
    let partitions = partitions_for(bench.events, bench.workers);
    let topic = format!("bench-{label}-{}", chrono::Utc::now().timestamp_micros());
    broker.create_topic(&topic, partitions)?;
    let payload_bytes = produce_all(&brokers, &topic, partitions, bench.events, bench.seed)?;

    // 1. Throughput: the engine reads the whole topic.
    let pipeline_at = |topic: &str, warehouse: &str| {
        let mut pipeline = pipeline.clone();
        pipeline.config.sources[0].brokers = brokers.clone();
        pipeline.config.sources[0].topic = topic.to_owned();
        pipeline.config.warehouse.path = scratch.join(warehouse);
        pipeline
    };
    let engine_pipeline = pipeline_at(&topic, &format!("{label}-throughput.duckdb"));
    let EngineRun {
        summary,
        commits: commit_latencies,
        output_rows,
    } = run_to_end(&engine_pipeline, bench.workers, bench.events, label)?;

    // 2. Ceiling: consume and discard the same topic.
    let source = engine_pipeline.config.sources[0].kafka();
    let ceiling = consume_and_discard(&source, bench.workers, bench.events)?;

    // 3. Freshness under a load the engine keeps up with.
    let freshness = if bench.freshness_seconds > 0.0 {
        let rate = (summary.events_per_second() / 2.0).max(100.0);
        let fresh_topic = format!("{topic}-fresh");
        broker.create_topic(&fresh_topic, partitions)?;
        freshness(
            &pipeline_at(&fresh_topic, &format!("{label}-freshness.duckdb")),
            bench,
            partitions,
            rate,
            label,
        )?
    } else {
        Latencies::default()
    };
    Ok(KafkaRun {
        events: summary.records_in,
        payload_bytes,
        elapsed: summary.elapsed,
        snapshots: summary.snapshots,
        output_rows,
        commits: commit_latencies,
        ceiling,
        freshness,
        snapshot_interval: pipeline.config.warehouse.snapshot_interval.0,
    })
}

/// Produces `events` readings round robin over the partitions; returns their payload bytes.
fn produce_all(
    brokers: &str,
    topic: &str,
    partitions: i32,
    events: u64,
    seed: u64,
) -> Result<u64, ConnectorError> {
    let mut producer = TopicProducer::new(brokers, topic)?;
    let mut bytes = 0u64;
    let mut generator = TurnstileGenerator::new(GeneratorConfig {
        seed,
        ..GeneratorConfig::default()
    });
    let mut payload = String::with_capacity(192);
    for i in 0..events {
        payload.clear();
        generator.next_json(&mut payload);
        bytes += payload.len() as u64;
        producer.send_to((i % partitions as u64) as i32, payload.as_bytes())?;
    }
    producer.flush()?;
    Ok(bytes)
}

/// Reads the topic from its start to its high watermarks with one plain consumer per worker
/// (partitions assigned round robin, as the source does), discarding every record.
fn consume_and_discard(
    source: &tidewater_connectors::KafkaSourceConfig,
    workers: usize,
    events: u64,
) -> Result<Duration, ConnectorError> {
    let ends = high_watermarks(source)?;
    let started = Instant::now();
    let results: Vec<Result<u64, ConnectorError>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|worker| {
                let mine: BTreeMap<i32, i64> = ends
                    .iter()
                    .filter(|(p, _)| **p as usize % workers == worker)
                    .map(|(p, e)| (*p, *e))
                    .collect();
                scope.spawn(move || discard_partitions(source, &mine))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Ok(0)))
            .collect()
    });
    let mut read = 0;
    for result in results {
        read += result?;
    }
    if read != events {
        return Err(ConnectorError::Config(format!(
            "the consume-and-discard ceiling read {read} records of {events}"
        )));
    }
    Ok(started.elapsed())
}

/// One consumer reading `ends` (partition → end offset) from offset 0; returns records read.
fn discard_partitions(
    source: &tidewater_connectors::KafkaSourceConfig,
    ends: &BTreeMap<i32, i64>,
) -> Result<u64, ConnectorError> {
    if ends.is_empty() {
        return Ok(0);
    }
    let consumer: BaseConsumer = consumer_config(source)
        .create()
        .map_err(|e| ConnectorError::Config(e.to_string()))?;
    let mut assignment = TopicPartitionList::new();
    for partition in ends.keys() {
        assignment
            .add_partition_offset(&source.topic, *partition, Offset::Beginning)
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
    }
    consumer
        .assign(&assignment)
        .map_err(|e| ConnectorError::Config(e.to_string()))?;
    let mut remaining: BTreeMap<i32, i64> = ends.clone();
    remaining.retain(|_, end| *end > 0);
    let (mut read, mut bytes) = (0u64, 0usize);
    let deadline = Instant::now() + Duration::from_secs(600);
    while !remaining.is_empty() && Instant::now() < deadline {
        // Errors are end-of-partition events (the engine's settings ask for them) or transient.
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(100)) {
            read += 1;
            bytes += message.payload().map_or(0, <[u8]>::len);
            if message.offset() + 1 >= remaining.get(&message.partition()).copied().unwrap_or(0) {
                remaining.remove(&message.partition());
            }
        }
    }
    std::hint::black_box(bytes);
    Ok(read)
}

/// Produces at `rate` for the configured seconds while the engine runs, and measures each
/// sampled record's time from its produce call to the first snapshot covering its offset.
fn freshness(
    pipeline: &Pipeline,
    bench: &KafkaBench,
    partitions: i32,
    rate: f64,
    label: &str,
) -> Result<Latencies, EngineError> {
    let events = (rate * bench.freshness_seconds).ceil() as u64;
    // (partition, offset) → when it was handed to the producer.
    let sent: Arc<Mutex<BTreeMap<(i32, i64), Instant>>> = Arc::default();
    let latencies: Arc<Mutex<Latencies>> = Arc::default();
    let control = SourceControl::new();
    let source = pipeline.config.sources[0].kafka();
    let producer_failed = Arc::new(AtomicBool::new(false));
    // Records are sampled only once the engine has committed its first snapshot: freshness is
    // a steady-state figure, and the engine's start-up (building the dataflow, connecting to the
    // broker) would otherwise count as the latency of the first records produced.
    let engine_running = Arc::new(AtomicBool::new(false));

    let (producer_sent, producer_control, seed) =
        (Arc::clone(&sent), Arc::clone(&control), bench.seed);
    let producer_source = source.clone();
    let failed = Arc::clone(&producer_failed);
    let sampling = Arc::clone(&engine_running);
    let producer = std::thread::spawn(move || -> Result<(), ConnectorError> {
        let result = (|| {
            let mut producer =
                TopicProducer::new(&producer_source.brokers, &producer_source.topic)?;
            let generator = TurnstileGenerator::new(GeneratorConfig {
                seed: seed + 1,
                // Event time about as fast as the wall clock, as in a live feed. The default gap
                // runs event time thousands of times faster (a backfill): partitions then get
                // past the allowed drift within an epoch, and once they have caught up with the
                // log alignment holds them to the watermark, which moves once per epoch. Every
                // record then waited an extra epoch (p50 1.25 s instead of 0.9 s at 1 s epochs).
                mean_gap_us: GeneratorConfig::live_gap_us(rate),
                ..GeneratorConfig::default()
            });
            let mut next_offset = vec![0i64; partitions as usize];
            for (i, reading) in generator.take(events as usize).enumerate() {
                if producer_control.stop_requested() {
                    return Ok(());
                }
                producer.pace(Some(rate));
                let partition = i as i32 % partitions;
                let offset = next_offset[partition as usize];
                next_offset[partition as usize] += 1;
                if offset % FRESHNESS_SAMPLE_EVERY == 0 && sampling.load(Ordering::Relaxed) {
                    producer_sent
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert((partition, offset), Instant::now());
                }
                producer.send_to(partition, reading.to_json().as_bytes())?;
            }
            producer.flush()?;
            producer_control
                .set_end_offsets(&producer_source.topic, high_watermarks(&producer_source)?);
            Ok(())
        })();
        if result.is_err() {
            failed.store(true, Ordering::Relaxed);
            producer_control.request_stop();
        }
        result
    });

    let (hook_sent, hook_latencies) = (Arc::clone(&sent), Arc::clone(&latencies));
    let running = Arc::clone(&engine_running);
    let topic = source.topic.clone();
    let bar_control = Arc::clone(&control);
    let bar = ProgressBar::start(format!("{label} freshness"), events, move || {
        bar_control.records_in()
    });
    let result = run(
        pipeline,
        RunOptions {
            workers: bench.workers,
            exit_at_end: false,
            observe: None,
            serve_sql: None,
            on_commit: Some(Arc::new(move |conn, info| {
                let visible = Instant::now();
                running.store(true, Ordering::Relaxed);
                let Ok(mut statement) = conn.prepare(
                    "SELECT \"partition\", next_offset FROM _offsets WHERE snapshot_id = ? AND topic = ?",
                ) else {
                    return;
                };
                let Ok(rows) = statement
                    .query_map(duckdb::params![info.snapshot_id, topic], |row| {
                        Ok((row.get::<_, i32>(0)?, row.get::<_, i64>(1)?))
                    })
                else {
                    return;
                };
                let committed: BTreeMap<i32, i64> = rows.filter_map(Result::ok).collect();
                let mut sent = hook_sent.lock().unwrap_or_else(|e| e.into_inner());
                let mut latencies = hook_latencies.lock().unwrap_or_else(|e| e.into_inner());
                sent.retain(|(partition, offset), at| {
                    let covered = committed.get(partition).is_some_and(|next| offset < next);
                    if covered {
                        latencies.push(visible.saturating_duration_since(*at));
                    }
                    !covered
                });
            })),
            ..RunOptions::default()
        },
        Arc::clone(&control),
    );
    drop(bar);
    if result.is_err() {
        control.request_stop();
    }
    let produced = producer
        .join()
        .map_err(|_| EngineError::Worker("the freshness producer panicked".to_owned()))?;
    result?;
    produced?;
    let latencies = std::mem::take(&mut *latencies.lock().unwrap_or_else(|e| e.into_inner()));
    Ok(latencies)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partitions_keep_each_below_the_embedded_retention() {
        assert_eq!(partitions_for(1_000, 1), 8);
        assert_eq!(partitions_for(1_000, 12), 12);
        let p = partitions_for(1_000_000, 2) as u64;
        assert!(1_000_000 * READING_BYTES / p <= BYTES_PER_PARTITION);
    }
}
