//! Timely operators of the data path, one per file.

pub mod decode;
pub mod insertions;
pub mod snapshot;

pub use decode::DecodeReadings;
pub use insertions::IntoInsertions;
pub use snapshot::{CollectSnapshots, Snapshot, WRITER_WORKER};
