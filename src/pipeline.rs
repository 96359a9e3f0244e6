//! The pipeline file: sources, views, warehouse. See the README for a complete example.
//!
//! ```toml
//! [[sources]]
//! name = "turnstiles"
//! brokers = "127.0.0.1:9092"
//! topic = "turnstile"
//! format = "json"
//! event_time = "ts"
//! max_out_of_orderness = "1m"
//! schema = [
//!     { name = "station", type = "string" },
//!     { name = "ts", type = "timestamp" },
//!     { name = "entries", type = "int" },
//! ]
//!
//! [[views]]
//! name = "station_hourly"
//! group_by = ["station"]
//! window = { type = "tumbling", size = "1h" }
//! aggregates = [{ column = "entries", fn = "sum", field = "entries" }]
//!
//! [warehouse]
//! path = "warehouse.duckdb"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tidewater_connectors::file::DEFAULT_CHUNKS;
use tidewater_connectors::{FileSourceConfig, KafkaSourceConfig, OffsetReset};
use tidewater_dataflows::duration::HumanDuration;
use tidewater_dataflows::operators::WatermarkConfig;
use tidewater_dataflows::view::check_identifier;
use tidewater_dataflows::{
    FieldConfig, Format, Schema, SourceSpec, TimestampFormat, ViewConfig, ViewSpec,
};
use tidewater_sinks::{SourceInfo, WarehouseConfig};

use crate::error::EngineError;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub sources: Vec<SourceConfig>,
    pub views: Vec<ViewConfig>,
    pub warehouse: WarehouseConfig,
}

/// `[[sources]]`: a Kafka topic (`brokers` and `topic`) or a file (`path`), the format of its
/// records and how its event time behaves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceConfig {
    /// How views refer to the source.
    pub name: String,
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092` (Kafka sources). Always serialized (empty
    /// for a file), so that Kafka pipelines keep the definition text, and the fingerprint,
    /// their warehouses were written with.
    #[serde(default)]
    pub brokers: String,
    #[serde(default)]
    pub topic: String,
    /// A JSON-lines or CSV file, one record per line, instead of a Kafka topic. Read in
    /// parallel by byte-range chunks; the run ends once the whole file is read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<PathBuf>,
    /// How many chunks (partitions) a file is split into (default 12, fewer for a small
    /// file). Part of the pipeline's definition: a warehouse is resumed with the same chunks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chunks: Option<usize>,
    /// Most messages (lines of a file) one worker takes per activation.
    #[serde(default = "default_poll_batch")]
    pub poll_batch: usize,
    /// Extra librdkafka properties (e.g. `security.protocol`); the ones Tidewater forces win.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub options: BTreeMap<String, String>,
    #[serde(default = "default_format")]
    pub format: Format,
    /// The fields of a message, in column order for `csv`.
    pub schema: Vec<FieldConfig>,
    /// The `timestamp` field that holds each record's event time.
    pub event_time: String,
    /// How timestamp fields are written: `rfc3339`, `epoch_seconds`, `epoch_millis`, or a
    /// pattern such as `%Y-%m-%d %H:%M:%S` (UTC).
    #[serde(default = "default_timestamp_format")]
    pub timestamp_format: TimestampFormat,
    /// How far behind the largest event time of its partition a record may be and still count.
    #[serde(default = "zero")]
    pub max_out_of_orderness: HumanDuration,
    /// A partition without records for this long stops holding back the watermark (default:
    /// never; see the README on idle partitions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<HumanDuration>,
    /// When offsets the run needs were deleted by retention: `error` (default), `earliest` or
    /// `latest` (the skipped range is recorded in `_snapshots.offsets_skipped`).
    #[serde(default)]
    pub offset_reset: OffsetReset,
    /// How far (in event time, beyond `max_out_of_orderness`) a partition may run ahead of the
    /// slowest partition still reading before it waits for the slower ones (default 10m).
    #[serde(default = "default_max_partition_drift")]
    pub max_partition_drift: HumanDuration,
}

fn default_max_partition_drift() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(600))
}

fn default_poll_batch() -> usize {
    4096
}

fn default_format() -> Format {
    Format::Json
}

fn default_timestamp_format() -> TimestampFormat {
    TimestampFormat::Rfc3339
}

fn zero() -> HumanDuration {
    HumanDuration(std::time::Duration::ZERO)
}

/// Where a source's records come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Connector {
    Kafka(KafkaSourceConfig),
    File(FileSourceConfig),
}

impl SourceConfig {
    /// The Kafka topic or the file this source reads (checked by [`Pipeline::new`]: exactly
    /// one of the two is declared).
    pub fn connector(&self) -> Connector {
        match &self.path {
            Some(path) => Connector::File(FileSourceConfig {
                path: path.clone(),
                chunks: self.chunks.unwrap_or(DEFAULT_CHUNKS),
                read_batch: self.poll_batch,
            }),
            None => Connector::Kafka(self.kafka()),
        }
    }

    /// What the warehouse calls the source's stream (`_offsets.topic`, `_rejects.topic`): the
    /// topic, or the file's path as the pipeline file writes it.
    pub fn stream(&self) -> String {
        match &self.path {
            Some(path) => path.display().to_string(),
            None => self.topic.clone(),
        }
    }

    /// Exactly one of a file and a Kafka topic.
    fn check_connector(&self) -> Result<(), String> {
        let kafka = !self.brokers.is_empty() || !self.topic.is_empty();
        match (&self.path, kafka) {
            (Some(_), true) => Err(
                "declare either `path` (a file) or `brokers` and `topic` (Kafka), not both"
                    .to_owned(),
            ),
            (None, false) => {
                Err("declare either `path` (a file) or `brokers` and `topic` (Kafka)".to_owned())
            }
            (None, true) if self.brokers.is_empty() || self.topic.is_empty() => {
                Err("a Kafka source needs both `brokers` and `topic`".to_owned())
            }
            (Some(path), false) if path.as_os_str().is_empty() => Err("`path` is empty".to_owned()),
            (None, true) if self.chunks.is_some() => {
                Err("`chunks` is for file sources (`path`)".to_owned())
            }
            (Some(_), false) if self.chunks == Some(0) => {
                Err("`chunks` must be at least 1".to_owned())
            }
            _ => Ok(()),
        }
    }

    pub fn kafka(&self) -> KafkaSourceConfig {
        KafkaSourceConfig {
            brokers: self.brokers.clone(),
            topic: self.topic.clone(),
            poll_batch: self.poll_batch,
            options: self.options.clone(),
            offset_reset: self.offset_reset,
        }
    }

    pub fn watermarks(&self) -> WatermarkConfig {
        WatermarkConfig {
            max_out_of_orderness: self.max_out_of_orderness.micros(),
            idle_timeout: self.idle_timeout.map(|d| d.0),
        }
    }
}

/// A pipeline file that has been checked: every view knows its source's schema and its table.
#[derive(Clone, Debug)]
pub struct Pipeline {
    pub config: PipelineConfig,
    pub sources: Vec<SourceSpec>,
    pub views: Vec<ViewSpec>,
}

impl Pipeline {
    /// Checks everything that can be checked without a broker or a warehouse.
    pub fn new(config: PipelineConfig) -> Result<Pipeline, String> {
        if config.sources.is_empty() {
            return Err("declare at least one [[sources]]".to_owned());
        }
        if config.views.is_empty() {
            return Err("declare at least one [[views]]".to_owned());
        }
        let mut sources = Vec::new();
        for source in &config.sources {
            let context = |e: String| format!("source `{}`: {e}", source.name);
            check_identifier("source name", &source.name).map_err(|e| context(e.to_string()))?;
            source.check_connector().map_err(context)?;
            if sources.iter().any(|s: &SourceSpec| s.name == source.name) {
                return Err(context("two sources have this name".to_owned()));
            }
            let schema = Schema::new(
                source.format,
                source.schema.clone(),
                &source.event_time,
                source.timestamp_format.clone(),
            )
            .map_err(|e| context(e.to_string()))?;
            sources.push(SourceSpec {
                name: source.name.clone(),
                schema: Arc::new(schema),
                watermarks: source.watermarks(),
            });
        }
        let mut views: Vec<ViewSpec> = Vec::new();
        for view in &config.views {
            let context = |e: String| format!("view `{}`: {e}", view.name);
            let source = match &view.source {
                Some(name) => sources
                    .iter()
                    .position(|s| &s.name == name)
                    .ok_or_else(|| context(format!("source: no source is named `{name}`")))?,
                None if sources.len() == 1 => 0,
                None => {
                    return Err(context(
                        "source: there are several sources, say which one this view reads"
                            .to_owned(),
                    ))
                }
            };
            let spec = ViewSpec::new(view, source, &sources[source].schema)
                .map_err(|e| context(e.to_string()))?;
            if views
                .iter()
                .any(|v| v.name.eq_ignore_ascii_case(&spec.name))
            {
                return Err(context(
                    "two views have this name (it is their table)".to_owned(),
                ));
            }
            views.push(spec);
        }
        // Decode keeps only what some view reads: a source's other string fields are checked
        // but not copied.
        for (index, source) in sources.iter_mut().enumerate() {
            let read: Vec<usize> = views
                .iter()
                .filter(|v| v.source == index)
                .flat_map(ViewSpec::read_fields)
                .collect();
            let mut schema = (*source.schema).clone();
            schema.keep_only(&read);
            source.schema = Arc::new(schema);
        }
        Ok(Pipeline {
            config,
            sources,
            views,
        })
    }

    /// Parses and checks a pipeline file's text; errors are one line naming `origin`, the line
    /// and column where known, and the field.
    pub fn from_toml(text: &str, origin: &str) -> Result<Pipeline, EngineError> {
        let config: PipelineConfig = toml::from_str(text).map_err(|e| {
            // One line: "line L, column C: message" (toml's own text spans several lines).
            let position = e
                .span()
                .map(|span| line_and_column(text, span.start))
                .map(|(line, column)| format!("line {line}, column {column}: "));
            let message = e.message().lines().collect::<Vec<_>>().join(" ");
            EngineError::Config {
                path: origin.to_owned(),
                detail: format!("{}{message}", position.unwrap_or_default()),
            }
        })?;
        Pipeline::new(config).map_err(|detail| {
            // Semantic errors name their view or source; point at the line that names it.
            let position = detail
                .split('`')
                .nth(1)
                .and_then(|name| find_name_line(text, name))
                .map(|line| format!("line {line}: "));
            EngineError::Config {
                path: origin.to_owned(),
                detail: format!("{}{detail}", position.unwrap_or_default()),
            }
        })
    }

    pub fn load(path: &Path) -> Result<Pipeline, EngineError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::Config {
            path: origin.clone(),
            detail: e.to_string(),
        })?;
        Self::from_toml(&text, &origin)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(&self.config).expect("a pipeline config always serializes")
    }

    /// The part of the pipeline that decides what the warehouse contains: every view, and each
    /// source's topic, format, schema and event-time settings (not brokers, client options or
    /// batch sizes, which may change between runs). Stored in the warehouse, so that a restart
    /// with a different definition is refused instead of mixing two pipelines' results.
    pub fn definition(&self) -> String {
        #[derive(Serialize)]
        struct Definition<'a> {
            sources: Vec<SourceConfig>,
            views: &'a [ViewConfig],
        }
        let sources = self
            .config
            .sources
            .iter()
            .map(|s| SourceConfig {
                brokers: String::new(),
                poll_batch: 0,
                options: BTreeMap::new(),
                // A policy for lost offsets may change to get a stuck run going again, and
                // partition alignment changes only how partitions interleave.
                offset_reset: OffsetReset::default(),
                max_partition_drift: default_max_partition_drift(),
                ..s.clone()
            })
            .collect();
        toml::to_string_pretty(&Definition {
            sources,
            views: &self.config.views,
        })
        .expect("a pipeline definition always serializes")
    }

    /// A short, stable fingerprint of [`Pipeline::definition`], as the warehouse stores it.
    pub fn fingerprint(&self) -> String {
        tidewater_sinks::fingerprint(&self.definition())
    }

    pub fn source_infos(&self) -> Vec<SourceInfo> {
        self.config
            .sources
            .iter()
            .map(|s| SourceInfo {
                name: s.name.clone(),
                topic: s.stream(),
            })
            .collect()
    }

    /// What `check` and `run` print: each view, its source, window and table.
    pub fn describe(&self) -> String {
        let mut text = String::new();
        for view in &self.views {
            let source = &self.config.sources[view.source];
            let origin = match &source.path {
                Some(path) => format!("file `{}`", path.display()),
                None => format!("topic `{}`", source.topic),
            };
            text.push_str(&format!(
                "view {} (from {} = {origin}): {}\n{};\n",
                view.name,
                source.name,
                view.describe(),
                view.create_table_sql()
            ));
        }
        let shared: Vec<String> = tidewater_dataflows::graph::describe_sharing(&self.views)
            .into_iter()
            .filter(|group| group.len() > 1)
            .map(|group| group.join(", "))
            .collect();
        if !shared.is_empty() {
            text.push_str(&format!("shared arrangements: {}\n", shared.join("; ")));
        }
        text
    }
}

fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, column)
}

/// The line of `name = "<name>"`, where a view or source is declared.
fn find_name_line(text: &str, name: &str) -> Option<usize> {
    text.lines()
        .position(|line| {
            let line = line.trim();
            line.starts_with("name")
                && line
                    .split_once('=')
                    .is_some_and(|(_, value)| value.trim().trim_matches('"') == name)
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[sources]]
name = "s"
brokers = "b:9092"
topic = "t"
event_time = "ts"
schema = [
    { name = "station", type = "string" },
    { name = "ts", type = "timestamp" },
    { name = "entries", type = "int" },
]

[[views]]
name = "v"
group_by = ["station"]
window = { type = "tumbling", size = "1h" }
aggregates = [{ column = "entries", fn = "sum", field = "entries" }]

[warehouse]
path = "w.duckdb"
"#;

    fn error_of(text: &str) -> String {
        Pipeline::from_toml(text, "p.toml").unwrap_err().to_string()
    }

    #[test]
    fn defaults_fill_what_the_file_leaves_out_and_round_trip() {
        let pipeline = Pipeline::from_toml(MINIMAL, "test").unwrap();
        let source = &pipeline.config.sources[0];
        assert_eq!(source.poll_batch, 4096);
        assert_eq!(source.format, Format::Json);
        assert_eq!(
            pipeline.config.warehouse.snapshot_interval.to_string(),
            "1s"
        );
        assert_eq!(pipeline.views[0].key_len, 2);
        let again = Pipeline::from_toml(&pipeline.to_toml(), "round trip").unwrap();
        assert_eq!(again.config, pipeline.config);
    }

    #[test]
    fn fingerprint_ignores_connection_settings_but_not_the_definition() {
        let base = Pipeline::from_toml(MINIMAL, "a").unwrap().fingerprint();
        let moved = MINIMAL
            .replace("b:9092", "elsewhere:9093")
            .replace("topic = \"t\"", "topic = \"t\"\npoll_batch = 7");
        assert_eq!(
            Pipeline::from_toml(&moved, "b").unwrap().fingerprint(),
            base
        );
        for changed in [
            MINIMAL.replace("size = \"1h\"", "size = \"2h\""),
            MINIMAL.replace("topic = \"t\"", "topic = \"u\""),
            MINIMAL.replace("fn = \"sum\"", "fn = \"max\""),
        ] {
            let other = Pipeline::from_toml(&changed, "c").unwrap().fingerprint();
            assert_ne!(other, base, "{changed}");
        }
    }

    #[test]
    fn change_tables_are_part_of_the_definition_and_their_retention_is_not() {
        let base = Pipeline::from_toml(MINIMAL, "a").unwrap();
        // Definitions written before change tables existed keep their fingerprints.
        assert!(!base.definition().contains("changes"));
        assert!(!base.views[0].changes);
        let with_changes = MINIMAL.replace("aggregates = [", "changes = true\naggregates = [");
        let changed = Pipeline::from_toml(&with_changes, "b").unwrap();
        assert!(changed.views[0].changes);
        assert_ne!(changed.fingerprint(), base.fingerprint());
        let retained = with_changes.replace(
            "path = \"w.duckdb\"",
            "path = \"w.duckdb\"\nchanges_keep_snapshots = 10\nchanges_keep_for = \"7d\"",
        );
        let configured = Pipeline::from_toml(&retained, "c").unwrap();
        assert_eq!(configured.fingerprint(), changed.fingerprint());
        assert_eq!(
            configured.config.warehouse.changes_retention(),
            tidewater_sinks::ChangesRetention {
                keep_snapshots: Some(10),
                keep_for: Some(std::time::Duration::from_secs(7 * 86_400)),
            }
        );
        let again = Pipeline::from_toml(&configured.to_toml(), "round trip").unwrap();
        assert_eq!(again.config, configured.config);

        let never = retained.replace("changes_keep_snapshots = 10", "changes_keep_snapshots = 0");
        assert!(error_of(&never).contains("nonzero"), "{}", error_of(&never));
        let reserved = with_changes.replace("name = \"v\"", "name = \"v__changes\"");
        assert!(error_of(&reserved).contains("reserved for change tables"));
        let clash = with_changes.replace("column = \"entries\"", "column = \"diff\"");
        assert!(error_of(&clash).contains("`diff`"), "{}", error_of(&clash));
        // Without a change table, `diff` is an ordinary column name.
        Pipeline::from_toml(
            &MINIMAL.replace("column = \"entries\"", "column = \"diff\""),
            "d",
        )
        .unwrap();
    }

    #[test]
    fn publishing_is_not_part_of_the_definition() {
        let base = Pipeline::from_toml(MINIMAL, "a").unwrap();
        assert_eq!(base.config.warehouse.publish, None);
        assert_eq!(base.config.warehouse.publish_interval.to_string(), "30s");
        let text = MINIMAL.replace(
            "path = \"w.duckdb\"",
            "path = \"w.duckdb\"\npublish = \"copy.duckdb\"\npublish_interval = \"5s\"",
        );
        let publishing = Pipeline::from_toml(&text, "b").unwrap();
        let warehouse = &publishing.config.warehouse;
        assert_eq!(warehouse.publish, Some(PathBuf::from("copy.duckdb")));
        assert_eq!(warehouse.publish_interval.to_string(), "5s");
        assert_eq!(publishing.fingerprint(), base.fingerprint());
        let again = Pipeline::from_toml(&publishing.to_toml(), "round trip").unwrap();
        assert_eq!(again.config, publishing.config);
    }

    #[test]
    fn a_source_is_either_a_file_or_a_kafka_topic() {
        let file = MINIMAL.replace(
            "brokers = \"b:9092\"\ntopic = \"t\"",
            "path = \"readings.jsonl\"\nchunks = 3",
        );
        let pipeline = Pipeline::from_toml(&file, "file").unwrap();
        let source = &pipeline.config.sources[0];
        assert_eq!(source.stream(), "readings.jsonl");
        match source.connector() {
            Connector::File(config) => assert_eq!(config.chunks, 3),
            other => panic!("{other:?}"),
        }
        let again = Pipeline::from_toml(&pipeline.to_toml(), "round trip").unwrap();
        assert_eq!(again.config, pipeline.config);
        assert!(pipeline.describe().contains("file `readings.jsonl`"));

        let both = MINIMAL.replace("topic = \"t\"", "topic = \"t\"\npath = \"r.jsonl\"");
        let neither = MINIMAL.replace("brokers = \"b:9092\"\ntopic = \"t\"\n", "");
        let half = MINIMAL.replace("topic = \"t\"\n", "");
        let chunks_for_kafka = MINIMAL.replace("topic = \"t\"", "topic = \"t\"\nchunks = 4");
        let no_chunks = file.replace("chunks = 3", "chunks = 0");
        for (text, expected) in [
            (both, "not both"),
            (
                neither,
                "declare either `path` (a file) or `brokers` and `topic`",
            ),
            (half, "needs both `brokers` and `topic`"),
            (chunks_for_kafka, "`chunks` is for file sources"),
            (no_chunks, "at least 1"),
        ] {
            let err = error_of(&text);
            assert!(
                err.contains(expected) && err.contains("source `s`") && err.contains("line 3"),
                "{err}"
            );
        }
    }

    #[test]
    fn config_errors_name_the_line_and_the_field() {
        let cases = [
            (
                MINIMAL.replace("topic = \"t\"", "topic = \"t\"\ntopik = \"x\""),
                "line 6",
                "topik",
            ),
            (
                MINIMAL.replace("type = \"int\"", "type = \"integer\""),
                "line 10",
                "integer",
            ),
            (
                MINIMAL.replace("fn = \"sum\"", "fn = \"median\""),
                "line 17",
                "median",
            ),
            (
                MINIMAL.replace("size = \"1h\"", "slide = \"1h\""),
                "line 16",
                "size",
            ),
            (
                MINIMAL.replace("size = \"1h\"", "size = 60"),
                "line 16",
                "string",
            ),
            (
                MINIMAL.replace("[\"station\"]", "[\"stn\"]"),
                "line 14",
                "stn",
            ),
            (
                MINIMAL.replace("field = \"entries\" }", "field = \"station\" }"),
                "line 14",
                "int or float",
            ),
            (
                MINIMAL.replace("size = \"1h\"", "size = \"1 fortnight\""),
                "line 16",
                "unknown unit",
            ),
            (
                MINIMAL.replace(
                    "window = { type = \"tumbling\", size = \"1h\" }",
                    "emit = \"final\"",
                ),
                "line 14",
                "needs a window",
            ),
            (
                MINIMAL.replace(
                    "window = { type = \"tumbling\", size = \"1h\" }",
                    "allowed_lateness = \"5m\"",
                ),
                "line 14",
                "needs a window",
            ),
        ];
        for (text, line, field) in cases {
            let err = error_of(&text);
            assert!(
                err.contains("p.toml") && err.contains(line) && err.contains(field),
                "{err}"
            );
            assert_eq!(err.lines().count(), 1, "{err}");
        }
    }
}
