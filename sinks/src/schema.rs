//! The warehouse schema: bookkeeping tables (named with a leading `_`) and the view table.

use crate::error::SinkError;

/// Bookkeeping tables, created once per file.
pub const BOOKKEEPING_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS _snapshots (
    snapshot_id      BIGINT PRIMARY KEY,
    epoch            UBIGINT NOT NULL,
    committed_at     TIMESTAMP NOT NULL,
    records_in       BIGINT NOT NULL,
    records_rejected BIGINT NOT NULL,
    rows_upserted    BIGINT NOT NULL,
    rows_deleted     BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS _offsets (
    snapshot_id BIGINT NOT NULL,
    topic       VARCHAR NOT NULL,
    "partition" INTEGER NOT NULL,
    next_offset BIGINT NOT NULL,
    PRIMARY KEY (snapshot_id, topic, "partition")
);
CREATE TABLE IF NOT EXISTS _rejects (
    snapshot_id BIGINT NOT NULL,
    topic       VARCHAR NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset"    BIGINT NOT NULL,
    payload     VARCHAR NOT NULL,
    error       VARCHAR NOT NULL
);
"#;

/// Columns of a station view table, in order.
pub const VIEW_COLUMNS: &str =
    "window_start TIMESTAMP NOT NULL, window_end TIMESTAMP NOT NULL, station VARCHAR NOT NULL, \
     readings BIGINT NOT NULL, entries BIGINT NOT NULL, exits BIGINT NOT NULL";

/// The view table (no primary key: a snapshot deletes and re-inserts rows of one key in the same
/// transaction, which DuckDB's eager unique checks would refuse).
pub fn view_ddl(table: &str) -> String {
    format!("CREATE TABLE IF NOT EXISTS {table} ({VIEW_COLUMNS});")
}

/// The per-connection staging table a snapshot's changes are appended to before they are applied.
pub fn stage_ddl(table: &str) -> String {
    format!(
        "CREATE TEMP TABLE IF NOT EXISTS {} ({VIEW_COLUMNS}, live BOOLEAN NOT NULL);",
        stage_table(table)
    )
}

pub fn stage_table(table: &str) -> String {
    format!("stage_{table}")
}

/// View tables are named by the pipeline; they must be plain identifiers that do not collide
/// with the bookkeeping tables.
pub fn check_table_name(table: &str) -> Result<(), SinkError> {
    let mut chars = table.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && table.len() <= 63;
    if valid {
        Ok(())
    } else {
        Err(SinkError::InvalidTableName(table.to_owned()))
    }
}
