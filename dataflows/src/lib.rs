//! Tidewater's dataflow layer: typed records, event time, windows and incrementally maintained
//! aggregates.
//!
//! This crate knows nothing of Kafka or DuckDB. It works on timely streams and differential
//! collections whose timestamps are *ingestion epochs* (`Epoch`): a source closes an epoch every
//! snapshot interval and a sink commits one consistent snapshot per epoch. Event time is data
//! (`Event::event_time`), never timely time, so a record that arrives late simply updates its
//! earlier window at a later epoch, until the window is final.
//!
//! The data path, one module each (see [`graph::build_views`]):
//! `RawRecord` → [`operators::decode`] → [`operators::event_time`] / [`operators::watermark`] →
//! [`operators::windows`] → arrangement + [`aggregate`] (kept small by [`operators::retire`]) →
//! [`operators::finalize`] → [`operators::snapshot`].

pub mod aggregate;
pub mod decode;
pub mod duration;
pub mod error;
pub mod filter;
pub mod graph;
pub mod nexmark;
pub mod operators;
pub mod reading;
pub mod record;
pub mod value;
pub mod view;
pub mod window;

pub use aggregate::{AggregateFn, AggregateSpec};
pub use error::DataflowError;
pub use filter::Filter;
pub use graph::{
    arrangement_count, build_durable_views, build_views, Durability, Restore, SourceSpec,
    SourceStreams,
};
pub use reading::{Event, EventTime, LateRecord, RawRecord, Reading, Rejected, SourceProgress};
pub use record::{FieldConfig, Format, Schema, TimestampFormat};
pub use value::{FieldType, Value};
pub use view::{AggregateConfig, Column, EmitMode, ViewConfig, ViewSpec};
pub use window::{WindowConfig, WindowKey, WindowKind};

/// Timely time of every Tidewater dataflow: the ingestion epoch, closed by the sources every
/// snapshot interval. One committed snapshot covers all records of the epochs below it.
pub type Epoch = u64;
