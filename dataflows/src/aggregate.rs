//! Aggregate functions, computed from the multiset of a window's input values.
//!
//! Differential dataflow keeps, per (window, group), the consolidated multiset of the input
//! values the view's aggregates read (`count` of identical values, not copies), and presents it
//! sorted to [`compute`] whenever it changes. Every aggregate is therefore exact, including the
//! ones that cannot be undone incrementally (`min`, `max`, `count_distinct`), and a late record
//! or an eviction is just another change to the multiset.

use serde::{Deserialize, Serialize};

use crate::error::DataflowError;
use crate::record::Schema;
use crate::value::{FieldType, Value};
use crate::view::AggregateConfig;

/// `fn = "..."` of an aggregate. Like SQL, every function but `count` without a field ignores
/// NULL inputs, and `sum`/`min`/`max`/`avg` of no non-NULL input are NULL.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateFn {
    /// Records (without `field`) or non-NULL values of `field`.
    Count,
    Sum,
    Min,
    Max,
    Avg,
    /// Exact number of distinct non-NULL values.
    CountDistinct,
}

impl AggregateFn {
    pub fn name(self) -> &'static str {
        match self {
            AggregateFn::Count => "count",
            AggregateFn::Sum => "sum",
            AggregateFn::Min => "min",
            AggregateFn::Max => "max",
            AggregateFn::Avg => "avg",
            AggregateFn::CountDistinct => "count_distinct",
        }
    }
}

/// A validated aggregate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateSpec {
    pub column: String,
    pub function: AggregateFn,
    /// Index of the input field in the source schema.
    pub field: Option<usize>,
    /// Its name, for descriptions.
    pub field_name: Option<String>,
    pub field_type: Option<FieldType>,
}

impl AggregateSpec {
    pub fn new(config: &AggregateConfig, schema: &Schema) -> Result<Self, DataflowError> {
        let invalid = |detail: String| {
            DataflowError::InvalidView(format!("aggregate `{}`: {detail}", config.column))
        };
        let function = config.function;
        let field = match &config.field {
            None if function == AggregateFn::Count => None,
            None => return Err(invalid(format!("`{}` needs a `field`", function.name()))),
            Some(name) => Some(
                schema
                    .index_of(name)
                    .ok_or_else(|| invalid(format!("no field `{name}` in the source schema")))?,
            ),
        };
        let field_type = field.map(|i| schema.fields()[i].field_type);
        if matches!(function, AggregateFn::Sum | AggregateFn::Avg)
            && !field_type.is_some_and(FieldType::is_numeric)
        {
            return Err(invalid(format!(
                "`{}` needs an int or float field, `{}` is {}",
                function.name(),
                config.field.as_deref().unwrap_or_default(),
                field_type.map_or("missing".to_owned(), |t| t.to_string())
            )));
        }
        Ok(AggregateSpec {
            column: config.column.clone(),
            function,
            field,
            field_name: config.field.clone(),
            field_type,
        })
    }

    /// `entries = sum(entries)`, `readings = count(*)`.
    pub fn describe(&self) -> String {
        format!(
            "{} = {}({})",
            self.column,
            self.function.name(),
            self.field_name.as_deref().unwrap_or("*")
        )
    }

    /// DuckDB type of the output column (`sum` of ints is HUGEINT, as in DuckDB itself).
    pub fn sql_type(&self) -> &'static str {
        match (self.function, self.field_type) {
            (AggregateFn::Count | AggregateFn::CountDistinct, _) => "BIGINT",
            (AggregateFn::Sum, Some(FieldType::Int)) => "HUGEINT",
            (AggregateFn::Sum | AggregateFn::Avg, _) => "DOUBLE",
            (AggregateFn::Min | AggregateFn::Max, Some(t)) => t.sql_type(),
            (AggregateFn::Min | AggregateFn::Max, None) => "VARCHAR",
        }
    }

    pub fn nullable(&self) -> bool {
        !matches!(
            self.function,
            AggregateFn::Count | AggregateFn::CountDistinct
        )
    }
}

/// Computes `aggregates` over a multiset of input tuples, given where each aggregate's field
/// sits in a tuple (`positions[i]`, `None` for `count` of records). `input` holds distinct
/// tuples with their (positive) multiplicities, as differential's `reduce` presents them.
pub fn compute(
    aggregates: &[AggregateSpec],
    positions: &[Option<usize>],
    input: &[(&Vec<Value>, isize)],
) -> Vec<Value> {
    aggregates
        .iter()
        .zip(positions)
        .map(|(aggregate, position)| compute_one(aggregate, *position, input))
        .collect()
}

fn compute_one(
    aggregate: &AggregateSpec,
    position: Option<usize>,
    input: &[(&Vec<Value>, isize)],
) -> Value {
    let non_null = || {
        input.iter().filter_map(move |(tuple, count)| {
            let value = &tuple[position?];
            (!value.is_null() && *count > 0).then_some((value, *count))
        })
    };
    match aggregate.function {
        AggregateFn::Count => Value::Int(match position {
            None => input.iter().map(|(_, count)| *count as i64).sum(),
            Some(_) => non_null().map(|(_, count)| count as i64).sum(),
        }),
        AggregateFn::Sum if aggregate.field_type == Some(FieldType::Int) => {
            let mut seen = false;
            let mut sum: i128 = 0;
            for (value, count) in non_null() {
                if let Value::Int(v) = value {
                    seen = true;
                    sum += i128::from(*v) * count as i128;
                }
            }
            if seen {
                Value::BigInt(sum)
            } else {
                Value::Null
            }
        }
        AggregateFn::Sum => float_sum(non_null()).map_or(Value::Null, |(sum, _)| Value::Float(sum)),
        AggregateFn::Avg if aggregate.field_type == Some(FieldType::Int) => {
            // Exact integer sum first, so the average does not depend on the order of values.
            let mut count: i128 = 0;
            let mut sum: i128 = 0;
            for (value, n) in non_null() {
                if let Value::Int(v) = value {
                    count += n as i128;
                    sum += i128::from(*v) * n as i128;
                }
            }
            if count == 0 {
                Value::Null
            } else {
                Value::Float(sum as f64 / count as f64)
            }
        }
        AggregateFn::Avg => float_sum(non_null())
            .map_or(Value::Null, |(sum, count)| Value::Float(sum / count as f64)),
        AggregateFn::Min => non_null()
            .map(|(v, _)| v)
            .min()
            .cloned()
            .unwrap_or(Value::Null),
        AggregateFn::Max => non_null()
            .map(|(v, _)| v)
            .max()
            .cloned()
            .unwrap_or(Value::Null),
        AggregateFn::CountDistinct => {
            let mut values: Vec<&Value> = non_null().map(|(v, _)| v).collect();
            values.sort_unstable();
            values.dedup();
            Value::Int(values.len() as i64)
        }
    }
}

/// Sum and count of float-convertible values, or `None` when there are none.
fn float_sum<'a>(values: impl Iterator<Item = (&'a Value, isize)>) -> Option<(f64, i64)> {
    let mut total = None;
    for (value, count) in values {
        if let Some(v) = value.as_f64() {
            let (sum, n) = total.get_or_insert((0.0, 0));
            *sum += v * count as f64;
            *n += count as i64;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(function: AggregateFn, field_type: Option<FieldType>) -> AggregateSpec {
        AggregateSpec {
            column: "c".into(),
            function,
            field: field_type.map(|_| 0),
            field_name: field_type.map(|_| "f".to_owned()),
            field_type,
        }
    }

    #[test]
    fn aggregates_follow_sql_null_rules_and_multiplicities() {
        let rows = [vec![Value::Int(3)], vec![Value::Int(5)], vec![Value::Null]];
        let input: Vec<(&Vec<Value>, isize)> = vec![(&rows[2], 1), (&rows[0], 2), (&rows[1], 1)];
        let int = Some(FieldType::Int);
        let all = [
            spec(AggregateFn::Count, None),
            spec(AggregateFn::Count, int),
            spec(AggregateFn::Sum, int),
            spec(AggregateFn::Min, int),
            spec(AggregateFn::Max, int),
            spec(AggregateFn::Avg, int),
            spec(AggregateFn::CountDistinct, int),
        ];
        let positions = [None, Some(0), Some(0), Some(0), Some(0), Some(0), Some(0)];
        assert_eq!(
            compute(&all, &positions, &input),
            vec![
                Value::Int(4),
                Value::Int(3),
                Value::BigInt(11),
                Value::Int(3),
                Value::Int(5),
                Value::Float(11.0 / 3.0),
                Value::Int(2),
            ]
        );
        let nulls: Vec<(&Vec<Value>, isize)> = vec![(&rows[2], 3)];
        assert_eq!(
            compute(&all[2..6], &positions[2..6], &nulls),
            vec![Value::Null; 4]
        );
    }
}
