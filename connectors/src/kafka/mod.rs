//! The Kafka source: configuration, the pre-flight plan, and the timely source operator.

mod client;
mod plan;
mod source;

pub use crate::control::SourceControl;
pub use client::consumer_config;
pub use plan::{fetch_watermarks, high_watermarks, SourcePlan};
pub use source::{kafka_source, Alignment};

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
    /// What to do when offsets the run needs are no longer in the topic.
    #[serde(default)]
    pub offset_reset: OffsetReset,
}

/// `offset_reset`: what to do when the offsets a run must read were deleted by the broker's
/// retention (on resume, or mid-run when a consumer falls behind the retained log).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OffsetReset {
    /// Stop with an error naming the partition and offsets (the default: no data is skipped
    /// without someone deciding so).
    #[default]
    Error,
    /// Go on from the earliest retained offset; the skipped range is recorded in `_snapshots`.
    Earliest,
    /// Go on from the end of the partition; the skipped range is recorded in `_snapshots`.
    Latest,
}

impl OffsetReset {
    /// The librdkafka `auto.offset.reset` value.
    pub fn librdkafka(self) -> &'static str {
        match self {
            OffsetReset::Error => "error",
            OffsetReset::Earliest => "earliest",
            OffsetReset::Latest => "latest",
        }
    }
}

/// Offsets a run skipped under its `offset_reset` policy, for the warehouse's record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedOffsets {
    pub topic: String,
    pub partition: i32,
    /// The first offset not read, and the offset reading went on from.
    pub from: i64,
    pub to: i64,
    pub policy: OffsetReset,
}

impl std::fmt::Display for SkippedOffsets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} partition {}: offsets {}..{} skipped ({}: no longer in the topic)",
            self.topic,
            self.partition,
            self.from,
            self.to,
            self.policy.librdkafka()
        )
    }
}

fn default_poll_batch() -> usize {
    4096
}
