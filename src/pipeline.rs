//! The pipeline file: one Kafka source, one station view, one warehouse.
//!
//! ```toml
//! [source]
//! brokers = "127.0.0.1:9092"
//! topic = "turnstile"
//!
//! [view]
//! table = "station_hourly"
//! window = { size = "1h" }
//!
//! [warehouse]
//! path = "warehouse.duckdb"
//! snapshot_interval = "1s"
//! ```

use std::path::Path;

use serde::{Deserialize, Serialize};
use tidewater_connectors::KafkaSourceConfig;
use tidewater_dataflows::WindowConfig;
use tidewater_sinks::WarehouseConfig;

use crate::error::EngineError;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    pub source: KafkaSourceConfig,
    #[serde(default)]
    pub view: ViewConfig,
    pub warehouse: WarehouseConfig,
}

/// `[view]`: readings count, entries and exits per station and tumbling event-time window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// The DuckDB table holding the view (default `station_hourly`).
    #[serde(default = "default_table")]
    pub table: String,
    #[serde(default)]
    pub window: WindowConfig,
}

fn default_table() -> String {
    "station_hourly".to_owned()
}

impl Default for ViewConfig {
    fn default() -> Self {
        ViewConfig {
            table: default_table(),
            window: WindowConfig::default(),
        }
    }
}

impl PipelineConfig {
    /// Parses a pipeline file; errors name the line and the field.
    pub fn from_toml(text: &str, origin: &str) -> Result<Self, EngineError> {
        toml::from_str(text).map_err(|e| {
            // One line: "line L, column C: message" (toml's own text spans several lines).
            let position = e.span().map(|span| {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                format!("line {line}, column {column}: ")
            });
            let message = e.message().lines().collect::<Vec<_>>().join(" ");
            EngineError::Config {
                path: origin.to_owned(),
                detail: format!("{}{message}", position.unwrap_or_default()),
            }
        })
    }

    pub fn load(path: &Path) -> Result<Self, EngineError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::Config {
            path: origin.clone(),
            detail: e.to_string(),
        })?;
        Self::from_toml(&text, &origin)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a pipeline config always serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_what_the_file_leaves_out() {
        let config = PipelineConfig::from_toml(
            "[source]\nbrokers = \"b:9092\"\ntopic = \"t\"\n[warehouse]\npath = \"w.duckdb\"\n",
            "test",
        )
        .unwrap();
        assert_eq!(config.view.table, "station_hourly");
        assert_eq!(config.view.window.size.to_string(), "1h");
        assert_eq!(config.warehouse.snapshot_interval.to_string(), "1s");
        assert_eq!(config.source.poll_batch, 4096);
        assert_eq!(
            PipelineConfig::from_toml(&config.to_toml(), "round trip").unwrap(),
            config
        );
    }

    #[test]
    fn unknown_fields_and_bad_values_name_the_line() {
        let err = PipelineConfig::from_toml(
            "[source]\nbrokers = \"b\"\ntopic = \"t\"\ntopik = \"x\"\n[warehouse]\npath = \"w\"\n",
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("p.toml") && err.contains("line 4") && err.contains("topik"),
            "{err}"
        );
        let err = PipelineConfig::from_toml(
            "[source]\nbrokers = \"b\"\ntopic = \"t\"\n[view]\nwindow = { size = \"1 fortnight\" }\n[warehouse]\npath = \"w\"\n",
            "p.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("line 5") && err.contains("unknown unit"),
            "{err}"
        );
    }
}
