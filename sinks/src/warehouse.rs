//! The warehouse file and its single writer.

use std::collections::BTreeMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use duckdb::types::{TimeUnit, Value};
use duckdb::{appender_params_from_iter, params, Connection};
use serde::{Deserialize, Serialize};
use tidewater_dataflows::duration::HumanDuration;
use tidewater_dataflows::operators::{Snapshot, ViewChange};
use tidewater_dataflows::ViewSpec;

use crate::changes::{
    capture_sql, changes_ddl, fold_history, ChangesRetention, CHANGES_BOOKKEEPING_DDL,
};
use crate::error::SinkError;
use crate::resume::{read_resume_point, write_state, ResumePoint};
use crate::schema::{apply_stage_sql, stage_ddl, stage_table, view_ddl, BOOKKEEPING_DDL};

/// `[warehouse]` of the pipeline file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WarehouseConfig {
    /// The DuckDB file (created if missing; its directory must exist).
    pub path: PathBuf,
    /// How often sources close an epoch, and so how often a snapshot is committed (default 1s).
    #[serde(default = "default_snapshot_interval")]
    pub snapshot_interval: HumanDuration,
    /// How often a snapshot also stores the dataflow's state, so that a restart replays at most
    /// this much of the topics (default 1m; rounded to whole snapshot intervals).
    #[serde(default = "default_checkpoint_interval")]
    pub checkpoint_interval: HumanDuration,
    /// Change tables (views with `changes = true`) keep the last N snapshots queryable as of
    /// (default: every snapshot). Not part of the pipeline's definition: it may change
    /// between runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_keep_snapshots: Option<NonZeroU64>,
    /// Change tables keep the snapshots committed within this long queryable as of; with
    /// `changes_keep_snapshots` too, a snapshot goes once either limit passes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub changes_keep_for: Option<HumanDuration>,
    /// Publish a complete copy of the warehouse to this file (written next to it, then
    /// renamed over it), which other programs may open at any time, also while the engine
    /// runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub publish: Option<PathBuf>,
    /// At most how often the copy is published (default 30s); a run also publishes at its end.
    #[serde(default = "default_publish_interval")]
    pub publish_interval: HumanDuration,
}

fn default_publish_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(30))
}

fn default_snapshot_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(1))
}

fn default_checkpoint_interval() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(60))
}

impl WarehouseConfig {
    pub fn changes_retention(&self) -> ChangesRetention {
        ChangesRetention {
            keep_snapshots: self.changes_keep_snapshots.map(NonZeroU64::get),
            keep_for: self.changes_keep_for.map(|d| d.0),
        }
    }

    /// Every how many epochs a checkpoint is taken.
    pub fn checkpoint_every(&self) -> u64 {
        let snapshot = self.snapshot_interval.0.as_secs_f64().max(1e-3);
        (self.checkpoint_interval.0.as_secs_f64() / snapshot)
            .round()
            .max(1.0) as u64
    }
}

/// What one committed snapshot contained.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    pub snapshot_id: i64,
    pub epoch: u64,
    pub records_in: u64,
    pub records_rejected: u64,
    pub records_late: u64,
    pub rows_upserted: u64,
    pub rows_deleted: u64,
    /// Wall time of the commit's transaction (writing the changes, bookkeeping and COMMIT).
    pub duration: std::time::Duration,
}

/// A source as the warehouse records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceInfo {
    pub name: String,
    pub topic: String,
}

/// The fingerprint of a pipeline definition (FNV-1a, 64 bits, in hex): short and stable.
pub fn fingerprint(definition: &str) -> String {
    let hash = definition
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}

/// The writer of one warehouse file.
pub struct Warehouse {
    conn: Connection,
    path: PathBuf,
    views: Vec<ViewSpec>,
    sources: Vec<SourceInfo>,
    next_snapshot_id: i64,
    /// Last reported state of every partition seen so far: each snapshot records all of them.
    offsets: BTreeMap<(usize, i32), (i64, Option<i64>)>,
    watermarks: BTreeMap<usize, i64>,
    /// Where a restart picks up, if the file held snapshots when it was opened.
    resume: Option<ResumePoint>,
    /// Epochs before this one replay what the file already holds: they are not written.
    live_from: u64,
    /// Snapshots committed by this writer.
    commits: u64,
    /// The positions of the last committed snapshot: no snapshot may go back behind them.
    committed_offsets: BTreeMap<(usize, i32), (i64, Option<i64>)>,
    /// Set when a snapshot would have gone back (see `commit`): nothing more is written.
    behind: bool,
    /// Whether a snapshot was committed since the last checkpoint.
    changed_since_checkpoint: bool,
    /// Offset ranges skipped under an `offset_reset` policy, for the next snapshot's record.
    skipped: Vec<String>,
    /// The oldest snapshot the change tables answer as of (`_changes.since`).
    changes_since: i64,
    retention: ChangesRetention,
    /// `TIDEWATER_FAULT_ABORT_IN_COMMIT=n`: abort the process inside its n-th commit, after
    /// everything is written and before `COMMIT` (for crash tests only).
    fault_commit: Option<u64>,
}

impl Warehouse {
    /// Opens (or creates) the file, checks it can be written and is not locked, and creates the
    /// schema. A file that already holds snapshots is resumed if `definition` (see
    /// `Pipeline::definition`) is the one that wrote it, and refused otherwise. Fails before
    /// anything is consumed.
    pub fn open(
        path: &Path,
        views: &[ViewSpec],
        sources: &[SourceInfo],
        definition: &str,
    ) -> Result<Self, SinkError> {
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
        let unwritable = |e: duckdb::Error| SinkError::Unwritable {
            path: path.to_owned(),
            detail: e.to_string(),
        };
        conn.execute_batch(BOOKKEEPING_DDL).map_err(unwritable)?;
        let with_changes: Vec<&ViewSpec> = views.iter().filter(|v| v.changes).collect();
        if !with_changes.is_empty() {
            conn.execute_batch(CHANGES_BOOKKEEPING_DDL)
                .map_err(unwritable)?;
        }
        let database = |detail: String| SinkError::Database {
            path: path.to_owned(),
            detail,
        };
        let snapshots: i64 = conn
            .query_row("SELECT count(*) FROM _snapshots", [], |row| row.get(0))
            .map_err(|e| database(e.to_string()))?;
        let stored: Option<(String, String)> = conn
            .query_row("SELECT fingerprint, definition FROM _pipeline", [], |row| {
                Ok((row.get(0)?, row.get(1)?))
            })
            .map(Some)
            .or_else(|e| match e {
                duckdb::Error::QueryReturnedNoRows => Ok(None),
                e => Err(database(e.to_string())),
            })?;
        let current = fingerprint(definition);
        let mut setup = String::new();
        let resume = if snapshots > 0 {
            let Some((stored, stored_definition)) = stored else {
                return Err(SinkError::NoDefinition {
                    path: path.to_owned(),
                });
            };
            if stored != current {
                return Err(SinkError::PipelineChanged {
                    path: path.to_owned(),
                    stored,
                    current,
                    difference: first_difference(&stored_definition, definition),
                });
            }
            read_resume_point(&conn, sources).map_err(database)?
        } else {
            // A file without snapshots starts over: tables with the columns of this pipeline.
            for view in views {
                setup.push_str(&view_ddl(view));
            }
            setup.push_str("DELETE FROM _pipeline; DELETE FROM _state;\n");
            if !with_changes.is_empty() {
                setup.push_str("DELETE FROM _changes;\n");
            }
            for view in &with_changes {
                setup.push_str(&changes_ddl(view));
                setup.push_str(&format!(
                    "INSERT INTO _changes VALUES ('{}', 0);\n",
                    view.name
                ));
            }
            None
        };
        for view in views {
            setup.push_str(&stage_ddl(view));
        }
        conn.execute_batch(&setup).map_err(unwritable)?;
        if snapshots == 0 {
            conn.execute(
                "INSERT INTO _pipeline VALUES (?, ?, now()::TIMESTAMP)",
                params![current, definition],
            )
            .map_err(unwritable)?;
        }
        let (offsets, watermarks, next_snapshot_id) = match &resume {
            Some(point) => (
                point.committed.clone(),
                point.watermarks.clone(),
                point.last_snapshot + 1,
            ),
            None => (BTreeMap::new(), BTreeMap::new(), 1),
        };
        // A resumed file may end with snapshots after its last checkpoint.
        let changed_since_checkpoint = resume.is_some();
        let changes_since: i64 = match with_changes.is_empty() {
            true => 0,
            false => conn
                .query_row("SELECT coalesce(max(since), 0) FROM _changes", [], |row| {
                    row.get(0)
                })
                .map_err(|e| database(e.to_string()))?,
        };
        Ok(Warehouse {
            conn,
            path: path.to_owned(),
            views: views.to_vec(),
            sources: sources.to_vec(),
            next_snapshot_id,
            committed_offsets: offsets.clone(),
            behind: false,
            offsets,
            watermarks,
            resume,
            live_from: 0,
            commits: 0,
            changed_since_checkpoint,
            skipped: Vec::new(),
            changes_since,
            retention: ChangesRetention::default(),
            fault_commit: std::env::var("TIDEWATER_FAULT_ABORT_IN_COMMIT")
                .ok()
                .and_then(|n| n.parse().ok()),
        })
    }

    /// How long change tables keep their history (default: all of it).
    pub fn set_changes_retention(&mut self, retention: ChangesRetention) {
        self.retention = retention;
    }

    /// Where a restart picks up: `None` for a file without snapshots.
    pub fn resume_point(&self) -> Option<&ResumePoint> {
        self.resume.as_ref()
    }

    /// Notes offsets that were skipped (lost to retention, skipped by policy): the next
    /// committed snapshot records them in `_snapshots.offsets_skipped`.
    pub fn note_skipped(&mut self, skipped: impl IntoIterator<Item = String>) {
        self.skipped.extend(skipped);
    }

    /// Epochs before `epoch` replay records whose effects the file already holds: their
    /// snapshots are not written (their positions still are, by the first live snapshot).
    pub fn set_live_from(&mut self, epoch: u64) {
        self.live_from = epoch;
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
    pub fn commit(&mut self, snapshot: &Snapshot) -> Result<Option<CommitInfo>, SinkError> {
        let mut offsets = self.offsets.clone();
        for (source, progress) in &snapshot.progress {
            offsets.insert(
                (*source, progress.partition),
                (progress.next_offset, progress.max_event_time),
            );
        }
        let mut watermarks = self.watermarks.clone();
        watermarks.extend(snapshot.watermarks.iter().map(|(s, w)| (*s, *w)));
        // A checkpoint of an epoch that changed nothing is still worth committing if anything
        // changed since the last checkpoint (the last epoch of a run is one).
        let checkpoint_due = snapshot.checkpoint.is_some() && self.changed_since_checkpoint;
        if (snapshot.is_empty() && !checkpoint_due) || snapshot.epoch < self.live_from {
            self.offsets = offsets;
            self.watermarks = watermarks;
            return Ok(None);
        }
        // A worker stopped (Ctrl-C, SIGTERM, a fatal error) in the middle of a restart's replay
        // reports positions behind the last snapshot; a later epoch of the other workers must
        // not be committed with them, or the next start would read those records again as new.
        let went_back = offsets.iter().find(|(key, (offset, _))| {
            self.committed_offsets
                .get(key)
                .is_some_and(|(committed, _)| offset < committed)
        });
        if let Some(((source, partition), (offset, _))) = went_back {
            if !self.behind {
                eprintln!(
                    "tidewater: stopped before the replay caught up (partition {partition} of `{}` at offset {offset}): nothing more is committed; the next start resumes from snapshot {}",
                    self.sources[*source].topic,
                    self.next_snapshot_id - 1
                );
            }
            self.behind = true;
        }
        if self.behind {
            return Ok(None);
        }
        let started = std::time::Instant::now();
        let mut info = CommitInfo {
            snapshot_id: self.next_snapshot_id,
            epoch: snapshot.epoch,
            records_in: snapshot.records_in(),
            records_rejected: snapshot.rejects.len() as u64,
            records_late: snapshot.late.len() as u64,
            rows_upserted: snapshot.changes.iter().filter(|c| c.row.is_some()).count() as u64,
            rows_deleted: snapshot.changes.iter().filter(|c| c.row.is_none()).count() as u64,
            duration: std::time::Duration::ZERO,
        };
        let changes_since = self
            .write(&info, snapshot, &offsets, &watermarks)
            .map_err(|e| SinkError::Commit {
                path: self.path.clone(),
                snapshot_id: info.snapshot_id,
                epoch: info.epoch,
                detail: e.to_string(),
            })?;
        info.duration = started.elapsed();
        self.next_snapshot_id += 1;
        self.commits += 1;
        self.changed_since_checkpoint = snapshot.checkpoint.is_none();
        self.skipped.clear();
        self.changes_since = changes_since;
        self.committed_offsets = offsets.clone();
        self.offsets = offsets;
        self.watermarks = watermarks;
        Ok(Some(info))
    }

    /// Writes and commits one snapshot; returns the change tables' `since` after it.
    fn write(
        &mut self,
        info: &CommitInfo,
        snapshot: &Snapshot,
        offsets: &BTreeMap<(usize, i32), (i64, Option<i64>)>,
        watermarks: &BTreeMap<usize, i64>,
    ) -> duckdb::Result<i64> {
        let tx = self.conn.transaction()?;
        let mut start = 0;
        while start < snapshot.changes.len() {
            let index = snapshot.changes[start].view;
            let end = start
                + snapshot.changes[start..]
                    .iter()
                    .take_while(|c| c.view == index)
                    .count();
            let view = &self.views[index];
            write_view_changes(&tx, view, &snapshot.changes[start..end], info.snapshot_id)?;
            start = end;
        }
        tx.execute(
            "INSERT INTO _snapshots VALUES (?, ?, now()::TIMESTAMP, ?, ?, ?, ?, ?, ?, ?)",
            params![
                info.snapshot_id,
                info.epoch,
                info.records_in as i64,
                info.records_rejected as i64,
                info.records_late as i64,
                info.rows_upserted as i64,
                info.rows_deleted as i64,
                snapshot.checkpoint.is_some(),
                (!self.skipped.is_empty()).then(|| self.skipped.join("; "))
            ],
        )?;
        if let Some(state) = &snapshot.checkpoint {
            write_state(&tx, state)?;
        }
        let mut changes_since = self.changes_since;
        if self.views.iter().any(|v| v.changes) {
            if let Some(cut) = self.retention.cut(&tx, info.snapshot_id)? {
                if cut > changes_since {
                    fold_history(&tx, &self.views, changes_since, cut)?;
                    changes_since = cut;
                }
            }
        }
        if self.fault_commit == Some(self.commits + 1) {
            // Test hook (see `Warehouse::open`): die like `kill -9` with the transaction
            // written but not committed. No destructor runs, nothing is flushed.
            eprintln!(
                "tidewater: fault injection: aborting inside commit {}",
                self.commits + 1
            );
            std::process::abort();
        }
        {
            let mut appender = tx.appender("_offsets")?;
            for ((source, partition), (next_offset, max_event_time)) in offsets {
                appender.append_row(params![
                    info.snapshot_id,
                    self.sources[*source].topic,
                    partition,
                    next_offset,
                    max_event_time.map(timestamp),
                ])?;
            }
            // Flush here so that append errors surface now, not silently on drop.
            appender.flush()?;
        }
        {
            let mut appender = tx.appender("_watermarks")?;
            for (source, watermark) in watermarks {
                let known = (*watermark > i64::MIN).then(|| timestamp(*watermark));
                appender.append_row(params![
                    info.snapshot_id,
                    self.sources[*source].name,
                    known
                ])?;
            }
            appender.flush()?;
        }
        {
            let mut appender = tx.appender("_rejects")?;
            for (source, reject) in &snapshot.rejects {
                appender.append_row(params![
                    info.snapshot_id,
                    self.sources[*source].topic,
                    reject.partition,
                    reject.offset,
                    String::from_utf8_lossy(&reject.payload),
                    reject.error,
                ])?;
            }
            appender.flush()?;
        }
        {
            let mut appender = tx.appender("_late")?;
            for (source, late) in &snapshot.late {
                appender.append_row(params![
                    info.snapshot_id,
                    late.view,
                    self.sources[*source].topic,
                    late.partition,
                    late.offset,
                    timestamp(late.event_time),
                    timestamp(late.window_start),
                    String::from_utf8_lossy(&late.payload),
                ])?;
            }
            appender.flush()?;
        }
        tx.commit()?;
        Ok(changes_since)
    }
}

/// Stages one view's row changes with an appender, then deletes every changed key and inserts
/// the new rows, all inside the snapshot's transaction (and before that, for a view with a
/// change table, appends the rows that change to it).
fn write_view_changes(
    tx: &duckdb::Transaction<'_>,
    view: &ViewSpec,
    changes: &[ViewChange],
    snapshot_id: i64,
) -> duckdb::Result<()> {
    let stage = stage_table(view);
    tx.execute(&format!("DELETE FROM {stage}"), [])?;
    {
        let mut appender = tx.appender_to_catalog_and_db(&stage, "temp", "main")?;
        let mut values: Vec<Value> = Vec::with_capacity(view.columns.len() + 1);
        for change in changes {
            values.clear();
            match &change.row {
                Some(row) => values.extend(row.iter().map(to_duckdb)),
                None => {
                    values.extend(change.key.iter().map(to_duckdb));
                    values.resize(view.columns.len(), Value::Null);
                }
            }
            values.push(Value::Boolean(change.row.is_some()));
            appender.append_row(appender_params_from_iter(values.iter()))?;
        }
        appender.flush()?;
    }
    if view.changes {
        tx.execute(&capture_sql(view, snapshot_id), [])?;
    }
    let (delete, insert) = apply_stage_sql(view);
    tx.execute(&delete, [])?;
    tx.execute(&insert, [])?;
    Ok(())
}

fn timestamp(micros: i64) -> Value {
    Value::Timestamp(TimeUnit::Microsecond, micros)
}

/// A dataflow value as DuckDB stores it in its column.
fn to_duckdb(value: &tidewater_dataflows::Value) -> Value {
    use tidewater_dataflows::Value as V;
    match value {
        V::Null => Value::Null,
        V::Bool(v) => Value::Boolean(*v),
        V::Int(v) => Value::BigInt(*v),
        V::BigInt(v) => Value::HugeInt(*v),
        V::Float(v) => Value::Double(*v),
        V::String(v) => Value::Text(v.clone()),
        V::Timestamp(v) => timestamp(*v),
    }
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

/// The first line where two pipeline definitions differ, both versions, for the refusal.
fn first_difference(stored: &str, current: &str) -> String {
    let mut stored_lines = stored.lines();
    let mut current_lines = current.lines();
    loop {
        match (stored_lines.next(), current_lines.next()) {
            (None, None) => return "none visible".to_owned(),
            (a, b) if a == b => continue,
            (a, b) => {
                return format!(
                    "the file's pipeline has `{}` where this one has `{}`",
                    a.unwrap_or("(end)").trim(),
                    b.unwrap_or("(end)").trim()
                )
            }
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).trim().to_owned()
}
