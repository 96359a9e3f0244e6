//! What a restart needs from the warehouse: where the last snapshot left every partition, and
//! the last checkpoint (its positions, watermarks and arrangement state).
//!
//! Every snapshot commits its offsets with its data; every checkpoint snapshot also replaces the
//! `_state` table with the contents of the dataflow's arrangements, in the same transaction. A
//! restart loads the checkpoint's state, reads each partition again from the checkpoint's
//! offsets up to the last snapshot's without writing (those effects are already in the file),
//! and goes on from there: the file is the only source of truth.

use std::collections::BTreeMap;

use duckdb::{params, Connection};
use tidewater_dataflows::operators::StateEntry;
use tidewater_dataflows::{EventTime, Value, WindowKey};

use crate::warehouse::SourceInfo;

/// (source index, partition) → (next offset, largest event time read so far).
pub type Positions = BTreeMap<(usize, i32), (i64, Option<EventTime>)>;

/// Where a restart picks up.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResumePoint {
    pub last_snapshot: i64,
    /// Positions committed with the last snapshot: the replay ends here.
    pub committed: Positions,
    /// Source watermarks of the last snapshot.
    pub watermarks: BTreeMap<usize, EventTime>,
    /// The last checkpoint, if any snapshot was one (otherwise the replay starts at the
    /// beginning of every partition).
    pub checkpoint: Option<CheckpointState>,
}

/// A checkpoint: positions and watermarks of its snapshot, and the arrangements' contents.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CheckpointState {
    pub snapshot_id: i64,
    /// The replay starts here; the event-time clocks of the partitions resume from here.
    pub positions: Positions,
    pub watermarks: BTreeMap<usize, EventTime>,
    /// (arrangement index, entry).
    pub state: Vec<(usize, StateEntry)>,
}

/// One `_state` row's `entry` column: the window key and the values, as JSON.
pub fn encode_entry(key: &WindowKey, values: &[Value]) -> String {
    serde_json::to_string(&(key, values)).expect("window keys and values always serialize")
}

fn decode_entry(text: &str) -> Result<(WindowKey, Vec<Value>), String> {
    serde_json::from_str(text).map_err(|e| format!("a `_state` entry does not decode: {e}"))
}

fn source_of(sources: &[SourceInfo], topic: &str) -> Result<usize, String> {
    sources
        .iter()
        .position(|s| s.topic == topic)
        .ok_or_else(|| format!("`_offsets` names topic `{topic}`, which no source reads"))
}

fn positions(
    conn: &Connection,
    sources: &[SourceInfo],
    snapshot_id: i64,
) -> Result<Positions, String> {
    let mut statement = conn
        .prepare("SELECT topic, \"partition\", next_offset, epoch_us(max_event_time) FROM _offsets WHERE snapshot_id = ?")
        .map_err(|e| e.to_string())?;
    let rows = statement
        .query_map([snapshot_id], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i32>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, Option<i64>>(3)?,
            ))
        })
        .map_err(|e| e.to_string())?;
    let mut positions = Positions::new();
    for row in rows {
        let (topic, partition, next_offset, max_event_time) = row.map_err(|e| e.to_string())?;
        positions.insert(
            (source_of(sources, &topic)?, partition),
            (next_offset, max_event_time),
        );
    }
    Ok(positions)
}

fn watermarks(
    conn: &Connection,
    sources: &[SourceInfo],
    snapshot_id: i64,
) -> Result<BTreeMap<usize, EventTime>, String> {
    let mut statement = conn
        .prepare("SELECT source, epoch_us(watermark) FROM _watermarks WHERE snapshot_id = ? AND watermark IS NOT NULL")
        .map_err(|e| e.to_string())?;
    let rows = statement
        .query_map([snapshot_id], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?))
        })
        .map_err(|e| e.to_string())?;
    let mut watermarks = BTreeMap::new();
    for row in rows {
        let (name, watermark) = row.map_err(|e| e.to_string())?;
        let source = sources
            .iter()
            .position(|s| s.name == name)
            .ok_or_else(|| format!("`_watermarks` names source `{name}`, which is not declared"))?;
        watermarks.insert(source, watermark);
    }
    Ok(watermarks)
}

/// Reads the resume point of a warehouse that holds snapshots (`None` if it holds none).
pub fn read_resume_point(
    conn: &Connection,
    sources: &[SourceInfo],
) -> Result<Option<ResumePoint>, String> {
    let last: Option<i64> = conn
        .query_row("SELECT max(snapshot_id) FROM _snapshots", [], |row| {
            row.get(0)
        })
        .map_err(|e| e.to_string())?;
    let Some(last_snapshot) = last else {
        return Ok(None);
    };
    let checkpoint_id: Option<i64> = conn
        .query_row(
            "SELECT max(snapshot_id) FROM _snapshots WHERE checkpoint",
            [],
            |row| row.get(0),
        )
        .map_err(|e| e.to_string())?;
    let checkpoint = match checkpoint_id {
        None => None,
        Some(snapshot_id) => {
            let mut statement = conn
                .prepare("SELECT arrangement, entry, diff FROM _state")
                .map_err(|e| e.to_string())?;
            let rows = statement
                .query_map([], |row| {
                    Ok((
                        row.get::<_, i32>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .map_err(|e| e.to_string())?;
            let mut state = Vec::new();
            for row in rows {
                let (arrangement, entry, diff) = row.map_err(|e| e.to_string())?;
                let (key, values) = decode_entry(&entry)?;
                state.push((arrangement as usize, (key, values, diff as isize)));
            }
            Some(CheckpointState {
                snapshot_id,
                positions: positions(conn, sources, snapshot_id)?,
                watermarks: watermarks(conn, sources, snapshot_id)?,
                state,
            })
        }
    };
    Ok(Some(ResumePoint {
        last_snapshot,
        committed: positions(conn, sources, last_snapshot)?,
        watermarks: watermarks(conn, sources, last_snapshot)?,
        checkpoint,
    }))
}

/// Replaces `_state` with a checkpoint's entries (inside the snapshot's transaction).
pub fn write_state(
    tx: &duckdb::Transaction<'_>,
    state: &[(usize, StateEntry)],
) -> duckdb::Result<()> {
    tx.execute("DELETE FROM _state", [])?;
    let mut appender = tx.appender("_state")?;
    for (arrangement, (key, values, diff)) in state {
        appender.append_row(params![
            *arrangement as i32,
            encode_entry(key, values),
            *diff as i64
        ])?;
    }
    // Flush here so that append errors surface now, not silently on drop.
    appender.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_every_value_exactly() {
        let key = WindowKey {
            start: -5,
            end: i64::MAX,
            group: vec![Value::String("A \"quoted\" ü".into()), Value::Null],
        };
        let values = vec![
            Value::Bool(true),
            Value::Int(i64::MIN),
            Value::BigInt(i128::MAX),
            Value::Float(0.1 + 0.2),
            Value::Float(-0.0),
            Value::Timestamp(1_709_510_400_000_001),
        ];
        let (k, v) = decode_entry(&encode_entry(&key, &values)).unwrap();
        assert_eq!(k, key);
        assert_eq!(format!("{v:?}"), format!("{values:?}"));
    }
}
