//! Tidewater: Kafka topics in, incrementally maintained windowed aggregates out, committed as
//! consistent snapshots into a DuckDB warehouse file.
//!
//! The data path, each step in its own place:
//! Kafka source (`tidewater_connectors::kafka`) → decode, event time and watermarks, windows,
//! aggregates, finalization and snapshots (`tidewater_dataflows::graph::build_views`) → DuckDB
//! (`tidewater_sinks`). This crate reads the pipeline file and wires the steps together.

pub mod bench;
pub mod cluster;
pub mod demo;
pub mod engine;
pub mod error;
pub mod launcher;
pub mod logging;
pub mod observe;
pub mod pipeline;
pub mod progress;
pub mod query;
pub mod serve_http;
pub mod serve_sql;
pub mod server_thread;

pub use engine::{run, CommitHook, RunOptions, RunSummary};
pub use error::EngineError;
pub use observe::Observer;
pub use pipeline::{Pipeline, PipelineConfig, SourceConfig};
