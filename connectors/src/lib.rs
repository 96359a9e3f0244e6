//! Tidewater's connectors: the Kafka source, the file source, an embedded Kafka-protocol broker, and the seeded
//! turnstile event generator with its producer.
//!
//! Delivery guarantee of the Kafka source: it reads each assigned partition from a given offset
//! with consumer-group machinery switched off (no `subscribe`, no offset commits to Kafka) and
//! reports, per epoch, the next offset of every partition. Those offsets are committed by the
//! sink in the same transaction as the data derived from the records below them, so the
//! warehouse alone says what has been consumed. An offset that fell out of the topic's retention
//! stops the run with an error; data is never skipped silently.

pub mod broker;
pub mod control;
pub mod error;
pub mod file;
pub mod generator;
pub mod kafka;
pub mod produce;

pub use broker::EmbeddedBroker;
pub use error::ConnectorError;
pub use file::FileSourceConfig;
pub use generator::{GeneratorConfig, TurnstileGenerator};
pub use kafka::{KafkaSourceConfig, OffsetReset, SkippedOffsets, SourceControl, SourcePlan};
