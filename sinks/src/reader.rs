//! Reading the warehouse: read-only, one read-only statement at a time, and optionally as of
//! an earlier snapshot.
//!
//! A plain reader opens the file read-only. DuckDB lets no other process open a file that an
//! engine is writing; that is reported as such (the published copy can be read instead).
//!
//! **As of snapshot k**, a reader is an in-memory database that attaches the file read-only and
//! defines, in its own schema and first on the search path:
//! - for every view with a change table, a view of the same name rebuilt from the change table
//!   (see [`crate::changes`]);
//! - for every bookkeeping table with a `snapshot_id` (`_snapshots`, `_offsets`, `_watermarks`,
//!   `_rejects`, `_late`) and every change table, its rows up to snapshot k, so the whole
//!   picture is that of snapshot k; `_pipeline` and `_changes` as they are (`_state` holds the
//!   last checkpoint only and is left out);
//! - nothing for a view without a change table: a query that reads one is refused, naming it.
//!
//! Snapshot k must exist (1 up to the last) and not be folded away by retention
//! (`_changes.since <= k`). Qualified names (`warehouse.main.t`) still reach the file's
//! current tables.
//!
//! Every reader disables external access once the file is open (no other files, no
//! extensions, no `ATTACH`) and locks its configuration: the query sees the warehouse only.

use std::path::{Path, PathBuf};

use duckdb::{AccessMode, Config, Connection, Statement};

use crate::changes::changes_table;
use crate::error::SinkError;
use crate::publish::{quote_identifier, quote_literal};
use crate::statement::check_read_only;

/// The catalog name of the attached warehouse in an as-of reader.
const ATTACHED: &str = "warehouse";

#[derive(Clone, Debug, Default)]
pub struct ReadOptions {
    /// See every view with a change table as of this snapshot.
    pub as_of: Option<i64>,
    /// The warehouse's published copy, named in the error when an engine holds the file.
    pub published: Option<PathBuf>,
}

/// A read-only connection to one warehouse.
pub struct Reader {
    conn: Connection,
    as_of: Option<i64>,
    /// Views without a change table (as-of readers leave them out).
    without_history: Vec<String>,
}

impl Reader {
    pub fn open(path: &Path, options: &ReadOptions) -> Result<Reader, SinkError> {
        if !path.is_file() {
            return Err(SinkError::NoWarehouse(path.to_owned()));
        }
        let database = |e: duckdb::Error| SinkError::Database {
            path: path.to_owned(),
            detail: first_line(&e.to_string()),
        };
        let opened = |e: duckdb::Error| open_error(path, options, e);
        let (conn, without_history) = match options.as_of {
            None => {
                let config = Config::default()
                    .access_mode(AccessMode::ReadOnly)
                    .map_err(database)?;
                (
                    Connection::open_with_flags(path, config).map_err(opened)?,
                    Vec::new(),
                )
            }
            Some(snapshot) => {
                let conn = Connection::open_in_memory().map_err(database)?;
                conn.execute_batch(&format!(
                    "ATTACH {} AS {ATTACHED} (READ_ONLY)",
                    quote_literal(&path.display().to_string())
                ))
                .map_err(opened)?;
                let without_history = define_as_of(&conn, snapshot).map_err(|e| match e {
                    AsOfError::Refused(detail) => SinkError::AsOf { snapshot, detail },
                    AsOfError::Database(e) => database(e),
                })?;
                (conn, without_history)
            }
        };
        conn.execute_batch("SET enable_external_access = false; SET lock_configuration = true;")
            .map_err(database)?;
        Ok(Reader {
            conn,
            as_of: options.as_of,
            without_history,
        })
    }

    /// Prepares one statement, refused unless it only reads.
    pub fn prepare(&self, sql: &str) -> Result<Statement<'_>, SinkError> {
        check_read_only(sql).map_err(SinkError::NotReadOnly)?;
        self.conn.prepare(sql).map_err(|e| self.error(e))
    }

    /// A query's error: reading a view without history as of a snapshot says so.
    pub fn error(&self, error: duckdb::Error) -> SinkError {
        let text = error.to_string();
        if let Some(snapshot) = self.as_of {
            let lower = text.to_ascii_lowercase();
            for view in &self.without_history {
                let missing = format!(
                    "table with name {} does not exist",
                    view.to_ascii_lowercase()
                );
                if lower.contains(&missing) {
                    return SinkError::NoHistory {
                        snapshot,
                        view: view.clone(),
                    };
                }
            }
        }
        SinkError::Query(text.trim_end().to_owned())
    }
}

enum AsOfError {
    Refused(String),
    Database(duckdb::Error),
}

impl From<duckdb::Error> for AsOfError {
    fn from(error: duckdb::Error) -> Self {
        AsOfError::Database(error)
    }
}

/// Defines the as-of views (see the module documentation); returns the views without history.
fn define_as_of(conn: &Connection, snapshot: i64) -> Result<Vec<String>, AsOfError> {
    let mut statement = conn.prepare(
        "SELECT table_name, column_name FROM duckdb_columns() WHERE database_name = ? AND schema_name = 'main' ORDER BY table_name, column_index",
    )?;
    let columns: Vec<(String, String)> = statement
        .query_map([ATTACHED], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<Result<_, _>>()?;
    let mut tables: Vec<(String, Vec<String>)> = Vec::new();
    for (table, column) in columns {
        match tables.last_mut() {
            Some((last, list)) if *last == table => list.push(column),
            _ => tables.push((table, vec![column])),
        }
    }
    if !tables.iter().any(|(name, _)| name == "_snapshots") {
        return Err(AsOfError::Refused(
            "this file is not a Tidewater warehouse (it has no `_snapshots`)".to_owned(),
        ));
    }
    let last: Option<i64> = conn.query_row(
        &format!("SELECT max(snapshot_id) FROM {ATTACHED}._snapshots"),
        [],
        |row| row.get(0),
    )?;
    let Some(last) = last else {
        return Err(AsOfError::Refused(
            "the warehouse holds no snapshots yet".to_owned(),
        ));
    };
    if snapshot < 1 || snapshot > last {
        return Err(AsOfError::Refused(format!(
            "there is no such snapshot; the warehouse holds snapshots 1 to {last}"
        )));
    }
    let since: Option<i64> = match tables.iter().any(|(name, _)| name == "_changes") {
        true => conn.query_row(
            &format!("SELECT max(since) FROM {ATTACHED}._changes"),
            [],
            |row| row.get(0),
        )?,
        false => None,
    };
    if let Some(since) = since.filter(|since| snapshot < *since) {
        return Err(AsOfError::Refused(format!(
            "change tables keep snapshots {since} to {last} only (changes_keep_snapshots, changes_keep_for); older ones are folded away"
        )));
    }
    let is_table = |name: &str| tables.iter().any(|(t, _)| t == name);
    let mut setup = String::new();
    let mut without_history = Vec::new();
    for (table, columns) in &tables {
        let source = format!("{ATTACHED}.main.{}", quote_identifier(table));
        let name = quote_identifier(table);
        if table == "_state" {
            continue;
        }
        if table.starts_with('_') || table.ends_with(tidewater_dataflows::view::CHANGES_SUFFIX) {
            let filter = match columns.iter().any(|c| c == "snapshot_id") {
                true => format!(" WHERE snapshot_id <= {snapshot}"),
                false => String::new(),
            };
            setup.push_str(&format!(
                "CREATE VIEW memory.main.{name} AS SELECT * FROM {source}{filter};\n"
            ));
        } else if is_table(&changes_table(table)) {
            let history = format!(
                "{ATTACHED}.main.{}",
                quote_identifier(&changes_table(table))
            );
            let list: Vec<String> = columns.iter().map(|c| quote_identifier(c)).collect();
            let list = list.join(", ");
            setup.push_str(&format!(
                "CREATE VIEW memory.main.{name} AS SELECT {list} FROM {history} WHERE snapshot_id <= {snapshot} GROUP BY {list} HAVING sum(diff) > 0;\n"
            ));
        } else {
            without_history.push(table.clone());
        }
    }
    setup.push_str("SET search_path = 'memory.main';\n");
    conn.execute_batch(&setup)?;
    Ok(without_history)
}

/// A lock held by another process (a running engine) said plainly; anything else as it is.
fn open_error(path: &Path, options: &ReadOptions, error: duckdb::Error) -> SinkError {
    let detail = first_line(&error.to_string());
    if detail.contains("lock") {
        SinkError::BeingWritten {
            path: path.to_owned(),
            detail,
            copy: options
                .published
                .as_ref()
                .map(|p| format!(" ({})", p.display()))
                .unwrap_or_default(),
        }
    } else {
        SinkError::Database {
            path: path.to_owned(),
            detail,
        }
    }
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).trim().to_owned()
}
