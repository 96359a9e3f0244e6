//! The pre-flight plan of a file source: the file's chunks, checked before anything runs.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use super::FileSourceConfig;
use crate::error::ConnectorError;
use crate::kafka::SourcePlan;

/// Smallest chunk worth its own partition: a small file gets fewer chunks.
pub const MIN_CHUNK_BYTES: u64 = 64 * 1024;

/// What a plan found: the file's size and its chunks, for the warehouse's record (a restart
/// with a file of another size is refused: the stored byte offsets would mean nothing).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileLayout {
    pub bytes: u64,
    pub chunks: usize,
}

impl std::fmt::Display for FileLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} bytes in {} chunks", self.bytes, self.chunks)
    }
}

/// Splits the file into chunks that start at line starts: chunk i covers the lines that start
/// in `[start_i, end_i)`. Partition numbers are chunk indexes; offsets are byte positions.
pub fn plan_file(config: &FileSourceConfig) -> Result<(SourcePlan, FileLayout), ConnectorError> {
    let path = &config.path;
    let failed = |detail: String| ConnectorError::FileSource {
        path: path.display().to_string(),
        detail,
    };
    let mut file = File::open(path).map_err(|e| failed(e.to_string()))?;
    let metadata = file.metadata().map_err(|e| failed(e.to_string()))?;
    if !metadata.is_file() {
        return Err(failed("not a regular file".to_owned()));
    }
    let bytes = metadata.len();
    let wanted = (config.chunks.max(1) as u64).min((bytes / MIN_CHUNK_BYTES).max(1));
    let mut boundaries = vec![0u64];
    for i in 1..wanted {
        let target = bytes * i / wanted;
        let boundary =
            line_start_at_or_after(&mut file, target, bytes).map_err(|e| failed(e.to_string()))?;
        // A line longer than a chunk swallows the next boundary: one chunk fewer.
        if boundary > *boundaries.last().expect("starts with 0") && boundary < bytes {
            boundaries.push(boundary);
        }
    }
    boundaries.push(bytes);
    let ranges: BTreeMap<i32, (i64, i64)> = boundaries
        .windows(2)
        .enumerate()
        .map(|(i, pair)| (i as i32, (pair[0] as i64, pair[1] as i64)))
        .collect();
    let plan = SourcePlan {
        topic: path.display().to_string(),
        start_offsets: ranges.iter().map(|(p, (start, _))| (*p, *start)).collect(),
        high_watermarks: ranges.iter().map(|(p, (_, end))| (*p, *end)).collect(),
        replay_until: None,
    };
    let layout = FileLayout {
        bytes,
        chunks: ranges.len(),
    };
    Ok((plan, layout))
}

/// The first line start at or after `target` (`bytes` if no line starts there).
fn line_start_at_or_after(file: &mut File, target: u64, bytes: u64) -> std::io::Result<u64> {
    if target == 0 {
        return Ok(0);
    }
    // A line starts at `target` if the byte before it ends a line.
    let mut position = target - 1;
    file.seek(SeekFrom::Start(position))?;
    let mut block = vec![0u8; 64 * 1024];
    while position < bytes {
        let read = file.read(&mut block)?;
        if read == 0 {
            break;
        }
        if let Some(i) = block[..read].iter().position(|b| *b == b'\n') {
            return Ok(position + i as u64 + 1);
        }
        position += read as u64;
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn plan_of(text: &[u8], chunks: usize) -> (SourcePlan, FileLayout) {
        let mut file = tempfile_in_target();
        file.1.write_all(text).unwrap();
        let config = FileSourceConfig {
            path: file.0.clone(),
            chunks,
            read_batch: 16,
        };
        let plan = plan_file(&config).unwrap();
        std::fs::remove_file(&file.0).unwrap();
        plan
    }

    fn tempfile_in_target() -> (std::path::PathBuf, File) {
        use std::sync::atomic::{AtomicU64, Ordering};
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "tidewater-plan-{}-{}.jsonl",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&path).unwrap();
        (path, file)
    }

    #[test]
    fn chunks_start_at_line_starts_and_cover_the_file() {
        let mut text = Vec::new();
        for i in 0..40_000 {
            text.extend_from_slice(format!("{{\"line\":{i}}}\n").as_bytes());
        }
        text.extend_from_slice(b"{\"last\":\"no newline\"}");
        let (plan, layout) = plan_of(&text, 5);
        assert_eq!(layout.bytes, text.len() as u64);
        assert_eq!(layout.chunks, 5, "{plan:?}");
        let mut expected_start = 0;
        for (partition, start) in &plan.start_offsets {
            assert_eq!(*start, expected_start);
            assert!(*start == 0 || text[*start as usize - 1] == b'\n');
            expected_start = plan.high_watermarks[partition];
            assert!(expected_start > *start);
        }
        assert_eq!(expected_start, text.len() as i64);
    }

    #[test]
    fn small_files_and_long_lines_get_fewer_chunks() {
        let (plan, layout) = plan_of(b"a\nb\n", 8);
        assert_eq!((layout.chunks, plan.high_watermarks[&0]), (1, 4));
        let (_, layout) = plan_of(b"", 8);
        assert_eq!(layout.chunks, 1);
        // One line of 200 KiB then a short one: both boundaries that fall inside the long
        // line move to the next line start, which makes one chunk boundary, not two.
        let mut text = vec![b'x'; 200 * 1024];
        text.extend_from_slice(b"\nshort\n");
        let (plan, _) = plan_of(&text, 3);
        let short = 200 * 1024 + 1;
        assert_eq!(
            plan.start_offsets.values().copied().collect::<Vec<_>>(),
            vec![0, short],
            "{plan:?}"
        );
    }

    #[test]
    fn a_missing_file_is_one_clear_error() {
        let config = FileSourceConfig {
            path: "/nonexistent/readings.jsonl".into(),
            chunks: 4,
            read_batch: 16,
        };
        let error = plan_file(&config).unwrap_err().to_string();
        assert!(
            error.contains("/nonexistent/readings.jsonl") && error.contains("No such file"),
            "{error}"
        );
    }
}
