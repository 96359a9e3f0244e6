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
    #[error("cluster: {0}")]
    Cluster(String),
    /// `tidewater bench`: a configuration, a peer or a result file failed.
    #[error("bench: {0}")]
    Bench(String),
    /// `--serve-http`: the address cannot be bound (in use, not local, not an address).
    #[error("cannot serve HTTP on {address}: {detail}")]
    Serve { address: String, detail: String },
    #[error("SQL server: {0}")]
    SqlServer(String),
    /// Nothing answers at a SQL server's address (the engine may have stopped).
    #[error("no SQL server answers at {0}")]
    ServerUnreachable(String),
    /// A peer process went away (killed, crashed, or its host unreachable): timely cannot go
    /// on without it, so the whole cluster stops; a restart resumes from the last snapshot.
    #[error("lost the connection to a peer process; the cluster stops (restart it to resume from the last snapshot)")]
    PeerLost,
}
