//! Refreshes the high watermarks of Kafka partitions while serving, so that `/metrics` shows
//! lag against the topic as it grows (the plan's watermarks are those at start). A thread of
//! its own: librdkafka's calls block, and must not hold up the server or the engine.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};

use crate::observe::Observer;

const REFRESH_EVERY: Duration = Duration::from_secs(1);
/// Longest wait for one partition's watermarks (also bounds how long a stop waits).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

pub struct LagRefresher {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LagRefresher {
    pub fn start(observer: Arc<Observer>) -> LagRefresher {
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("tidewater-lag".to_owned())
            .spawn(move || refresh_until(&observer, &stopping))
            .map_err(|e| tracing::warn!("no Kafka lag refresh: {e}"))
            .ok();
        LagRefresher { stop, thread }
    }
}

impl Drop for LagRefresher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn refresh_until(observer: &Observer, stop: &AtomicBool) {
    // One consumer per source, made on first use (a consumer only asks for watermarks: it is
    // assigned nothing and joins no group).
    let mut consumers: BTreeMap<usize, BaseConsumer> = BTreeMap::new();
    let mut warned: BTreeMap<usize, bool> = BTreeMap::new();
    while !stop.load(Ordering::Relaxed) {
        let next = Instant::now() + REFRESH_EVERY;
        let counters = observer.counters();
        for (index, source) in counters.sources.iter().enumerate() {
            let Some(config) = &source.kafka else {
                continue;
            };
            let consumer = match consumers.entry(index) {
                Entry::Occupied(entry) => entry.into_mut(),
                Entry::Vacant(entry) => {
                    match tidewater_connectors::kafka::consumer_config(config).create() {
                        Ok(consumer) => entry.insert(consumer),
                        Err(error) => {
                            if !warned.insert(index, true).unwrap_or(false) {
                                tracing::warn!(
                                    "lag of source {}: no consumer: {error}",
                                    source.name
                                );
                            }
                            continue;
                        }
                    }
                }
            };
            let mut marks = BTreeMap::new();
            for (_, partition) in counters.partitions.keys().filter(|(s, _)| *s == index) {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                match consumer.fetch_watermarks(&config.topic, *partition, REQUEST_TIMEOUT) {
                    Ok((_, high)) => {
                        marks.insert(*partition, high);
                    }
                    Err(error) => {
                        // The source itself reports broker outages; say it here once.
                        if !warned.insert(index, true).unwrap_or(false) {
                            tracing::warn!(
                                "lag of source {}: watermarks of partition {partition}: {error}",
                                source.name
                            );
                        }
                    }
                }
            }
            observer.set_high_watermarks(index, &marks);
        }
        while !stop.load(Ordering::Relaxed) && Instant::now() < next {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
