//! Tidewater's DuckDB snapshot sink.
//!
//! One writer owns the warehouse file. Each completed epoch becomes one snapshot, committed in
//! ONE transaction: the view tables' upserts and deletes, a `_snapshots` row, the next offset of
//! every partition in `_offsets`, watermarks, rejected and late records, and at checkpoints the
//! dataflow's state in `_state`. Every committed state of the file is therefore consistent: each
//! view equals the aggregation of exactly the records below the recorded offsets. A restart
//! resumes from the file alone ([`resume`]), so delivery into the warehouse is exactly-once
//! through crashes at any moment, including in the middle of a commit (DuckDB's write-ahead log
//! makes the transaction all or nothing).
//!
//! Around that: views with `changes = true` also keep their history in change tables
//! ([`changes`]), a [`Publisher`] keeps a copy of the file that other programs can open while
//! the engine writes, and a [`Reader`] runs read-only queries ([`statement`] decides which
//! statements read), also as of an earlier snapshot.

pub mod changes;
pub mod error;
pub mod publish;
pub mod reader;
pub mod resume;
pub mod schema;
pub mod statement;
pub mod warehouse;

pub use changes::ChangesRetention;
pub use error::SinkError;
pub use publish::{PublishStats, Publisher};
pub use reader::{ReadOptions, Reader};
pub use resume::{CheckpointState, ResumePoint};
pub use warehouse::{fingerprint, CommitInfo, SourceInfo, Warehouse, WarehouseConfig};
