//! The one error type of the sinks crate.

use std::path::PathBuf;

use thiserror::Error;

#[derive(Debug, Error)]
pub enum SinkError {
    #[error("warehouse {path} is locked by another process ({detail}); stop that process or choose another file")]
    Locked { path: PathBuf, detail: String },
    #[error("warehouse {path} cannot be written: {detail}")]
    Unwritable { path: PathBuf, detail: String },
    #[error("warehouse {path} already holds {snapshots} snapshots from an earlier run; resuming is not supported yet, so use a new file or remove this one")]
    AlreadyWritten { path: PathBuf, snapshots: i64 },
    #[error("committing snapshot {snapshot_id} (epoch {epoch}) to {path} failed, nothing of it was written: {detail}")]
    Commit {
        path: PathBuf,
        snapshot_id: i64,
        epoch: u64,
        detail: String,
    },
    #[error("warehouse {path}: {detail}")]
    Database { path: PathBuf, detail: String },
}
