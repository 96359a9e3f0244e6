//! The Kafka source: configuration, the pre-flight plan, and the timely source operator.

mod client;
mod plan;
mod source;

pub use client::consumer_config;
pub use plan::{fetch_watermarks, high_watermarks, SourcePlan};
pub use source::{kafka_source, SourceControl};

use serde::{Deserialize, Serialize};

/// `[source]` of the pipeline file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    pub topic: String,
    /// Most messages one worker takes from librdkafka per activation, so one busy partition
    /// cannot starve the other operators on its worker.
    #[serde(default = "default_poll_batch")]
    pub poll_batch: usize,
    /// Extra librdkafka properties (e.g. `security.protocol`); the ones Tidewater forces win.
    #[serde(default)]
    pub options: std::collections::BTreeMap<String, String>,
}

fn default_poll_batch() -> usize {
    4096
}
