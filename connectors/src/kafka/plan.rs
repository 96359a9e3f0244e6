//! The pre-flight plan: which partitions exist and where to read them, checked before a run
//! consumes anything, so that a wrong broker or topic stops it with one clear error.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;

use super::client::consumer_config;
use super::{KafkaSourceConfig, OffsetReset, SkippedOffsets};
use crate::error::ConnectorError;

/// How long pre-flight metadata and watermark requests may take before the brokers count as
/// unreachable.
const PREFLIGHT_TIMEOUT: Duration = Duration::from_secs(5);

/// Where each partition of the topic starts, decided before the dataflow is built (by the
/// writer process, which sends it to the others of a cluster).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourcePlan {
    pub topic: String,
    /// Partition → first offset to read.
    pub start_offsets: BTreeMap<i32, i64>,
    /// Partition → high watermark when the plan was made: where `--exit-at-end` stops.
    pub high_watermarks: BTreeMap<i32, i64>,
    /// When resuming: partition → the offset up to which records are read again (the last
    /// snapshot's), in one replay epoch before the run goes on (see the source operator).
    pub replay_until: Option<BTreeMap<i32, i64>>,
}

impl SourcePlan {
    /// Checks the brokers and the topic, and starts every partition at its earliest retained offset.
    pub fn prepare(config: &KafkaSourceConfig) -> Result<SourcePlan, ConnectorError> {
        let watermarks = fetch_watermarks(config)?;
        Ok(SourcePlan {
            topic: config.topic.clone(),
            start_offsets: watermarks.iter().map(|(p, (low, _))| (*p, *low)).collect(),
            high_watermarks: watermarks
                .iter()
                .map(|(p, (_, high))| (*p, *high))
                .collect(),
            replay_until: None,
        })
    }

    /// Plans a restart: read every partition again from `from` (the last checkpoint's offsets;
    /// partitions it does not know start at their earliest offset) up to `until` (the last
    /// snapshot's). If the broker no longer retains an offset the replay needs, `policy`
    /// decides: an error, or going on from the earliest retained offset or from the end (the
    /// skipped ranges are returned, to be recorded).
    pub fn resume(
        &mut self,
        from: &BTreeMap<i32, i64>,
        until: &BTreeMap<i32, i64>,
        policy: OffsetReset,
    ) -> Result<Vec<SkippedOffsets>, ConnectorError> {
        let mut skipped = Vec::new();
        for (partition, start) in self.start_offsets.iter_mut() {
            let earliest = *start;
            if let Some(&from) = from.get(partition) {
                let resumed = match policy {
                    _ if from >= earliest => from,
                    OffsetReset::Error => {
                        return Err(ConnectorError::OffsetOutOfRetention {
                            topic: self.topic.clone(),
                            partition: *partition,
                            offset: from,
                            earliest,
                        })
                    }
                    OffsetReset::Earliest => earliest,
                    OffsetReset::Latest => self
                        .high_watermarks
                        .get(partition)
                        .copied()
                        .unwrap_or(earliest),
                };
                if resumed != from {
                    skipped.push(SkippedOffsets {
                        topic: self.topic.clone(),
                        partition: *partition,
                        from,
                        to: resumed,
                        policy,
                    });
                }
                *start = resumed;
            }
        }
        let mut replay_until = BTreeMap::new();
        for (partition, start) in &self.start_offsets {
            replay_until.insert(
                *partition,
                until.get(partition).copied().unwrap_or(*start).max(*start),
            );
        }
        self.replay_until = Some(replay_until);
        Ok(skipped)
    }

    /// Records the replay reads again: the sum over partitions of `until - from`.
    pub fn replay_records(&self) -> i64 {
        self.replay_until.as_ref().map_or(0, |until| {
            until
                .iter()
                .map(|(p, end)| end - self.start_offsets.get(p).copied().unwrap_or(*end))
                .sum()
        })
    }

    /// Partitions whose start is above offset 0: the broker no longer retains their earlier
    /// offsets (logged by the engine, not hidden). Partition → first retained offset.
    pub fn unretained(&self) -> impl Iterator<Item = (i32, i64)> + '_ {
        self.start_offsets
            .iter()
            .filter(|(_, start)| **start > 0)
            .map(|(p, start)| (*p, *start))
    }

    /// The partitions a worker reads: partition p goes to worker p mod peers (in a cluster,
    /// `index` and `peers` count the workers of every process).
    pub fn partitions_of_worker(&self, index: usize, peers: usize) -> BTreeMap<i32, i64> {
        self.start_offsets
            .iter()
            .filter(|(p, _)| (**p as usize) % peers == index)
            .map(|(p, o)| (*p, *o))
            .collect()
    }
}

/// Partition → (low, high) watermarks of the configured topic, or a clear error when the brokers
/// cannot be reached or the topic does not exist.
pub fn fetch_watermarks(
    config: &KafkaSourceConfig,
) -> Result<BTreeMap<i32, (i64, i64)>, ConnectorError> {
    let unreachable = |e: KafkaError| ConnectorError::BrokerUnreachable {
        brokers: config.brokers.clone(),
        detail: e.to_string(),
    };
    let consumer: BaseConsumer = consumer_config(config)
        .create()
        .map_err(|e| ConnectorError::Config(e.to_string()))?;
    let metadata = consumer
        .fetch_metadata(Some(config.topic.as_str()), PREFLIGHT_TIMEOUT)
        .map_err(unreachable)?;
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == config.topic)
        .filter(|t| t.error().is_none() && !t.partitions().is_empty())
        .ok_or_else(|| ConnectorError::TopicMissing {
            topic: config.topic.clone(),
            brokers: config.brokers.clone(),
        })?;
    let mut watermarks = BTreeMap::new();
    for partition in topic.partitions() {
        let marks = consumer
            .fetch_watermarks(&config.topic, partition.id(), PREFLIGHT_TIMEOUT)
            .map_err(unreachable)?;
        watermarks.insert(partition.id(), marks);
    }
    Ok(watermarks)
}

/// Partition → high watermark (the offset after the last message) of the configured topic.
pub fn high_watermarks(config: &KafkaSourceConfig) -> Result<BTreeMap<i32, i64>, ConnectorError> {
    Ok(fetch_watermarks(config)?
        .into_iter()
        .map(|(p, (_, high))| (p, high))
        .collect())
}
