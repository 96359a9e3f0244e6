//! The JSON API: the views and their current rows, read from the warehouse on the observers'
//! own connection. Each response is read in one transaction, so its rows are exactly those of
//! the snapshot it names (DuckDB's MVCC), however the writer goes on meanwhile.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use duckdb::types::{TimeUnit, Value};
use duckdb::Connection;
use serde_json::{json, Map, Value as JsonValue};

use crate::observe::{Observer, ViewInfo};

/// Rows a view request returns when it does not say (`?limit=`).
pub const DEFAULT_LIMIT: usize = 100;
/// The most rows one request may ask for.
pub const MAX_LIMIT: usize = 100_000;

/// An HTTP error with a JSON body `{"error": message}`.
#[derive(Debug)]
pub struct ApiFailure {
    pub status: StatusCode,
    pub message: String,
}

impl ApiFailure {
    pub fn internal(message: String) -> ApiFailure {
        ApiFailure {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message,
        }
    }

    fn database(error: duckdb::Error) -> ApiFailure {
        ApiFailure::internal(format!("reading the warehouse: {error}"))
    }

    fn no_warehouse() -> ApiFailure {
        ApiFailure {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the warehouse is not open here (not started yet, ended, or this process \
                      of a cluster does not write it)"
                .to_owned(),
        }
    }
}

impl IntoResponse for ApiFailure {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "error": self.message }))).into_response()
    }
}

/// The latest committed snapshot as the connection sees it: `{snapshot_id, committed_at}`.
fn latest_snapshot(conn: &Connection) -> Result<JsonValue, duckdb::Error> {
    let mut statement = conn.prepare(
        "SELECT snapshot_id, committed_at FROM _snapshots ORDER BY snapshot_id DESC LIMIT 1",
    )?;
    let mut rows = statement.query([])?;
    Ok(match rows.next()? {
        Some(row) => json!({
            "snapshot_id": row.get::<_, i64>(0)?,
            "committed_at": to_json(row.get::<_, Value>(1)?),
        }),
        None => JsonValue::Null,
    })
}

fn quoted(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `(rows, rows of windows not final yet)` of a view table.
fn sizes(conn: &Connection, view: &ViewInfo) -> Result<(i64, Option<i64>), duckdb::Error> {
    let table = quoted(&view.name);
    if view.windowed {
        conn.query_row(
            &format!("SELECT count(*), count(*) FILTER (WHERE NOT is_final) FROM {table}"),
            [],
            |row| Ok((row.get(0)?, Some(row.get(1)?))),
        )
    } else {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| {
            Ok((row.get(0)?, None))
        })
    }
}

/// `GET /api/views`: every view with its columns and row count, and the snapshot they are of.
pub fn list_views(observer: &Observer) -> Result<JsonValue, ApiFailure> {
    let views = observer.views();
    let mut connection = observer.reader().map_err(ApiFailure::database)?;
    let mut snapshot = JsonValue::Null;
    let mut counts = vec![None; views.len()];
    if let Some(conn) = connection.as_mut() {
        let tx = conn.transaction().map_err(ApiFailure::database)?;
        snapshot = latest_snapshot(&tx).map_err(ApiFailure::database)?;
        for (view, count) in views.iter().zip(counts.iter_mut()) {
            *count = Some(sizes(&tx, view).map_err(ApiFailure::database)?);
        }
    }
    let listed: Vec<JsonValue> = views
        .iter()
        .zip(counts)
        .map(|(view, count)| {
            json!({
                "name": view.name,
                "description": view.description,
                "windowed": view.windowed,
                "columns": columns_json(view),
                "key_columns": view.columns[..view.key_len].iter().map(|(n, _)| n).collect::<Vec<_>>(),
                "rows": count.map(|c| c.0),
                "open_rows": count.and_then(|c| c.1),
            })
        })
        .collect();
    Ok(json!({ "snapshot": snapshot, "views": listed }))
}

fn columns_json(view: &ViewInfo) -> Vec<JsonValue> {
    view.columns
        .iter()
        .map(|(name, sql_type)| json!({ "name": name, "type": sql_type }))
        .collect()
}

/// `GET /api/views/<name>`: at most `limit` rows of the view, newest windows first (then by
/// group), or only the rows of its latest window; with the snapshot they belong to.
pub fn view_rows(
    observer: &Observer,
    name: &str,
    limit: usize,
    latest: bool,
) -> Result<JsonValue, ApiFailure> {
    let views = observer.views();
    let Some(view) = views.iter().find(|v| v.name == name) else {
        return Err(ApiFailure {
            status: StatusCode::NOT_FOUND,
            message: format!(
                "no view named `{name}` (views: {})",
                views
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    };
    if limit > MAX_LIMIT {
        return Err(ApiFailure {
            status: StatusCode::BAD_REQUEST,
            message: format!("limit {limit} is above the maximum, {MAX_LIMIT}"),
        });
    }
    let mut connection = observer
        .reader()
        .map_err(ApiFailure::database)?
        .ok_or_else(ApiFailure::no_warehouse)?;
    let tx = connection.transaction().map_err(ApiFailure::database)?;
    let snapshot = latest_snapshot(&tx).map_err(ApiFailure::database)?;
    let (total, open) = sizes(&tx, view).map_err(ApiFailure::database)?;
    let table = quoted(&view.name);
    let groups: Vec<String> = view.columns[..view.key_len]
        .iter()
        .map(|(n, _)| quoted(n))
        .filter(|n| n != "\"window_start\"")
        .collect();
    let mut order = Vec::new();
    if view.windowed {
        order.push("window_start DESC".to_owned());
    }
    order.extend(groups);
    let filter = match latest && view.windowed {
        true => format!("WHERE window_start = (SELECT max(window_start) FROM {table})"),
        false => String::new(),
    };
    let order = match order.is_empty() {
        true => String::new(),
        false => format!("ORDER BY {}", order.join(", ")),
    };
    let sql = format!("SELECT * FROM {table} {filter} {order} LIMIT {limit}");
    let mut statement = tx.prepare(&sql).map_err(ApiFailure::database)?;
    let mut rows = statement.query([]).map_err(ApiFailure::database)?;
    let names: Vec<String> = rows.as_ref().map(|s| s.column_names()).unwrap_or_default();
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(ApiFailure::database)? {
        let mut object = Map::new();
        for (i, name) in names.iter().enumerate() {
            let value = row.get::<_, Value>(i).map_err(ApiFailure::database)?;
            object.insert(name.clone(), to_json(value));
        }
        out.push(JsonValue::Object(object));
    }
    Ok(json!({
        "view": view.name,
        "description": view.description,
        "snapshot": snapshot,
        "columns": columns_json(view),
        "total_rows": total,
        "open_rows": open,
        "limit": limit,
        "latest_window_only": latest && view.windowed,
        "rows": out,
    }))
}

/// For `/metrics`: (view, rows, rows of windows not final) of every view, when the warehouse
/// can be read here; an error leaves the sizes out (and is logged), never the whole page.
pub fn view_sizes(observer: &Observer) -> Vec<(String, i64, Option<i64>)> {
    let read = || -> Result<Vec<(String, i64, Option<i64>)>, duckdb::Error> {
        let Some(mut conn) = observer.reader()? else {
            return Ok(Vec::new());
        };
        let tx = conn.transaction()?;
        observer
            .views()
            .iter()
            .map(|view| sizes(&tx, view).map(|(rows, open)| (view.name.clone(), rows, open)))
            .collect()
    };
    read().unwrap_or_else(|error| {
        tracing::warn!("metrics: could not count the views' rows: {error}");
        Vec::new()
    })
}

/// A DuckDB value as JSON: numbers as numbers (128-bit ones beyond 64 bits as strings),
/// timestamps as RFC 3339 in UTC.
pub fn to_json(value: Value) -> JsonValue {
    match value {
        Value::Null => JsonValue::Null,
        Value::Boolean(v) => json!(v),
        Value::TinyInt(v) => json!(v),
        Value::SmallInt(v) => json!(v),
        Value::Int(v) => json!(v),
        Value::BigInt(v) => json!(v),
        Value::UTinyInt(v) => json!(v),
        Value::USmallInt(v) => json!(v),
        Value::UInt(v) => json!(v),
        Value::UBigInt(v) => json!(v),
        Value::HugeInt(v) => match i64::try_from(v) {
            Ok(small) => json!(small),
            Err(_) => json!(v.to_string()),
        },
        Value::Float(v) => {
            serde_json::Number::from_f64(f64::from(v)).map_or(JsonValue::Null, JsonValue::Number)
        }
        Value::Double(v) => {
            serde_json::Number::from_f64(v).map_or(JsonValue::Null, JsonValue::Number)
        }
        Value::Text(v) => json!(v),
        Value::Timestamp(unit, v) => {
            let micros = match unit {
                TimeUnit::Second => v.saturating_mul(1_000_000),
                TimeUnit::Millisecond => v.saturating_mul(1_000),
                TimeUnit::Microsecond => v,
                TimeUnit::Nanosecond => v / 1_000,
            };
            chrono::DateTime::from_timestamp_micros(micros).map_or(json!(v), |t| {
                json!(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
            })
        }
        other => json!(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_become_plain_json() {
        assert_eq!(to_json(Value::HugeInt(42)), json!(42));
        assert_eq!(
            to_json(Value::HugeInt(i128::from(i64::MAX) + 1)),
            json!("9223372036854775808")
        );
        assert_eq!(to_json(Value::Double(f64::NAN)), JsonValue::Null);
        assert_eq!(
            to_json(Value::Timestamp(
                TimeUnit::Microsecond,
                1_709_539_200_000_000
            )),
            json!("2024-03-04T08:00:00Z")
        );
        assert_eq!(
            to_json(Value::Timestamp(
                TimeUnit::Microsecond,
                1_709_539_200_250_000
            )),
            json!("2024-03-04T08:00:00.250Z")
        );
    }
}
