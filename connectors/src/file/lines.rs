//! Reads the lines of one chunk of a file, from a byte position, in large buffered reads.

use std::fs::File;
use std::io::{BufRead, BufReader, ErrorKind, Seek, SeekFrom};
use std::path::Path;

/// Bytes read from the file per system call.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// One line of a chunk: its byte position and its bytes, without the line end (`\n` or
/// `\r\n`). Blank lines come back too (the caller skips them, they still move the position).
pub struct Line {
    pub offset: i64,
    pub payload: Vec<u8>,
}

impl Line {
    pub fn is_blank(&self) -> bool {
        self.payload.iter().all(u8::is_ascii_whitespace)
    }
}

/// The reader of one chunk `[next_offset, end)`; `end` is a line start or the file's end.
pub struct ChunkReader {
    reader: BufReader<File>,
    next_offset: i64,
    end: i64,
}

impl ChunkReader {
    pub fn open(path: &Path, start: i64, end: i64) -> std::io::Result<ChunkReader> {
        let mut file = File::open(path)?;
        file.seek(SeekFrom::Start(start.max(0) as u64))?;
        Ok(ChunkReader {
            reader: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            next_offset: start,
            end,
        })
    }

    /// The byte position of the next line to read.
    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn at_end(&self) -> bool {
        self.next_offset >= self.end
    }

    /// The next line of the chunk, `None` at its end. A last line without a line end is read
    /// too. The payload is the only allocation: it is copied once out of the read buffer.
    pub fn next_line(&mut self) -> std::io::Result<Option<Line>> {
        if self.at_end() {
            return Ok(None);
        }
        let offset = self.next_offset;
        let mut payload = Vec::new();
        loop {
            let available = self.reader.fill_buf()?;
            if available.is_empty() {
                return Err(std::io::Error::new(
                    ErrorKind::UnexpectedEof,
                    format!(
                        "the file ends at byte {}, before the end of its chunk at {} (was it changed while being read?)",
                        self.next_offset, self.end
                    ),
                ));
            }
            let remaining = (self.end - self.next_offset) as usize;
            let window = &available[..available.len().min(remaining)];
            let (taken, line_ended) = match window.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    payload.extend_from_slice(&window[..i]);
                    (i + 1, true)
                }
                None => {
                    payload.extend_from_slice(window);
                    (window.len(), false)
                }
            };
            self.reader.consume(taken);
            self.next_offset += taken as i64;
            if line_ended || self.at_end() {
                break;
            }
        }
        if payload.last() == Some(&b'\r') {
            payload.pop();
        }
        Ok(Some(Line { offset, payload }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn lines_positions_crlf_and_a_last_line_without_newline() {
        let path = std::env::temp_dir().join(format!("tidewater-lines-{}", std::process::id()));
        let text = b"{\"a\":1}\r\n\n   \nsecond\nlast";
        std::fs::File::create(&path)
            .unwrap()
            .write_all(text)
            .unwrap();
        let mut reader = ChunkReader::open(&path, 0, text.len() as i64).unwrap();
        let mut lines = Vec::new();
        while let Some(line) = reader.next_line().unwrap() {
            lines.push((line.offset, line.is_blank(), line.payload));
        }
        assert_eq!(
            lines,
            vec![
                (0, false, b"{\"a\":1}".to_vec()),
                (9, true, Vec::new()),
                (10, true, b"   ".to_vec()),
                (14, false, b"second".to_vec()),
                (21, false, b"last".to_vec()),
            ]
        );
        assert_eq!(reader.next_offset(), text.len() as i64);
        // A chunk that stops at a line start, and one the file no longer reaches.
        let mut reader = ChunkReader::open(&path, 9, 14).unwrap();
        assert_eq!(reader.next_line().unwrap().unwrap().offset, 9);
        assert_eq!(reader.next_line().unwrap().unwrap().offset, 10);
        assert!(reader.next_line().unwrap().is_none());
        let mut reader = ChunkReader::open(&path, 21, 40).unwrap();
        assert!(reader.next_line().is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
