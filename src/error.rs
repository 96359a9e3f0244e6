//! The one error type of the engine crate (the binary adds `anyhow` context at its edge).

use thiserror::Error;
use tidewater_connectors::ConnectorError;
use tidewater_sinks::SinkError;

#[derive(Debug, Error)]
pub enum EngineError {
    #[error("pipeline file {path}: {detail}")]
    Config { path: String, detail: String },
    #[error(transparent)]
    Source(#[from] ConnectorError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    #[error("worker failed: {0}")]
    Worker(String),
}
