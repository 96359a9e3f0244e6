//! Views: what the pipeline file declares (`ViewConfig`) and its validated form (`ViewSpec`),
//! which knows its table's columns and how to compute its aggregates.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::aggregate::{AggregateFn, AggregateSpec};
use crate::duration::HumanDuration;
use crate::error::DataflowError;
use crate::filter::Filter;
use crate::record::Schema;
use crate::value::FieldType;
use crate::window::{WindowConfig, WindowKind};

/// `[[views]]` of the pipeline file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ViewConfig {
    /// The DuckDB table holding the view.
    pub name: String,
    /// The `name` of the source it reads (may be left out when there is one source).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Only records for which this holds, e.g. `"entries > 0 and division = 'IRT'"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default)]
    pub group_by: Vec<String>,
    /// Left out: one running aggregate per group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<WindowConfig>,
    /// How long after its end (in event time) a window still accepts late records.
    #[serde(default = "zero")]
    pub allowed_lateness: HumanDuration,
    #[serde(default)]
    pub emit: EmitMode,
    pub aggregates: Vec<AggregateConfig>,
    /// Also keep the view's history: the warehouse appends every row change to the table
    /// `<name>__changes`, so the view can be queried as of any snapshot. Declared per view, in
    /// the pipeline's definition, so that a change table covers its view from the warehouse's
    /// first snapshot (turning it on for a warehouse that has snapshots is refused like any
    /// other change of definition). Serialized only when on, so that the definitions, and the
    /// fingerprints, of warehouses written before change tables existed stay the same.
    #[serde(default, skip_serializing_if = "is_false")]
    pub changes: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn zero() -> HumanDuration {
    HumanDuration(std::time::Duration::ZERO)
}

/// `emit = "update" | "final"`: Spark's update and append output modes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EmitMode {
    /// Every snapshot shows open windows as they are so far (`is_final = false`).
    #[default]
    Update,
    /// A window's row appears once, when the window is final.
    Final,
}

/// `{ column = "entries", fn = "sum", field = "entries" }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    /// Output column name.
    pub column: String,
    #[serde(rename = "fn")]
    pub function: AggregateFn,
    /// The input field (`count` without one counts records).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// One column of a view's table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    pub sql_type: &'static str,
    pub nullable: bool,
}

impl fmt::Display for Column {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.name, self.sql_type)?;
        if !self.nullable {
            f.write_str(" NOT NULL")?;
        }
        Ok(())
    }
}

/// What two views must agree on to share one arrangement of their input: the same records,
/// grouped and windowed the same way.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ArrangementKey {
    pub source: usize,
    pub filter: Option<String>,
    pub group_by: Vec<usize>,
    pub window: WindowKind,
    pub allowed_lateness: i64,
}

/// A validated view.
#[derive(Clone, Debug)]
pub struct ViewSpec {
    pub name: String,
    pub source: usize,
    pub filter: Option<Filter>,
    /// Indices of the group fields in the source schema.
    pub group_by: Vec<usize>,
    pub window: WindowKind,
    pub allowed_lateness: i64,
    pub emit: EmitMode,
    pub aggregates: Vec<AggregateSpec>,
    /// The table's columns: group fields, `window_start`/`window_end` (windowed views),
    /// aggregates, `is_final` (windowed views).
    pub columns: Vec<Column>,
    /// The first `key_len` columns identify a row: the group fields and `window_start`.
    pub key_len: usize,
    /// Whether the warehouse keeps the view's history (see [`ViewConfig::changes`]).
    pub changes: bool,
}

/// The suffix of a view's change table (`<view>__changes`), which no view name may end with.
pub const CHANGES_SUFFIX: &str = "__changes";

/// Table and column names are plain identifiers, so they need no quoting in analysts' SQL.
pub fn check_identifier(what: &str, name: &str) -> Result<(), DataflowError> {
    let mut chars = name.chars();
    let valid = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(DataflowError::InvalidView(format!(
            "{what} {name:?} is not a plain identifier (letters, digits, _; not starting with a digit)"
        )))
    }
}

impl ViewSpec {
    /// Validates a view against the schema of its source (`source` is its index).
    pub fn new(
        config: &ViewConfig,
        source: usize,
        schema: &Schema,
    ) -> Result<ViewSpec, DataflowError> {
        let invalid = |detail: String| DataflowError::InvalidView(detail);
        check_identifier("view name", &config.name)?;
        if config.name.starts_with('_') {
            return Err(invalid(format!(
                "view name {:?} starts with `_`, which is reserved for Tidewater's own tables",
                config.name
            )));
        }
        if config.name.to_ascii_lowercase().ends_with(CHANGES_SUFFIX) {
            return Err(invalid(format!(
                "view name {:?} ends with `{CHANGES_SUFFIX}`, which is reserved for change tables",
                config.name
            )));
        }
        let filter = config
            .filter
            .as_deref()
            .map(|text| Filter::parse(text, schema))
            .transpose()?;
        let window = WindowKind::new(config.window.as_ref())?;
        // A running aggregate never closes, so neither of these could ever take effect.
        if !window.is_windowed() && config.emit == EmitMode::Final {
            return Err(invalid(
                "emit = \"final\" needs a window: a view without one is a running aggregate that never becomes final".to_owned(),
            ));
        }
        if !window.is_windowed() && !config.allowed_lateness.0.is_zero() {
            return Err(invalid(
                "allowed_lateness needs a window: a view without one never closes, so every record counts".to_owned(),
            ));
        }
        if config.aggregates.is_empty() {
            return Err(invalid("a view needs at least one aggregate".to_owned()));
        }

        let mut columns = Vec::new();
        let mut group_by = Vec::new();
        for name in &config.group_by {
            let index = schema.index_of(name).ok_or_else(|| {
                invalid(format!("group_by: no field `{name}` in the source schema"))
            })?;
            let field = &schema.fields()[index];
            group_by.push(index);
            columns.push(Column {
                name: name.clone(),
                sql_type: field.field_type.sql_type(),
                nullable: field.nullable,
            });
        }
        if window.is_windowed() {
            for name in ["window_start", "window_end"] {
                columns.push(Column {
                    name: name.to_owned(),
                    sql_type: FieldType::Timestamp.sql_type(),
                    nullable: false,
                });
            }
        }
        let key_len = group_by.len() + usize::from(window.is_windowed());
        let mut aggregates = Vec::new();
        for aggregate in &config.aggregates {
            check_identifier("aggregate column", &aggregate.column)?;
            let spec = AggregateSpec::new(aggregate, schema)?;
            columns.push(Column {
                name: aggregate.column.clone(),
                sql_type: spec.sql_type(),
                nullable: spec.nullable(),
            });
            aggregates.push(spec);
        }
        if window.is_windowed() {
            columns.push(Column {
                name: "is_final".to_owned(),
                sql_type: "BOOLEAN",
                nullable: false,
            });
        }
        for (i, column) in columns.iter().enumerate() {
            if columns[..i]
                .iter()
                .any(|c| c.name.eq_ignore_ascii_case(&column.name))
            {
                return Err(invalid(format!(
                    "two columns are named `{}` (group fields, window_start, window_end, aggregate columns and is_final share one table)",
                    column.name
                )));
            }
        }
        if config.changes {
            if let Some(column) = columns
                .iter()
                .find(|c| ["snapshot_id", "diff"].contains(&c.name.to_ascii_lowercase().as_str()))
            {
                return Err(invalid(format!(
                    "a column is named `{}`, which the change table (changes = true) has as its own column",
                    column.name
                )));
            }
        }
        Ok(ViewSpec {
            name: config.name.clone(),
            source,
            filter,
            group_by,
            window,
            allowed_lateness: config.allowed_lateness.micros(),
            emit: config.emit,
            aggregates,
            columns,
            key_len,
            changes: config.changes,
        })
    }

    pub fn arrangement_key(&self) -> ArrangementKey {
        ArrangementKey {
            source: self.source,
            filter: self.filter.as_ref().map(|f| f.text().to_owned()),
            group_by: self.group_by.clone(),
            window: self.window,
            allowed_lateness: self.allowed_lateness,
        }
    }

    /// Every source field the view reads: filter, grouping and aggregates (not the event time).
    pub fn read_fields(&self) -> Vec<usize> {
        let mut fields: Vec<usize> = self.filter.as_ref().map(Filter::fields).unwrap_or_default();
        fields.extend(&self.group_by);
        fields.extend(self.input_fields());
        fields.sort_unstable();
        fields.dedup();
        fields
    }

    /// Source fields the aggregates read, in first-use order.
    pub fn input_fields(&self) -> Vec<usize> {
        let mut fields = Vec::new();
        for field in self.aggregates.iter().filter_map(|a| a.field) {
            if !fields.contains(&field) {
                fields.push(field);
            }
        }
        fields
    }

    /// `CREATE TABLE` for this view.
    pub fn create_table_sql(&self) -> String {
        let columns: Vec<String> = self.columns.iter().map(|c| format!("    {c}")).collect();
        format!("CREATE TABLE {} (\n{}\n)", self.name, columns.join(",\n"))
    }

    /// One line: what the view maintains, for `tidewater run` and `check`.
    pub fn describe(&self) -> String {
        let window = match self.window {
            WindowKind::Global => "running aggregate".to_owned(),
            WindowKind::Hopping { size, slide } if size == slide => {
                format!("tumbling {}", micros_to_duration(size))
            }
            WindowKind::Hopping { size, slide } => format!(
                "hopping {} every {}",
                micros_to_duration(size),
                micros_to_duration(slide)
            ),
            WindowKind::Session { gap } => format!("sessions, gap {}", micros_to_duration(gap)),
        };
        let mut line = if self.group_by.is_empty() {
            window
        } else {
            let groups: Vec<&str> = self.columns[..self.group_by.len()]
                .iter()
                .map(|c| c.name.as_str())
                .collect();
            format!("group by {}, {window}", groups.join(", "))
        };
        if self.window.is_windowed() {
            line.push_str(&format!(
                ", allowed lateness {}, emit {}",
                micros_to_duration(self.allowed_lateness),
                match self.emit {
                    EmitMode::Update => "update",
                    EmitMode::Final => "final",
                }
            ));
        }
        if let Some(filter) = &self.filter {
            line.push_str(&format!(", where {}", filter.text()));
        }
        let aggregates: Vec<String> = self.aggregates.iter().map(|a| a.describe()).collect();
        line.push_str(&format!(": {}", aggregates.join(", ")));
        line
    }
}

fn micros_to_duration(micros: i64) -> HumanDuration {
    HumanDuration(std::time::Duration::from_micros(micros.max(0) as u64))
}
