//! Change tables: the history of a view, so that it can be queried as of a snapshot.
//!
//! A view declared with `changes = true` has an append-only table `<view>__changes`: the
//! view's columns between `snapshot_id` and `diff`. The transaction of each snapshot appends,
//! for every row of the view that the snapshot changed, the old row with `diff = -1` and the
//! new row with `diff = +1`: the old rows are read from the view table before the snapshot
//! deletes them, the new ones from the staged changes. A row upserted with the values it
//! already had is not written (its -1 and +1 cancel out, see [`capture_sql`]). The view as of
//! snapshot `k` is therefore
//!
//! ```sql
//! SELECT <columns> FROM <view>__changes WHERE snapshot_id <= k
//! GROUP BY <columns> HAVING sum(diff) > 0
//! ```
//!
//! for every `k` from `_changes.since` up to the last snapshot. Replayed epochs of a restart
//! commit nothing at all, so they write no change rows either, and the rows of a live
//! snapshot come from the view table itself: a change table can neither miss nor double a
//! snapshot through stops, crashes and restarts.
//!
//! **Retention** (`changes_keep_snapshots`, `changes_keep_for`) folds the history up to a
//! cut-off snapshot `c` into its result, in the commit's transaction: the rows at or before
//! `c` of every key changed since the previous cut-off are replaced by the rows live as of
//! `c`, once each, with `diff = 1` and the snapshot that last inserted them. The sum then
//! still gives the view as of every `k >= c`, and `_changes.since` becomes `c`; as of an
//! earlier snapshot the history is gone, and readers refuse such queries.

use std::time::Duration;

use duckdb::{params, Transaction};
use tidewater_dataflows::ViewSpec;

use crate::schema::{key_matches, stage_table};

/// How far back every change table answers: `since` is the oldest snapshot a view can be
/// queried as of (0 until retention first folds the history).
pub const CHANGES_BOOKKEEPING_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS _changes (
    "view" VARCHAR NOT NULL,
    since  BIGINT NOT NULL
);
"#;

/// `[warehouse]` retention of change tables; a snapshot's changes are folded away once
/// either limit passes it (as Kafka's `retention.ms` and `retention.bytes` do). Neither set:
/// change tables keep everything.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ChangesRetention {
    /// Keep the last N snapshots answerable (N >= 1).
    pub keep_snapshots: Option<u64>,
    /// Keep the snapshots committed within this long answerable.
    pub keep_for: Option<Duration>,
}

impl ChangesRetention {
    /// The oldest snapshot that must stay answerable once `snapshot_id` is committed (its
    /// `_snapshots` row already written in `tx`), or `None` without retention.
    pub fn cut(&self, tx: &Transaction<'_>, snapshot_id: i64) -> duckdb::Result<Option<i64>> {
        let mut cut = None;
        if let Some(keep) = self.keep_snapshots {
            let keep = i64::try_from(keep.max(1)).unwrap_or(i64::MAX);
            cut = Some(snapshot_id.saturating_sub(keep - 1));
        }
        if let Some(keep_for) = self.keep_for {
            // `committed_at` is the transaction's `now()`: the snapshot being committed
            // always qualifies, so the cut never passes it.
            let micros = i64::try_from(keep_for.as_micros()).unwrap_or(i64::MAX);
            let first: Option<i64> = tx.query_row(
                "SELECT min(snapshot_id) FROM _snapshots WHERE committed_at >= now()::TIMESTAMP - to_microseconds(?)",
                params![micros],
                |row| row.get(0),
            )?;
            let by_time = first.unwrap_or(snapshot_id);
            cut = Some(cut.map_or(by_time, |c: i64| c.max(by_time)));
        }
        Ok(cut.map(|c| c.min(snapshot_id)))
    }
}

pub fn changes_table(view: &str) -> String {
    format!("{view}{}", tidewater_dataflows::view::CHANGES_SUFFIX)
}

/// The change table of a view, (re)created with the view table.
pub fn changes_ddl(view: &ViewSpec) -> String {
    let columns: Vec<String> = view.columns.iter().map(|c| format!("    {c}")).collect();
    format!(
        "CREATE OR REPLACE TABLE {} (\n    snapshot_id BIGINT NOT NULL,\n{},\n    diff INTEGER NOT NULL\n);\n",
        changes_table(&view.name),
        columns.join(",\n")
    )
}

fn column_list(view: &ViewSpec, qualifier: Option<&str>) -> String {
    let names: Vec<String> = view
        .columns
        .iter()
        .map(|c| match qualifier {
            Some(q) => format!("{q}.{}", c.name),
            None => c.name.clone(),
        })
        .collect();
    names.join(", ")
}

/// Appends a snapshot's changes of `view` to its change table; runs after the changes are
/// staged and before they are applied. The old rows of the staged keys (-1) and the staged
/// live rows (+1) are summed per full row, so a row re-upserted unchanged leaves nothing: only
/// rows whose values changed are written, each with -1 or +1.
pub fn capture_sql(view: &ViewSpec, snapshot_id: i64) -> String {
    let table = &view.name;
    let stage = stage_table(view);
    let columns = column_list(view, None);
    let matches = key_matches(view, table, "s");
    let old_rows = if matches.is_empty() {
        // A view without key columns has one row, replaced by any change.
        format!(
            "SELECT {}, -1 AS diff FROM {table} WHERE EXISTS (SELECT 1 FROM {stage})",
            column_list(view, Some(table))
        )
    } else {
        format!(
            "SELECT {}, -1 AS diff FROM {table} JOIN {stage} s ON {}",
            column_list(view, Some(table)),
            matches.join(" AND ")
        )
    };
    format!(
        "INSERT INTO {changes} SELECT {snapshot_id}, {columns}, sum(diff)::INTEGER FROM ({old_rows} UNION ALL SELECT {columns}, 1 AS diff FROM {stage} WHERE live) GROUP BY {columns} HAVING sum(diff) <> 0",
        changes = changes_table(&view.name),
    )
}

/// Folds the history of `view` after snapshot `since` up to snapshot `cut` (see the module
/// documentation). Only keys changed in that range are touched: the rows before it are
/// already folded.
pub fn fold_sql(view: &ViewSpec, since: i64, cut: i64) -> Vec<String> {
    let changes = changes_table(&view.name);
    let fold = format!("fold_{}", view.name);
    let keys: Vec<&str> = view.columns[..view.key_len]
        .iter()
        .map(|c| c.name.as_str())
        .collect();
    let (keys, matches) = match keys.is_empty() {
        // No key columns: the one key changed or not.
        true => ("true AS changed".to_owned(), "true".to_owned()),
        false => (
            keys.join(", "),
            key_matches(view, &changes, "k").join(" AND "),
        ),
    };
    let changed = format!(
        "(SELECT DISTINCT {keys} FROM {changes} WHERE snapshot_id > {since} AND snapshot_id <= {cut}) k"
    );
    let columns = column_list(view, None);
    let qualified = column_list(view, Some(&changes));
    vec![
        format!(
            "CREATE OR REPLACE TEMP TABLE {fold} AS SELECT max({changes}.snapshot_id) AS snapshot_id, {qualified}, sum({changes}.diff)::INTEGER AS diff FROM {changes} JOIN {changed} ON {matches} WHERE {changes}.snapshot_id <= {cut} GROUP BY {qualified} HAVING sum({changes}.diff) <> 0"
        ),
        format!("DELETE FROM {changes} USING {changed} WHERE {changes}.snapshot_id <= {cut} AND {matches}"),
        format!("INSERT INTO {changes} SELECT snapshot_id, {columns}, diff FROM {fold}"),
        format!("DROP TABLE {fold}"),
    ]
}

/// Folds every change table up to `cut` and records it as their new `since`.
pub fn fold_history(
    tx: &Transaction<'_>,
    views: &[ViewSpec],
    since: i64,
    cut: i64,
) -> duckdb::Result<()> {
    for view in views.iter().filter(|v| v.changes) {
        for statement in fold_sql(view, since, cut) {
            tx.execute(&statement, [])?;
        }
    }
    tx.execute("UPDATE _changes SET since = ?", params![cut])?;
    Ok(())
}
