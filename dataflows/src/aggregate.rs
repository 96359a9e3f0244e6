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

/// Whether an aggregate can be computed from per-epoch partial aggregates ([`partial_of`])
/// exactly: counts, integer sums and averages (exact `i128` sums), minimum and maximum. Float
/// sums are not (their rounding would depend on how records fall into epochs), nor is
/// `count_distinct`.
pub fn combinable(aggregate: &AggregateSpec) -> bool {
    match aggregate.function {
        AggregateFn::Count | AggregateFn::Min | AggregateFn::Max => true,
        AggregateFn::Sum | AggregateFn::Avg => aggregate.field_type == Some(FieldType::Int),
        AggregateFn::CountDistinct => false,
    }
}

/// Values a partial aggregate keeps per input field: non-NULL count, integer sum, min, max.
const PARTIAL_WIDTH: usize = 4;

/// Where an input field's partial sits in a partial row: after the leading record count.
pub fn partial_position(field: usize) -> usize {
    1 + PARTIAL_WIDTH * field
}

/// The partial aggregate of one input tuple: `[records, then per field: non-NULL count,
/// integer sum (or NULL), min, max]`. Arrangements of combinable views hold one such row per
/// (window, group) and epoch instead of one row per record, so the work of an epoch grows with
/// the keys it touched, not with its records.
pub fn partial_of<'a>(values: impl IntoIterator<Item = &'a Value>) -> Vec<Value> {
    let values = values.into_iter();
    let mut partial = Vec::with_capacity(1 + PARTIAL_WIDTH * values.size_hint().0);
    partial.push(Value::Int(1));
    for value in values {
        let present = !value.is_null();
        partial.push(Value::Int(i64::from(present)));
        partial.push(match value {
            Value::Int(v) => Value::BigInt(i128::from(*v)),
            _ => Value::Null,
        });
        partial.push(value.clone());
        partial.push(value.clone());
    }
    partial
}

/// Adds one input tuple to a partial aggregate made by [`partial_of`].
pub fn fold_into_partial<'a>(partial: &mut [Value], values: impl IntoIterator<Item = &'a Value>) {
    if let Value::Int(records) = &mut partial[0] {
        *records += 1;
    }
    for (field, value) in values.into_iter().enumerate() {
        if value.is_null() {
            continue;
        }
        let at = partial_position(field);
        if let Value::Int(count) = &mut partial[at] {
            *count += 1;
        }
        if let Value::Int(v) = value {
            partial[at + 1] = match &partial[at + 1] {
                Value::BigInt(sum) => Value::BigInt(sum + i128::from(*v)),
                _ => Value::BigInt(i128::from(*v)),
            };
        }
        if partial[at + 2].is_null() || *value < partial[at + 2] {
            partial[at + 2] = value.clone();
        }
        if partial[at + 3].is_null() || *value > partial[at + 3] {
            partial[at + 3] = value.clone();
        }
    }
}

/// [`compute`] over partial rows ([`partial_of`]); `positions[i]` is the aggregate's input
/// field (an index of the tuples the partials were made from). Only for [`combinable`]
/// aggregates; a partial's multiplicity multiplies its counts and sums.
pub fn compute_partials(
    aggregates: &[AggregateSpec],
    positions: &[Option<usize>],
    input: &[(&Vec<Value>, isize)],
) -> Vec<Value> {
    let int = |value: &Value| match value {
        Value::Int(v) => i128::from(*v),
        Value::BigInt(v) => *v,
        _ => 0,
    };
    aggregates
        .iter()
        .zip(positions)
        .map(|(aggregate, position)| {
            let Some(field) = *position else {
                let records: i128 = input.iter().map(|(p, n)| int(&p[0]) * *n as i128).sum();
                return Value::Int(records as i64);
            };
            let at = partial_position(field);
            let present = || input.iter().filter(move |(p, n)| int(&p[at]) > 0 && *n > 0);
            let count: i128 = present().map(|(p, n)| int(&p[at]) * *n as i128).sum();
            let sum = || {
                present()
                    .map(|(p, n)| int(&p[at + 1]) * *n as i128)
                    .sum::<i128>()
            };
            match aggregate.function {
                AggregateFn::Count => Value::Int(count as i64),
                _ if count == 0 => Value::Null,
                AggregateFn::Sum => Value::BigInt(sum()),
                AggregateFn::Avg => Value::Float(sum() as f64 / count as f64),
                AggregateFn::Min => present()
                    .map(|(p, _)| &p[at + 2])
                    .min()
                    .cloned()
                    .unwrap_or(Value::Null),
                AggregateFn::Max => present()
                    .map(|(p, _)| &p[at + 3])
                    .max()
                    .cloned()
                    .unwrap_or(Value::Null),
                AggregateFn::CountDistinct => unreachable!("count_distinct is not combinable"),
            }
        })
        .collect()
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
        // The same through partials, split into two epochs' partial rows.
        let mut first = partial_of(&rows[0]);
        fold_into_partial(&mut first, &rows[2]);
        let second = partial_of(&rows[1]);
        let partials: Vec<(&Vec<Value>, isize)> = vec![(&first, 1), (&second, 1), (&first, 0)];
        let combinable_ones: Vec<usize> = (0..all.len()).filter(|&i| combinable(&all[i])).collect();
        assert_eq!(combinable_ones, vec![0, 1, 2, 3, 4, 5]);
        // `first` stands for rows 0 and 2, `second` for row 1: add row 0 once more.
        let again = partial_of(&rows[0]);
        let partials = [partials, vec![(&again, 1)]].concat();
        assert_eq!(
            compute_partials(&all[..6], &positions[..6], &partials),
            compute(&all[..6], &positions[..6], &input)
        );
        let nulls: Vec<(&Vec<Value>, isize)> = vec![(&rows[2], 3)];
        assert_eq!(
            compute(&all[2..6], &positions[2..6], &nulls),
            vec![Value::Null; 4]
        );
    }
}
