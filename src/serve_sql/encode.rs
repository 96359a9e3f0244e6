//! DuckDB results (Arrow record batches) as Postgres rows: a Postgres type per column and the
//! text Postgres itself would print for each value (psql and most drivers read text).

use std::sync::Arc;

use duckdb::arrow::array::{Array, BooleanArray};
use duckdb::arrow::datatypes::{DataType, Schema};
use duckdb::arrow::record_batch::RecordBatch;
use duckdb::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::error::PgWireResult;
use pgwire::messages::data::DataRow;

/// The Postgres type a client is told for a DuckDB column; anything without a close match is
/// text (its value is still DuckDB's rendering of it).
pub fn postgres_type(data_type: &DataType) -> Type {
    match data_type {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 => Type::INT8,
        DataType::UInt64 | DataType::Decimal128(..) | DataType::Decimal256(..) => Type::NUMERIC,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => Type::VARCHAR,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Time32(_) | DataType::Time64(_) => Type::TIME,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Interval(_) => Type::INTERVAL,
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => Type::BYTEA,
        _ => Type::TEXT,
    }
}

/// The row description of a result.
pub fn fields(schema: &Schema) -> Arc<Vec<FieldInfo>> {
    Arc::new(
        schema
            .fields()
            .iter()
            .map(|field| {
                FieldInfo::new(
                    field.name().clone(),
                    None,
                    None,
                    postgres_type(field.data_type()),
                    FieldFormat::Text,
                )
            })
            .collect(),
    )
}

/// Every row of `batches` in Postgres text format.
pub fn rows(batches: &[RecordBatch], fields: &Arc<Vec<FieldInfo>>) -> PgWireResult<Vec<DataRow>> {
    let options = FormatOptions::default().with_null("");
    let mut rows = Vec::new();
    for batch in batches {
        let columns: Vec<Column<'_>> = batch
            .columns()
            .iter()
            .map(|array| Column::new(array.as_ref(), &options))
            .collect::<Result<_, _>>()
            .map_err(|e| pgwire::error::PgWireError::ApiError(Box::new(e)))?;
        for row in 0..batch.num_rows() {
            let mut encoder = DataRowEncoder::new(Arc::clone(fields));
            for column in &columns {
                encoder.encode_field(&column.text(row))?;
            }
            rows.push(encoder.finish()?);
        }
    }
    Ok(rows)
}

/// One column's values as Postgres prints them.
struct Column<'a> {
    array: &'a dyn Array,
    formatter: ArrayFormatter<'a>,
}

impl<'a> Column<'a> {
    fn new(
        array: &'a dyn Array,
        options: &'a FormatOptions<'a>,
    ) -> Result<Self, duckdb::arrow::error::ArrowError> {
        Ok(Column {
            array,
            formatter: ArrayFormatter::try_new(array, options)?,
        })
    }

    fn text(&self, row: usize) -> Option<String> {
        if self.array.is_null(row) {
            return None;
        }
        Some(match self.array.data_type() {
            // Postgres prints booleans as t/f, and timestamps with a space, not a `T`.
            DataType::Boolean => {
                let booleans = self.array.as_any().downcast_ref::<BooleanArray>()?;
                if booleans.value(row) { "t" } else { "f" }.to_owned()
            }
            DataType::Timestamp(..) => self.formatter.value(row).to_string().replacen('T', " ", 1),
            _ => self.formatter.value(row).to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text_of(sql: &str) -> (Vec<Type>, Vec<Vec<Option<String>>>) {
        let conn = duckdb::Connection::open_in_memory().unwrap();
        let mut statement = conn.prepare(sql).unwrap();
        let arrow = statement.query_arrow([]).unwrap();
        let schema = arrow.get_schema();
        let batches: Vec<RecordBatch> = arrow.collect();
        let types = schema
            .fields()
            .iter()
            .map(|f| postgres_type(f.data_type()))
            .collect();
        let mut rows = Vec::new();
        for batch in &batches {
            let options = FormatOptions::default().with_null("");
            let columns: Vec<Column<'_>> = batch
                .columns()
                .iter()
                .map(|a| Column::new(a.as_ref(), &options).unwrap())
                .collect();
            for row in 0..batch.num_rows() {
                rows.push(columns.iter().map(|c| c.text(row)).collect());
            }
        }
        (types, rows)
    }

    #[test]
    fn values_are_printed_as_postgres_prints_them() {
        let (types, rows) = text_of(
            "SELECT 42::BIGINT AS n, 1.5::DOUBLE AS x, true AS yes, NULL::INTEGER AS nothing, \
             'Times Sq' AS station, TIMESTAMP '2024-03-04 08:00:00' AS ts, \
             DATE '2024-03-04' AS day, 12.50::DECIMAL(10,2) AS price",
        );
        assert_eq!(
            types,
            vec![
                Type::INT8,
                Type::FLOAT8,
                Type::BOOL,
                Type::INT4,
                Type::VARCHAR,
                Type::TIMESTAMP,
                Type::DATE,
                Type::NUMERIC
            ]
        );
        let text = |s: &str| Some(s.to_owned());
        assert_eq!(
            rows,
            vec![vec![
                text("42"),
                text("1.5"),
                text("t"),
                None,
                text("Times Sq"),
                text("2024-03-04 08:00:00"),
                text("2024-03-04"),
                text("12.50"),
            ]]
        );
    }
}
