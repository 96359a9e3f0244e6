//! The file source: a JSON-lines or CSV file read in parallel, as byte-range chunks.
//!
//! A file is split into chunks aligned to line starts; each chunk is a "partition" whose
//! offsets are absolute byte positions (of the next line to read). The plan is an ordinary
//! [`SourcePlan`](crate::SourcePlan) (topic = the path, start offsets = chunk starts, high
//! watermarks = chunk ends), so the warehouse's `_offsets`, resume and replay work for files
//! exactly as for Kafka topics.

mod lines;
mod plan;
mod source;

pub use lines::ChunkReader;
pub use plan::{plan_file, FileLayout, MIN_CHUNK_BYTES};
pub use source::file_source;

use std::path::PathBuf;

/// A file source as the engine needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSourceConfig {
    pub path: PathBuf,
    /// How many chunks (partitions) to split the file into; fewer if the file is small.
    pub chunks: usize,
    /// Most lines one worker reads per activation.
    pub read_batch: usize,
}

/// Chunks of a file source unless the pipeline says otherwise. A fixed number, not one per
/// worker: which records count as late is decided per chunk, so the chunk layout must not
/// change with the number of workers (results would differ, and a restart with another number
/// of workers could not resume from the stored byte offsets). 12 spreads evenly over 1, 2, 3, 4
/// and 6 workers.
pub const DEFAULT_CHUNKS: usize = 12;
