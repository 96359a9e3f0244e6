//! `tidewater query`: one read-only statement on a warehouse, printed as an aligned table, CSV
//! or JSON. Which statements may run, and how a warehouse is read as of a snapshot, is
//! `tidewater_sinks::reader`'s business; this module only runs and prints.

use std::fmt::Write as _;

use duckdb::types::{TimeUnit, Value};
use tidewater_sinks::{Reader, SinkError};

use crate::error::EngineError;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    /// Columns aligned, numbers to the right, NULL written out, a row count at the end.
    #[default]
    Table,
    /// A header line, then one line per row (RFC 4180 quoting; NULL is empty).
    Csv,
    /// An array of objects, one per row and line.
    Json,
}

/// A query's result: column names and rows.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryResult {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

/// Runs one read-only statement and collects its result.
pub fn run_query(reader: &Reader, sql: &str) -> Result<QueryResult, SinkError> {
    let mut statement = reader.prepare(sql)?;
    let mut rows = statement.query([]).map_err(|e| reader.error(e))?;
    let columns = rows.as_ref().map(|s| s.column_names()).unwrap_or_default();
    let mut result = QueryResult {
        columns,
        rows: Vec::new(),
    };
    while let Some(row) = rows.next().map_err(|e| reader.error(e))? {
        let values = (0..result.columns.len())
            .map(|i| row.get::<_, Value>(i))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| reader.error(e))?;
        result.rows.push(values);
    }
    Ok(result)
}

/// Runs one statement through a running engine's SQL server (`run --serve`), which answers
/// from the warehouse the engine holds open. Values come back as text; a column whose every
/// value is a number is given as numbers, so that the table aligns them.
pub fn run_on_server(
    address: &str,
    password: Option<&str>,
    sql: &str,
) -> Result<QueryResult, EngineError> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| EngineError::ServerUnreachable(address.to_owned()))?;
    let mut config = postgres::Config::new();
    config
        .host(host.trim_start_matches('[').trim_end_matches(']'))
        .port(
            port.parse()
                .map_err(|_| EngineError::ServerUnreachable(address.to_owned()))?,
        )
        .user("tidewater")
        .dbname("warehouse")
        .connect_timeout(std::time::Duration::from_secs(5));
    if let Some(password) = password {
        config.password(password);
    }
    let mut client = config.connect(postgres::NoTls).map_err(|e| {
        if e.as_db_error().is_some() || e.to_string().contains("password") {
            EngineError::SqlServer(e.to_string())
        } else {
            EngineError::ServerUnreachable(address.to_owned())
        }
    })?;
    let messages = client.simple_query(sql).map_err(|e| {
        EngineError::SqlServer(
            e.as_db_error()
                .map(|db| db.message().to_owned())
                .unwrap_or_else(|| e.to_string()),
        )
    })?;
    let mut result = QueryResult::default();
    let mut texts: Vec<Vec<Option<String>>> = Vec::new();
    for message in messages {
        match message {
            postgres::SimpleQueryMessage::RowDescription(columns) => {
                result.columns = columns.iter().map(|c| c.name().to_owned()).collect();
            }
            postgres::SimpleQueryMessage::Row(row) => {
                texts.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_owned))
                        .collect(),
                );
            }
            _ => {}
        }
    }
    // The simple protocol gives no column types: a column is numeric when every value in it
    // reads back as exactly the same text (so "007" or "0.10" stay text, and no digit is lost).
    let numeric: Vec<bool> = (0..result.columns.len())
        .map(|i| {
            texts
                .iter()
                .all(|row| row[i].as_deref().is_none_or(|t| exact_number(t).is_some()))
        })
        .collect();
    result.rows = texts
        .into_iter()
        .map(|row| {
            row.into_iter()
                .zip(&numeric)
                .map(|(text, numeric)| match (text, numeric) {
                    (None, _) => Value::Null,
                    (Some(text), true) => exact_number(&text).unwrap_or(Value::Text(text)),
                    (Some(text), false) => Value::Text(text),
                })
                .collect()
        })
        .collect();
    Ok(result)
}

/// The number a text the server sent stands for, when it reads back as exactly that text.
fn exact_number(text: &str) -> Option<Value> {
    if let Some(n) = text.parse::<i64>().ok().filter(|n| n.to_string() == text) {
        return Some(Value::BigInt(n));
    }
    if let Some(n) = text.parse::<i128>().ok().filter(|n| n.to_string() == text) {
        return Some(Value::HugeInt(n));
    }
    text.parse::<f64>()
        .ok()
        .filter(|x| x.is_finite() && x.to_string() == text)
        .map(Value::Double)
}

pub fn render(result: &QueryResult, format: OutputFormat) -> String {
    match format {
        OutputFormat::Table => table(result),
        OutputFormat::Csv => csv(result),
        OutputFormat::Json => json(result),
    }
}

fn table(result: &QueryResult) -> String {
    let cells: Vec<Vec<String>> = result
        .rows
        .iter()
        .map(|row| {
            row.iter()
                .map(|v| text(v).unwrap_or_else(|| "NULL".to_owned()))
                .collect()
        })
        .collect();
    let width = |text: &str| text.lines().map(|l| l.chars().count()).max().unwrap_or(0);
    let widths: Vec<usize> = (0..result.columns.len())
        .map(|i| {
            cells
                .iter()
                .map(|row| width(&row[i]))
                .chain([width(&result.columns[i])])
                .max()
                .unwrap_or(0)
        })
        .collect();
    // A column is right-aligned when every value in it is a number.
    let numeric: Vec<bool> = (0..result.columns.len())
        .map(|i| {
            !result.rows.is_empty()
                && result
                    .rows
                    .iter()
                    .all(|row| is_number(&row[i]) || row[i] == Value::Null)
        })
        .collect();
    // A cell of several lines (EXPLAIN's plans) takes as many lines of the table.
    let row_lines = |values: &[String], right: &dyn Fn(usize) -> bool| {
        let lines: Vec<Vec<&str>> = values.iter().map(|v| v.lines().collect()).collect();
        let height = lines.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut text = String::new();
        for n in 0..height {
            let padded: Vec<String> = lines
                .iter()
                .enumerate()
                .map(|(i, cell)| {
                    let v = cell.get(n).copied().unwrap_or("");
                    let pad = " ".repeat(widths[i] - v.chars().count());
                    match right(i) {
                        true => format!("{pad}{v}"),
                        false => format!("{v}{pad}"),
                    }
                })
                .collect();
            let _ = writeln!(text, "{}", format!(" {} ", padded.join(" | ")).trim_end());
        }
        text
    };
    let mut out = row_lines(&result.columns, &|_| false);
    let rule: Vec<String> = widths.iter().map(|w| "-".repeat(w + 2)).collect();
    let _ = writeln!(out, "{}", rule.join("+"));
    for row in &cells {
        out.push_str(&row_lines(row, &|i| numeric[i]));
    }
    let count = result.rows.len();
    let _ = writeln!(out, "({count} row{})", if count == 1 { "" } else { "s" });
    out
}

fn csv(result: &QueryResult) -> String {
    let field = |text: &str| match text.contains([',', '"', '\n', '\r']) {
        true => format!("\"{}\"", text.replace('"', "\"\"")),
        false => text.to_owned(),
    };
    let mut out = String::new();
    let header: Vec<String> = result.columns.iter().map(|c| field(c)).collect();
    let _ = writeln!(out, "{}", header.join(","));
    for row in &result.rows {
        let cells: Vec<String> = row
            .iter()
            .map(|v| text(v).map(|t| field(&t)).unwrap_or_default())
            .collect();
        let _ = writeln!(out, "{}", cells.join(","));
    }
    out
}

fn json(result: &QueryResult) -> String {
    let objects: Vec<String> = result
        .rows
        .iter()
        .map(|row| {
            // Written by hand to keep the columns' order (serde_json's map sorts keys).
            let fields: Vec<String> = result
                .columns
                .iter()
                .zip(row)
                .map(|(column, value)| {
                    format!(
                        "{}:{}",
                        serde_json::Value::from(column.as_str()),
                        json_value(value)
                    )
                })
                .collect();
            format!("{{{}}}", fields.join(","))
        })
        .collect();
    match objects.is_empty() {
        true => "[]\n".to_owned(),
        false => format!("[\n{}\n]\n", objects.join(",\n")),
    }
}

fn is_number(value: &Value) -> bool {
    matches!(
        value,
        Value::TinyInt(_)
            | Value::SmallInt(_)
            | Value::Int(_)
            | Value::BigInt(_)
            | Value::HugeInt(_)
            | Value::UTinyInt(_)
            | Value::USmallInt(_)
            | Value::UInt(_)
            | Value::UBigInt(_)
            | Value::Float(_)
            | Value::Double(_)
            | Value::Decimal(_)
    )
}

fn json_value(value: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match value {
        Value::Null => J::Null,
        Value::Boolean(b) => J::Bool(*b),
        Value::TinyInt(v) => J::from(*v),
        Value::SmallInt(v) => J::from(*v),
        Value::Int(v) => J::from(*v),
        Value::BigInt(v) => J::from(*v),
        Value::UTinyInt(v) => J::from(*v),
        Value::USmallInt(v) => J::from(*v),
        Value::UInt(v) => J::from(*v),
        Value::UBigInt(v) => J::from(*v),
        // Exact where JSON numbers can be; text beyond.
        Value::HugeInt(v) => i64::try_from(*v).map_or_else(|_| J::String(v.to_string()), J::from),
        Value::Float(v) => finite(f64::from(*v)),
        Value::Double(v) => finite(*v),
        Value::Decimal(d) => d
            .to_string()
            .parse::<f64>()
            .map_or_else(|_| J::String(d.to_string()), finite),
        other => text(other).map_or(J::Null, J::String),
    }
}

fn finite(v: f64) -> serde_json::Value {
    serde_json::Number::from_f64(v).map_or_else(
        || serde_json::Value::String(v.to_string()),
        serde_json::Value::Number,
    )
}

fn micros(unit: TimeUnit, value: i64) -> i64 {
    match unit {
        TimeUnit::Second => value.saturating_mul(1_000_000),
        TimeUnit::Millisecond => value.saturating_mul(1_000),
        TimeUnit::Microsecond => value,
        TimeUnit::Nanosecond => value / 1_000,
    }
}

/// `HH:MM:SS`, with the fraction of a second when there is one (as DuckDB prints times).
fn time_of_day(micros_of_day: i64) -> String {
    let seconds = micros_of_day.div_euclid(1_000_000);
    let fraction = micros_of_day.rem_euclid(1_000_000);
    let mut text = format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    );
    if fraction != 0 {
        let digits = format!("{fraction:06}");
        text.push('.');
        text.push_str(digits.trim_end_matches('0'));
    }
    text
}

/// A value as text, as DuckDB's own shell shows it; `None` for NULL.
pub fn text(value: &Value) -> Option<String> {
    Some(match value {
        Value::Null => return None,
        Value::Boolean(v) => v.to_string(),
        Value::TinyInt(v) => v.to_string(),
        Value::SmallInt(v) => v.to_string(),
        Value::Int(v) => v.to_string(),
        Value::BigInt(v) => v.to_string(),
        Value::HugeInt(v) => v.to_string(),
        Value::UTinyInt(v) => v.to_string(),
        Value::USmallInt(v) => v.to_string(),
        Value::UInt(v) => v.to_string(),
        Value::UBigInt(v) => v.to_string(),
        Value::Float(v) => v.to_string(),
        Value::Double(v) => v.to_string(),
        Value::Decimal(v) => v.to_string(),
        Value::Text(v) => v.clone(),
        Value::Enum(v) => v.clone(),
        Value::Timestamp(unit, v) => {
            let micros = micros(*unit, *v);
            let day = micros.div_euclid(86_400_000_000);
            let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
                .map(|d| d.format("%Y-%m-%d").to_string())
                .unwrap_or_else(|| format!("{micros} µs"));
            format!("{date} {}", time_of_day(micros.rem_euclid(86_400_000_000)))
        }
        Value::Date32(days) => chrono::DateTime::from_timestamp(i64::from(*days) * 86_400, 0)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| format!("day {days}")),
        Value::Time64(unit, v) => time_of_day(micros(*unit, *v)),
        Value::Blob(bytes) => bytes.iter().fold(String::from("\\x"), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        }),
        Value::List(values) | Value::Array(values) => {
            let items: Vec<String> = values
                .iter()
                .map(|v| text(v).unwrap_or_else(|| "NULL".to_owned()))
                .collect();
            format!("[{}]", items.join(", "))
        }
        other => format!("{other:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_text_becomes_a_number_only_when_no_digit_is_lost() {
        assert_eq!(exact_number("42"), Some(Value::BigInt(42)));
        assert_eq!(exact_number("-7"), Some(Value::BigInt(-7)));
        assert_eq!(
            exact_number("170141183460469231731687303715884105727"),
            Some(Value::HugeInt(i128::MAX))
        );
        assert_eq!(exact_number("1.5"), Some(Value::Double(1.5)));
        for text in [
            "007",
            "0.10",
            "1e3",
            "12345678901234567890.5",
            "t",
            "NaN",
            "R051",
            "",
        ] {
            assert_eq!(exact_number(text), None, "{text}");
        }
    }

    fn result() -> QueryResult {
        QueryResult {
            columns: vec!["station".into(), "window_start".into(), "entries".into()],
            rows: vec![
                vec![
                    Value::Text("TIMES SQ-42 ST".into()),
                    Value::Timestamp(TimeUnit::Microsecond, 1_709_539_200_000_000),
                    Value::BigInt(1234),
                ],
                vec![
                    Value::Text("a, \"b\"".into()),
                    Value::Timestamp(TimeUnit::Microsecond, 1_709_539_200_500_000),
                    Value::Null,
                ],
            ],
        }
    }

    #[test]
    fn tables_align_columns_and_numbers_to_the_right() {
        assert_eq!(
            render(&result(), OutputFormat::Table),
            concat!(
                " station        | window_start          | entries\n",
                "----------------+-----------------------+---------\n",
                " TIMES SQ-42 ST | 2024-03-04 08:00:00   |    1234\n",
                " a, \"b\"         | 2024-03-04 08:00:00.5 |    NULL\n",
                "(2 rows)\n"
            )
        );
    }

    #[test]
    fn csv_quotes_what_needs_it_and_json_keeps_numbers() {
        assert_eq!(
            render(&result(), OutputFormat::Csv),
            "station,window_start,entries\nTIMES SQ-42 ST,2024-03-04 08:00:00,1234\n\"a, \"\"b\"\"\",2024-03-04 08:00:00.5,\n"
        );
        assert_eq!(
            render(&result(), OutputFormat::Json),
            "[\n{\"station\":\"TIMES SQ-42 ST\",\"window_start\":\"2024-03-04 08:00:00\",\"entries\":1234},\n{\"station\":\"a, \\\"b\\\"\",\"window_start\":\"2024-03-04 08:00:00.5\",\"entries\":null}\n]\n"
        );
    }

    #[test]
    fn values_print_as_duckdb_prints_them() {
        assert_eq!(text(&Value::Date32(19_786)).unwrap(), "2024-03-04");
        assert_eq!(
            text(&Value::Time64(TimeUnit::Microsecond, 3_723_000_001)).unwrap(),
            "01:02:03.000001"
        );
        assert_eq!(
            text(&Value::Timestamp(TimeUnit::Microsecond, -1)).unwrap(),
            "1969-12-31 23:59:59.999999"
        );
        assert_eq!(text(&Value::Double(2.5)).unwrap(), "2.5");
        assert_eq!(text(&Value::Blob(vec![1, 255])).unwrap(), "\\x01ff");
        assert_eq!(text(&Value::Null), None);
    }
}
