//! The warehouse schema: bookkeeping tables (named with a leading `_`) and the view tables.

use tidewater_dataflows::ViewSpec;

/// Bookkeeping tables, created once per file.
pub const BOOKKEEPING_DDL: &str = r#"
CREATE TABLE IF NOT EXISTS _snapshots (
    snapshot_id      BIGINT PRIMARY KEY,
    epoch            UBIGINT NOT NULL,
    committed_at     TIMESTAMP NOT NULL,
    records_in       BIGINT NOT NULL,
    records_rejected BIGINT NOT NULL,
    records_late     BIGINT NOT NULL,
    rows_upserted    BIGINT NOT NULL,
    rows_deleted     BIGINT NOT NULL,
    checkpoint       BOOLEAN NOT NULL,
    offsets_skipped  VARCHAR
);
CREATE TABLE IF NOT EXISTS _pipeline (
    fingerprint VARCHAR NOT NULL,
    definition  VARCHAR NOT NULL,
    created_at  TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS _state (
    arrangement INTEGER NOT NULL,
    entry       VARCHAR NOT NULL,
    diff        BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS _offsets (
    snapshot_id    BIGINT NOT NULL,
    topic          VARCHAR NOT NULL,
    "partition"    INTEGER NOT NULL,
    next_offset    BIGINT NOT NULL,
    max_event_time TIMESTAMP,
    PRIMARY KEY (snapshot_id, topic, "partition")
);
CREATE TABLE IF NOT EXISTS _watermarks (
    snapshot_id BIGINT NOT NULL,
    source      VARCHAR NOT NULL,
    watermark   TIMESTAMP,
    PRIMARY KEY (snapshot_id, source)
);
CREATE TABLE IF NOT EXISTS _rejects (
    snapshot_id BIGINT NOT NULL,
    topic       VARCHAR NOT NULL,
    "partition" INTEGER NOT NULL,
    "offset"    BIGINT NOT NULL,
    payload     VARCHAR NOT NULL,
    error       VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS _late (
    snapshot_id  BIGINT NOT NULL,
    "view"       VARCHAR NOT NULL,
    topic        VARCHAR NOT NULL,
    "partition"  INTEGER NOT NULL,
    "offset"     BIGINT NOT NULL,
    event_time   TIMESTAMP NOT NULL,
    window_start TIMESTAMP NOT NULL,
    payload      VARCHAR NOT NULL
);
"#;

/// A view table (no primary key: a snapshot deletes and re-inserts rows of one key in the same
/// transaction, which DuckDB's eager unique checks would refuse). Replaced when the file has no
/// snapshots yet, so a changed pipeline file starts with the right columns.
pub fn view_ddl(view: &ViewSpec) -> String {
    format!(
        "{};\n",
        view.create_table_sql()
            .replacen("CREATE TABLE", "CREATE OR REPLACE TABLE", 1)
    )
}

/// The per-connection staging table a snapshot's row changes are appended to before they are
/// applied: the view's columns, all nullable (a delete carries only the key), and `live`.
pub fn stage_ddl(view: &ViewSpec) -> String {
    let columns: Vec<String> = view
        .columns
        .iter()
        .map(|c| format!("{} {}", c.name, c.sql_type))
        .collect();
    format!(
        "CREATE OR REPLACE TEMP TABLE {} ({}, live BOOLEAN NOT NULL);\n",
        stage_table(view),
        columns.join(", ")
    )
}

pub fn stage_table(view: &ViewSpec) -> String {
    format!("stage_{}", view.name)
}

/// Applies the staged changes: delete every staged key, insert the live rows. Nullable key
/// columns (nullable group fields) match with `IS NOT DISTINCT FROM`; the others with `=`,
/// which DuckDB can run as a hash join whose key ranges it pushes into the scan of the view
/// table (skipping row groups by their min/max), instead of comparing every row.
pub fn apply_stage_sql(view: &ViewSpec) -> (String, String) {
    let table = &view.name;
    let stage = stage_table(view);
    let matches = key_matches(view, table, "s");
    let delete = if matches.is_empty() {
        // A global view without group fields has one row.
        format!("DELETE FROM {table}")
    } else {
        format!(
            "DELETE FROM {table} USING {stage} s WHERE {}",
            matches.join(" AND ")
        )
    };
    let columns: Vec<&str> = view.columns.iter().map(|c| c.name.as_str()).collect();
    let insert = format!(
        "INSERT INTO {table} SELECT {} FROM {stage} WHERE live",
        columns.join(", ")
    );
    (delete, insert)
}

/// The conditions under which a row of `left` and a row of `right` have the same key (none for
/// a view without key columns): `=` where the key column is not nullable, so that DuckDB can
/// hash-join, `IS NOT DISTINCT FROM` where it is.
pub fn key_matches(view: &ViewSpec, left: &str, right: &str) -> Vec<String> {
    view.columns[..view.key_len]
        .iter()
        .map(|c| match c.nullable {
            true => format!("{left}.{0} IS NOT DISTINCT FROM {right}.{0}", c.name),
            false => format!("{left}.{0} = {right}.{0}", c.name),
        })
        .collect()
}
