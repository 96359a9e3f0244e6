//! The one error type of the sinks crate.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SinkError {
    #[error("warehouse {path} is locked by another process ({detail}); stop that process or choose another file")]
    Locked { path: PathBuf, detail: String },
    #[error("warehouse {path} cannot be written: {detail}")]
    Unwritable { path: PathBuf, detail: String },
    #[error("warehouse {path} was written by a different pipeline definition (fingerprint {stored}, this pipeline's is {current}; first difference: {difference}); run the pipeline file that wrote it, or use a new warehouse file")]
    PipelineChanged {
        path: PathBuf,
        stored: String,
        current: String,
        difference: String,
    },
    #[error("warehouse {path} holds snapshots but no pipeline definition (written by an older Tidewater); use a new warehouse file")]
    NoDefinition { path: PathBuf },
    #[error("committing snapshot {snapshot_id} (epoch {epoch}) to {path} failed, nothing of it was written: {detail}")]
    Commit {
        path: PathBuf,
        snapshot_id: i64,
        epoch: u64,
        detail: String,
    },
    #[error("warehouse {path}: {detail}")]
    Database { path: PathBuf, detail: String },
    #[error("publishing a copy of the warehouse to {path} failed: {detail}")]
    Publish { path: PathBuf, detail: String },
    #[error("warehouse {path} is locked by another process, normally a running engine, and DuckDB lets no other process read it then ({detail}); stop the engine, or query its published copy{copy}")]
    BeingWritten {
        path: PathBuf,
        detail: String,
        /// ` (path)` of the published copy, when known.
        copy: String,
    },
    #[error("no warehouse file at {0}")]
    NoWarehouse(PathBuf),
    #[error("refused: {0}")]
    NotReadOnly(String),
    #[error("as of snapshot {snapshot}: {detail}")]
    AsOf { snapshot: i64, detail: String },
    #[error("as of snapshot {snapshot}: view {view} has no change table, so its past is not kept (declare it with changes = true in a new warehouse)")]
    NoHistory { snapshot: i64, view: String },
    #[error("query failed: {0}")]
    Query(String),
}
