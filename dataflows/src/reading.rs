//! The records that flow through a Tidewater dataflow.

use serde::{Deserialize, Serialize};

use crate::value::Value;

/// Event time: microseconds since the Unix epoch, UTC (DuckDB's TIMESTAMP resolution).
pub type EventTime = i64;

/// One message as a source delivered it, before decoding. `partition` and `offset` locate it in
/// its source (a Kafka partition and offset, or a file and line number).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRecord {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
}

/// A record that could not be decoded, with the reason; it is kept (for the sink's rejects
/// table), never dropped silently.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Rejected {
    pub partition: i32,
    pub offset: i64,
    pub payload: Vec<u8>,
    pub error: String,
}

/// One NYC subway turnstile reading (the fields of the MTA turnstile data). `entries` and
/// `exits` are the counts in this reading's interval, not the raw cumulative counters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Reading {
    /// Control area, e.g. `A002`.
    pub ca: String,
    /// Remote unit, e.g. `R051`.
    pub unit: String,
    /// Subunit channel position, e.g. `02-00-00`.
    pub scp: String,
    pub station: String,
    pub linename: String,
    pub division: String,
    /// Event time of the reading.
    pub ts: EventTime,
    /// `REGULAR` or `RECOVR AUD`.
    pub desc: String,
    pub entries: i64,
    pub exits: i64,
}

impl Reading {
    /// The turnstile this reading comes from (`ca`/`unit`/`scp`): the Kafka message key.
    pub fn turnstile_id(&self) -> String {
        format!("{}/{}/{}", self.ca, self.unit, self.scp)
    }
}

/// Where a source stands in one of its partitions when it closes an epoch: the next offset it
/// will read and how many records it read in that epoch. A sink commits these with the data.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SourceProgress {
    pub partition: i32,
    pub next_offset: i64,
    pub records: u64,
    /// Largest event time of the partition's records below `next_offset` (filled in by the
    /// `event_time` operator; `None` before the first decoded record).
    pub max_event_time: Option<EventTime>,
    /// No record arrived from this partition for the source's idle timeout: it does not hold
    /// back the source watermark.
    pub idle: bool,
    /// The partition has nothing more to read, ever (a file chunk read to its end): it no
    /// longer holds back the source watermark, and once every partition is finished the
    /// watermark is the largest of theirs.
    #[serde(default)]
    pub finished: bool,
}

/// A decoded record, still carrying where it came from (and its payload, for `_late`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub partition: i32,
    pub offset: i64,
    pub event_time: EventTime,
    /// One value per schema field.
    pub row: Vec<Value>,
    pub payload: Vec<u8>,
    /// The watermark of this record's partition just before it: the largest event time of the
    /// partition's earlier records minus the source's max out-of-orderness (`i64::MIN` before
    /// the first). Lateness is decided from it, so it depends on the records alone.
    pub partition_watermark: EventTime,
}

/// A record that arrived for a window that was already final: kept in `_late`, not counted.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LateRecord {
    pub view: String,
    pub partition: i32,
    pub offset: i64,
    pub event_time: EventTime,
    pub window_start: EventTime,
    pub payload: Vec<u8>,
}
