//! librdkafka settings for Tidewater's consumers.

use rdkafka::ClientConfig;

use super::KafkaSourceConfig;

/// Consumer settings. Each forced option says why: the warehouse, not Kafka, owns progress.
pub fn consumer_config(config: &KafkaSourceConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    // A default the options may change: with one queue per partition, librdkafka's prefetch
    // bound applies per partition, and its default (64 MiB) times many partitions is a lot of
    // memory for records that alignment or backpressure keeps waiting.
    client.set("queued.max.messages.kbytes", "16384");
    for (key, value) in &config.options {
        client.set(key, value);
    }
    client
        .set("bootstrap.servers", &config.brokers)
        .set("client.id", "tidewater")
        // librdkafka wants a group id even for manual assignment; no group protocol is used
        // (partitions are `assign`ed, never `subscribe`d), it only names us in broker logs.
        .set("group.id", format!("tidewater-{}", config.topic))
        // Offsets are committed to the warehouse with the data they produced, never to Kafka.
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // An offset outside the retained log stops the run (`error`, the default) rather than
        // jump silently to the start or the end of the partition; with `earliest`/`latest`
        // the jump is the user's choice, and the source records the skipped range.
        .set("auto.offset.reset", config.offset_reset.librdkafka())
        // EOF events tell partition alignment which partitions are caught up with the log
        // (they hold nobody back); the end of a bounded run is still learned from watermarks.
        .set("enable.partition.eof", "true")
        // Metadata requests must not create topics: a misspelt topic is an error.
        .set("allow.auto.create.topics", "false")
        // Fail fast and clearly when no broker answers at start (default would retry for long).
        .set("socket.connection.setup.timeout.ms", "5000");
    client
}
