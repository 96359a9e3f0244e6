//! Tidewater's DuckDB snapshot sink.
//!
//! One writer owns the warehouse file. Each completed epoch becomes one snapshot, committed in
//! ONE transaction: the view table's upserts and deletes, a `_snapshots` row, the next offset of
//! every partition in `_offsets`, and the epoch's rejected records in `_rejects`. Every committed
//! state of the file is therefore consistent: the view equals the aggregation of exactly the
//! records below the recorded offsets (delivery guarantee: exactly-once into the file, given a
//! run that starts from the offsets the file records).

pub mod error;
pub mod schema;
pub mod warehouse;

pub use error::SinkError;
pub use warehouse::{CommitInfo, SourceInfo, Warehouse, WarehouseConfig};
