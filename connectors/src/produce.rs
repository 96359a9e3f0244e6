//! Producing readings (generated or replayed from a JSONL file) to a Kafka topic.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{ClientConfig, ClientContext};

use crate::error::ConnectorError;

/// Counts delivery failures so that `flush` can report them instead of losing them.
#[derive(Default)]
pub struct DeliveryTracker {
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for DeliveryTracker {}

impl ProducerContext for DeliveryTracker {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                let mut first = self.first_error.lock().unwrap_or_else(|e| e.into_inner());
                first.get_or_insert_with(|| error.to_string());
            }
        }
    }
}

/// A producer for one topic that retries when librdkafka's queue is full and reports every
/// delivery failure.
pub struct TopicProducer {
    producer: BaseProducer<DeliveryTracker>,
    topic: String,
    sent: u64,
    started: Instant,
}

impl TopicProducer {
    pub fn new(brokers: &str, topic: &str) -> Result<Self, ConnectorError> {
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("client.id", "tidewater-produce")
            // Batch for throughput; the generator produces far faster than one message per ms.
            .set("linger.ms", "5")
            // Idempotence keeps per-partition order and avoids duplicates on retries.
            .set("enable.idempotence", "true")
            .set("message.timeout.ms", "30000")
            .create_with_context(DeliveryTracker::default())
            .map_err(|e| ConnectorError::Config(e.to_string()))?;
        Ok(TopicProducer {
            producer,
            topic: topic.to_owned(),
            sent: 0,
            started: Instant::now(),
        })
    }

    /// Queues one message, partitioned by its key, waiting while librdkafka's queue is full.
    pub fn send(&mut self, key: Option<&[u8]>, payload: &[u8]) -> Result<(), ConnectorError> {
        self.queue(None, key, payload)
    }

    /// Queues one message into a chosen partition (tests and replays that need exact layouts).
    pub fn send_to(&mut self, partition: i32, payload: &[u8]) -> Result<(), ConnectorError> {
        self.queue(Some(partition), None, payload)
    }

    fn queue(
        &mut self,
        partition: Option<i32>,
        key: Option<&[u8]>,
        payload: &[u8],
    ) -> Result<(), ConnectorError> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).payload(payload);
            if let Some(key) = key {
                record = record.key(key);
            }
            if let Some(partition) = partition {
                record = record.partition(partition);
            }
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _))
                    if Instant::now() < deadline =>
                {
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => {
                    return Err(ConnectorError::Produce {
                        topic: self.topic.clone(),
                        detail: error.to_string(),
                    })
                }
            }
        }
        self.sent += 1;
        if self.sent.is_multiple_of(1024) {
            self.producer.poll(Duration::ZERO);
        }
        Ok(())
    }

    /// Messages queued so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// Sleeps as needed so that no more than `rate` messages per second are sent.
    pub fn pace(&self, rate: Option<f64>) {
        if let Some(rate) = rate.filter(|r| *r > 0.0) {
            let due = Duration::from_secs_f64(self.sent as f64 / rate);
            if let Some(wait) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }

    /// Waits until every queued message is delivered, and fails if any was not.
    pub fn flush(&mut self) -> Result<u64, ConnectorError> {
        let produce_error = |detail: String| ConnectorError::Produce {
            topic: self.topic.clone(),
            detail,
        };
        self.producer
            .flush(Duration::from_secs(60))
            .map_err(|e| produce_error(e.to_string()))?;
        let tracker = self.producer.context();
        let failed = tracker.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = tracker
                .first_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
                .unwrap_or_default();
            return Err(produce_error(format!(
                "{failed} messages were not delivered (first error: {first})"
            )));
        }
        Ok(tracker.delivered.load(Ordering::Relaxed))
    }
}
