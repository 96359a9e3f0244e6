//! Tidewater's dataflow layer: events, event time, windows and incrementally maintained aggregates.
//!
//! This crate knows nothing of Kafka or DuckDB. It works on timely streams and differential
//! collections whose timestamps are *ingestion epochs* (`Epoch`): a source closes an epoch every
//! snapshot interval and a sink commits one consistent snapshot per epoch. Event time is data
//! (`Reading::ts`), never timely time, so a reading that arrives late simply updates its earlier
//! window at a later epoch.
//!
//! The data path, one module each:
//! `RawRecord` → [`operators::decode`] → [`Reading`] → [`window`] → [`aggregate`] → changes for a sink.

pub mod aggregate;
pub mod decode;
pub mod duration;
pub mod error;
pub mod operators;
pub mod reading;
pub mod value;
pub mod window;

pub use aggregate::{station_window_totals, StationTotals, StationWindow};
pub use error::DataflowError;
pub use reading::{EventTime, RawRecord, Reading, Rejected, SourceProgress};
pub use value::{FieldType, Value};
pub use window::{TumblingWindow, WindowConfig};

/// Timely time of every Tidewater dataflow: the ingestion epoch, closed by the sources every
/// snapshot interval. One committed snapshot covers all records of the epochs below it.
pub type Epoch = u64;
