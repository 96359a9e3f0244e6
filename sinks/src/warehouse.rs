//! The warehouse file and its single writer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use duckdb::types::{TimeUnit, Value};
use duckdb::{params, Connection};
use serde::{Deserialize, Serialize};
use tidewater_dataflows::duration::HumanDuration;
use tidewater_dataflows::operators::Snapshot;
use tidewater_dataflows::{StationTotals, StationWindow};

use crate::error::SinkError;
use crate::schema::{check_table_name, stage_ddl, stage_table, view_ddl, BOOKKEEPING_DDL};

/// `[warehouse]` of the pipeline file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    /// The DuckDB file (created if missing; its directory must exist).
    pub path: PathBuf,
    /// How often sources close an epoch, and so how often a snapshot is committed (default 1s).
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: HumanDuration,
}

fn default_snapshot_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

/// What one committed snapshot contained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    pub snapshot_id: i64,
    pub epoch: u64,
    pub records_in: u64,
    pub records_rejected: u64,
    pub rows_upserted: u64,
    pub rows_deleted: u64,
}

/// A station view's row change for one snapshot: the new row, or `None` to delete the group.
type RowChange = (StationWindow, Option<StationTotals>);

/// The writer of one warehouse file.
pub struct Warehouse {
    conn: Connection,
    path: PathBuf,
    table: String,
    topic: String,
    next_snapshot_id: i64,
    /// Next offset of every partition seen so far: each snapshot records all of them.
    offsets: BTreeMap<i32, i64>,
}

impl Warehouse {
    /// Opens (or creates) the file, checks it can be written and is not locked, and creates the
    /// schema. Fails before anything is consumed.
    pub fn open(path: &Path, table: &str, topic: &str) -> Result<Self, SinkError> {
        check_table_name(table)?;
        let parent = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        if !parent.is_dir() {
            return Err(SinkError::Unwritable {
                path: path.to_owned(),
                detail: format!("directory {} does not exist", parent.display()),
            });
        }
        let conn = Connection::open(path).map_err(|e| classify_open_error(path, e))?;
        let setup = format!("{BOOKKEEPING_DDL}{}{}", view_ddl(table), stage_ddl(table));
        conn.execute_batch(&setup)
            .map_err(|e| SinkError::Unwritable {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        let snapshots: i64 = conn
            .query_row("SELECT count(*) FROM _snapshots", [], |row| row.get(0))
            .map_err(|e| SinkError::Database {
                path: path.to_owned(),
                detail: e.to_string(),
            })?;
        if snapshots > 0 {
            return Err(SinkError::AlreadyWritten {
                path: path.to_owned(),
                snapshots,
            });
        }
        Ok(Warehouse {
            conn,
            path: path.to_owned(),
            table: table.to_owned(),
            topic: topic.to_owned(),
            next_snapshot_id: 1,
            offsets: BTreeMap::new(),
        })
    }

    /// The writer's connection, for reading back what was committed.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Commits one epoch as one snapshot, in one transaction. An epoch in which the sources read
    /// nothing and nothing changed commits nothing (`Ok(None)`). On error nothing of the
    /// snapshot is in the file.
    pub fn commit(
        &mut self,
        snapshot: &Snapshot<(StationWindow, StationTotals)>,
    ) -> Result<Option<CommitInfo>, SinkError> {
        let row_changes = row_changes(&snapshot.changes)?;
        let mut offsets = self.offsets.clone();
        for progress in &snapshot.progress {
            offsets.insert(progress.partition, progress.next_offset);
        }
        let records_in = snapshot.records_in();
        if records_in == 0 && row_changes.is_empty() && snapshot.rejects.is_empty() {
            self.offsets = offsets;
            return Ok(None);
        }
        let info = CommitInfo {
            snapshot_id: self.next_snapshot_id,
            epoch: snapshot.epoch,
            records_in,
            records_rejected: snapshot.rejects.len() as u64,
            rows_upserted: row_changes.iter().filter(|(_, row)| row.is_some()).count() as u64,
            rows_deleted: row_changes.iter().filter(|(_, row)| row.is_none()).count() as u64,
        };
        self.write(&info, &row_changes, snapshot, &offsets)
            .map_err(|e| SinkError::Commit {
                path: self.path.clone(),
                snapshot_id: info.snapshot_id,
                epoch: info.epoch,
                detail: e.to_string(),
            })?;
        self.next_snapshot_id += 1;
        self.offsets = offsets;
        Ok(Some(info))
    }

    fn write(
        &mut self,
        info: &CommitInfo,
        row_changes: &[RowChange],
        snapshot: &Snapshot<(StationWindow, StationTotals)>,
        offsets: &BTreeMap<i32, i64>,
    ) -> duckdb::Result<()> {
        let table = &self.table;
        let stage = stage_table(table);
        let tx = self.conn.transaction()?;
        tx.execute(&format!("DELETE FROM {stage}"), [])?;
        {
            let mut appender = tx.appender_to_catalog_and_db(&stage, "temp", "main")?;
            for (group, row) in row_changes {
                let totals = row.unwrap_or_default();
                appender.append_row(params![
                    timestamp(group.window_start),
                    timestamp(group.window_end),
                    group.station,
                    totals.readings,
                    totals.entries,
                    totals.exits,
                    row.is_some(),
                ])?;
            }
            // Flush here so that append errors surface now, not silently on drop.
            appender.flush()?;
        }
        tx.execute(
            &format!("DELETE FROM {table} USING {stage} s WHERE {table}.window_start = s.window_start AND {table}.station = s.station"),
            [],
        )?;
        tx.execute(
            &format!("INSERT INTO {table} SELECT window_start, window_end, station, readings, entries, exits FROM {stage} WHERE live"),
            [],
        )?;
        tx.execute(
            "INSERT INTO _snapshots VALUES (?, ?, now()::TIMESTAMP, ?, ?, ?, ?)",
            params![
                info.snapshot_id,
                info.epoch,
                info.records_in as i64,
                info.records_rejected as i64,
                info.rows_upserted as i64,
                info.rows_deleted as i64
            ],
        )?;
        {
            let mut appender = tx.appender("_offsets")?;
            for (partition, next_offset) in offsets {
                appender.append_row(params![
                    info.snapshot_id,
                    self.topic,
                    partition,
                    next_offset
                ])?;
            }
            appender.flush()?;
        }
        {
            let mut appender = tx.appender("_rejects")?;
            for reject in &snapshot.rejects {
                appender.append_row(params![
                    info.snapshot_id,
                    self.topic,
                    reject.partition,
                    reject.offset,
                    String::from_utf8_lossy(&reject.payload),
                    reject.error,
                ])?;
            }
            appender.flush()?;
        }
        tx.commit()
    }
}

fn timestamp(micros: i64) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, micros)
}

/// Turns consolidated `(row, diff)` changes into one change per group: the inserted row, or a
/// delete when the group's row was only retracted.
fn row_changes(
    changes: &[((StationWindow, StationTotals), isize)],
) -> Result<Vec<RowChange>, SinkError> {
    let mut by_group: BTreeMap<&StationWindow, Option<StationTotals>> = BTreeMap::new();
    for ((group, totals), diff) in changes {
        match diff {
            1 => {
                if let Some(Some(previous)) = by_group.insert(group, Some(*totals)) {
                    return Err(SinkError::InconsistentChange(format!(
                        "{group:?} inserted twice ({previous:?} and {totals:?})"
                    )));
                }
            }
            -1 => {
                by_group.entry(group).or_insert(None);
            }
            other => {
                return Err(SinkError::InconsistentChange(format!(
                    "{group:?} changed with multiplicity {other}"
                )));
            }
        }
    }
    Ok(by_group
        .into_iter()
        .map(|(group, row)| (group.clone(), row))
        .collect())
}

/// Tells a lock held by another process from a path that cannot be written.
fn classify_open_error(path: &Path, error: duckdb::Error) -> SinkError {
    let detail = error.to_string();
    if detail.contains("lock") {
        SinkError::Locked {
            path: path.to_owned(),
            detail: first_line(&detail),
        }
    } else {
        SinkError::Unwritable {
            path: path.to_owned(),
            detail: first_line(&detail),
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).trim().to_owned()
}
