//! Timely operators of the data path, one per file, in data-path order.

pub mod checkpoint;
pub mod decode;
pub mod event_time;
pub mod finalize;
pub mod retire;
pub mod snapshot;
pub mod watermark;
pub mod windows;

pub use checkpoint::{checkpoint_marks, Checkpoint, CheckpointSchedule, StateEntry};
pub use decode::DecodeRecords;
pub use event_time::{AssignEventTime, ClockView, SharedClock, SourceClock, WatermarkConfig};
pub use finalize::{Finalize, ViewChange};
pub use retire::{RetireFinalWindows, WindowTrace};
pub use snapshot::{CollectSnapshots, Snapshot, SnapshotPart, WRITER_WORKER};
pub use watermark::SourceWatermark;
pub use windows::{AssignWindows, WindowAssignment, WindowedValue};
