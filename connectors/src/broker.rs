//! An embedded Kafka-protocol broker on loopback: librdkafka's mock cluster.
//!
//! Any Kafka client (kcat, rdkafka, the JVM client) can produce to and consume from it. Its limits
//! (rdkafka_mock.c): it keeps only the newest 5 MiB and 100,000 message sets per partition and
//! silently deletes older data, so callers produce and consume concurrently or stay below that.
//! The Kafka source notices an offset that fell out of this retention and stops with an error.

use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;

use crate::error::ConnectorError;

/// Retention of the mock cluster per partition, in bytes (`rd_kafka_mock_partition` log size).
pub const MOCK_RETENTION_BYTES: u64 = 5 * 1024 * 1024;

/// A running embedded broker; it stops when dropped. Not `Send`: keep it on the thread that made it.
pub struct EmbeddedBroker {
    cluster: MockCluster<'static, DefaultProducerContext>,
}

impl EmbeddedBroker {
    /// Starts a one-broker cluster listening on a free loopback port.
    pub fn start() -> Result<Self, ConnectorError> {
        let cluster = MockCluster::new(1).map_err(|e| ConnectorError::Broker(e.to_string()))?;
        Ok(EmbeddedBroker { cluster })
    }

    /// The `bootstrap.servers` string of this broker (`127.0.0.1:PORT`).
    pub fn bootstrap_servers(&self) -> String {
        self.cluster.bootstrap_servers()
    }

    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), ConnectorError> {
        self.cluster
            .create_topic(topic, partitions, 1)
            .map_err(|e| ConnectorError::Broker(format!("creating topic `{topic}`: {e}")))
    }

    /// Takes the broker down (connections refused) or brings it back, for fault tests.
    pub fn set_available(&self, available: bool) -> Result<(), ConnectorError> {
        let result = if available {
            self.cluster.broker_up(1)
        } else {
            self.cluster.broker_down(1)
        };
        result.map_err(|e| ConnectorError::Broker(e.to_string()))
    }
}
