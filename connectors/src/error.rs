//! The one error type of the connectors crate.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum ConnectorError {
    #[error("cannot reach Kafka brokers at {brokers}: {detail}")]
    BrokerUnreachable { brokers: String, detail: String },
    #[error("topic `{topic}` does not exist on brokers {brokers}")]
    TopicMissing { topic: String, brokers: String },
    #[error("partition {partition} of topic `{topic}`: offset {offset} is no longer in the topic (the broker deleted it under its retention policy, earliest retained offset {earliest}); refusing to skip data")]
    OffsetOutOfRetention {
        topic: String,
        partition: i32,
        offset: i64,
        earliest: i64,
    },
    #[error("Kafka source for topic `{topic}` failed: {detail}")]
    Consume { topic: String, detail: String },
    #[error("Kafka client configuration: {0}")]
    Config(String),
    #[error("producing to topic `{topic}` failed: {detail}")]
    Produce { topic: String, detail: String },
    #[error("embedded broker: {0}")]
    Broker(String),
    #[error("file source {path}: {detail}")]
    FileSource { path: String, detail: String },
    #[error("reading {path}: {detail}")]
    Io { path: String, detail: String },
}
