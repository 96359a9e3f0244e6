//! Declared record formats (`json`, header-less `csv`) and their decoder.

use std::borrow::Cow;
use std::fmt;

use chrono::NaiveDateTime;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::decode::parse_rfc3339;
use crate::error::DataflowError;
use crate::reading::EventTime;
use crate::value::{FieldType, Value};

mod scan;

/// `format = "json" | "csv"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One JSON object per message; fields not declared are ignored.
    Json,
    /// One header-less CSV line per message, columns in declaration order.
    Csv,
}

/// One declared field: `{ name = "entries", type = "int", nullable = false }`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldConfig {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// Whether the field may be missing or null (default false: such a record is rejected).
    #[serde(default)]
    pub nullable: bool,
}

/// How timestamp fields are written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TimestampFormat {
    /// `2024-03-04T08:15:00Z`, any offset.
    Rfc3339,
    /// Seconds since the Unix epoch (a number; fractions allowed).
    EpochSeconds,
    /// Milliseconds since the Unix epoch.
    EpochMillis,
    /// A chrono `strftime` pattern such as `%Y-%m-%d %H:%M:%S`, read as UTC.
    Pattern(String),
}

impl TimestampFormat {
    pub fn parse(text: &str) -> Result<Self, String> {
        match text {
            "rfc3339" => Ok(TimestampFormat::Rfc3339),
            "epoch_seconds" => Ok(TimestampFormat::EpochSeconds),
            "epoch_millis" => Ok(TimestampFormat::EpochMillis),
            pattern if pattern.contains('%') => {
                let items = chrono::format::StrftimeItems::new(pattern);
                if items
                    .clone()
                    .any(|item| matches!(item, chrono::format::Item::Error))
                {
                    return Err(format!("{pattern:?} is not a valid strftime pattern"));
                }
                Ok(TimestampFormat::Pattern(pattern.to_owned()))
            }
            other => Err(format!(
                "unknown timestamp format {other:?}: use rfc3339, epoch_seconds, epoch_millis or a pattern like \"%Y-%m-%d %H:%M:%S\""
            )),
        }
    }

    fn name(&self) -> &str {
        match self {
            TimestampFormat::Rfc3339 => "rfc3339",
            TimestampFormat::EpochSeconds => "epoch_seconds",
            TimestampFormat::EpochMillis => "epoch_millis",
            TimestampFormat::Pattern(p) => p,
        }
    }

    /// Parses a timestamp written as text.
    fn parse_text(&self, field: &str, text: &str) -> Result<EventTime, DataflowError> {
        let invalid = |reason: String| DataflowError::Field {
            field: field.to_owned(),
            reason: format!("{text:?} is not a {} timestamp ({reason})", self.name()),
        };
        match self {
            TimestampFormat::Rfc3339 => parse_rfc3339("", text).map_err(|e| match e {
                DataflowError::InvalidTimestamp { reason, .. } => invalid(reason),
                other => invalid(other.to_string()),
            }),
            TimestampFormat::Pattern(pattern) => NaiveDateTime::parse_from_str(text, pattern)
                .map(|t| t.and_utc().timestamp_micros())
                .map_err(|e| invalid(e.to_string())),
            TimestampFormat::EpochSeconds => match text.parse::<i64>() {
                Ok(seconds) => self.micros_of_seconds(field, seconds),
                Err(_) => text
                    .parse::<f64>()
                    .map_err(|e| invalid(e.to_string()))
                    .and_then(|s| self.micros_of_float_seconds(field, s)),
            },
            TimestampFormat::EpochMillis => text
                .parse::<i64>()
                .map_err(|e| invalid(e.to_string()))
                .and_then(|ms| self.micros_of_millis(field, ms)),
        }
    }

    fn micros_of_seconds(&self, field: &str, seconds: i64) -> Result<EventTime, DataflowError> {
        seconds
            .checked_mul(1_000_000)
            .ok_or_else(|| out_of_range(field))
    }

    fn micros_of_millis(&self, field: &str, ms: i64) -> Result<EventTime, DataflowError> {
        ms.checked_mul(1_000).ok_or_else(|| out_of_range(field))
    }

    fn micros_of_float_seconds(
        &self,
        field: &str,
        seconds: f64,
    ) -> Result<EventTime, DataflowError> {
        let micros = (seconds * 1e6).round();
        if micros.is_finite() && micros.abs() < 9.2e18 {
            Ok(micros as i64)
        } else {
            Err(out_of_range(field))
        }
    }
}

fn out_of_range(field: &str) -> DataflowError {
    DataflowError::Field {
        field: field.to_owned(),
        reason: "timestamp out of range".to_owned(),
    }
}

impl Serialize for TimestampFormat {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for TimestampFormat {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        TimestampFormat::parse(&text).map_err(de::Error::custom)
    }
}

/// A validated schema: the decoder of one source's messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schema {
    format: Format,
    fields: Vec<FieldConfig>,
    event_time: usize,
    timestamps: TimestampFormat,
    /// Per field: whether decoding keeps its value. A string field nobody reads is still
    /// checked (present, a string, not NULL unless nullable) but comes out NULL, so that no
    /// record allocates strings it never uses (see [`Schema::keep_only`]).
    kept: Vec<bool>,
    /// Per field: whether its name appears in JSON as it is (no character needs escaping), so
    /// the scanner can match a key by comparing bytes.
    plain_names: Vec<bool>,
}

impl Schema {
    pub fn new(
        format: Format,
        fields: Vec<FieldConfig>,
        event_time: &str,
        timestamps: TimestampFormat,
    ) -> Result<Schema, DataflowError> {
        let invalid = |detail: String| DataflowError::InvalidSchema(detail);
        if fields.is_empty() {
            return Err(invalid("declare at least one field".to_owned()));
        }
        for (i, field) in fields.iter().enumerate() {
            if field.name.is_empty() {
                return Err(invalid(format!("field {} has an empty name", i + 1)));
            }
            if fields[..i].iter().any(|f| f.name == field.name) {
                return Err(invalid(format!("field `{}` is declared twice", field.name)));
            }
        }
        let index = fields
            .iter()
            .position(|f| f.name == event_time)
            .ok_or_else(|| invalid(format!("event_time: no field `{event_time}` in the schema")))?;
        let field = &fields[index];
        if field.field_type != FieldType::Timestamp || field.nullable {
            return Err(invalid(format!(
                "event_time: field `{event_time}` must be a non-nullable timestamp, it is {}{}",
                if field.nullable { "a nullable " } else { "" },
                field.field_type
            )));
        }
        let kept = vec![true; fields.len()];
        let plain_names = fields
            .iter()
            .map(|f| !f.name.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20))
            .collect();
        Ok(Schema {
            format,
            fields,
            event_time: index,
            timestamps,
            kept,
            plain_names,
        })
    }

    pub fn fields(&self) -> &[FieldConfig] {
        &self.fields
    }

    /// Keeps the decoded values of `fields` (and of the event time) only: JSON string fields
    /// not listed are validated as usual and then decoded as NULL, without copying them.
    pub fn keep_only(&mut self, fields: &[usize]) {
        for (index, kept) in self.kept.iter_mut().enumerate() {
            *kept = index == self.event_time || fields.contains(&index);
        }
    }

    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// [`Schema::index_of`], looking at field `guess` first.
    fn position_from(&self, name: &str, guess: usize) -> Option<usize> {
        match self.fields.get(guess) {
            Some(field) if field.name == name => Some(guess),
            _ => self.index_of(name),
        }
    }

    /// Whether field `index` is a string whose value nobody reads: a string value of it is
    /// checked, then decoded as NULL without being copied.
    fn skips_strings_of(&self, index: usize) -> bool {
        !self.kept[index] && self.fields[index].field_type == FieldType::String
    }

    /// What the JSON value `scalar` of field `index` decodes to.
    fn slot_of(&self, index: usize, scalar: JsonScalar<'_>) -> Slot {
        match scalar {
            // Valid, but nobody reads it: not copied (borrowed from the payload unless it
            // had escapes).
            JsonScalar::Str(_) if self.skips_strings_of(index) => Slot::Skipped,
            scalar => match scalar.into_value(&self.fields[index], &self.timestamps) {
                Ok(value) => Slot::Value(value),
                Err(reason) => Slot::Error(reason),
            },
        }
    }

    pub fn event_time_index(&self) -> usize {
        self.event_time
    }

    pub fn format(&self) -> Format {
        self.format
    }

    pub fn timestamp_format(&self) -> &TimestampFormat {
        &self.timestamps
    }

    /// Decodes one message into one value per declared field (in declaration order) and its
    /// event time.
    pub fn decode(&self, payload: &[u8]) -> Result<(Vec<Value>, EventTime), DataflowError> {
        let row = match self.format {
            Format::Json => self.decode_json(payload)?,
            Format::Csv => self.decode_csv(payload)?,
        };
        match row[self.event_time] {
            Value::Timestamp(t) => Ok((row, t)),
            _ => Err(DataflowError::Field {
                field: self.fields[self.event_time].name.clone(),
                reason: "missing event time".to_owned(),
            }),
        }
    }

    fn decode_json(&self, payload: &[u8]) -> Result<Vec<Value>, DataflowError> {
        let row = match scan::flat_object(self, payload) {
            Some(row) => row,
            None => self.deserialize_json(payload)?,
        };
        self.finish_json_row(row)
    }

    /// The row of a JSON object's slots: missing fields are NULL, and a field that is NULL
    /// but not nullable, or had a value of the wrong type, fails the record.
    fn finish_json_row(&self, mut row: Vec<Slot>) -> Result<Vec<Value>, DataflowError> {
        for (field, value) in self.fields.iter().zip(row.iter_mut()) {
            if let Slot::Missing = value {
                *value = Slot::Value(Value::Null);
            }
            if let (Slot::Value(Value::Null), false) = (&*value, field.nullable) {
                return Err(DataflowError::Field {
                    field: field.name.clone(),
                    reason: "missing or null, and the field is not nullable".to_owned(),
                });
            }
            if let Slot::Error(reason) = value {
                return Err(DataflowError::Field {
                    field: field.name.clone(),
                    reason: std::mem::take(reason),
                });
            }
        }
        Ok(row
            .into_iter()
            .map(|slot| match slot {
                Slot::Value(v) => v,
                _ => Value::Null,
            })
            .collect())
    }

    /// The general JSON path (serde_json), which also words every syntax error.
    fn deserialize_json(&self, payload: &[u8]) -> Result<Vec<Slot>, DataflowError> {
        let mut deserializer = serde_json::Deserializer::from_slice(payload);
        let row = RowSeed { schema: self }
            .deserialize(&mut deserializer)
            .map_err(|e| DataflowError::Malformed(e.to_string()))?;
        deserializer
            .end()
            .map_err(|e| DataflowError::Malformed(e.to_string()))?;
        Ok(row)
    }

    fn decode_csv(&self, payload: &[u8]) -> Result<Vec<Value>, DataflowError> {
        let text = std::str::from_utf8(payload)
            .map_err(|e| DataflowError::Malformed(format!("not UTF-8: {e}")))?;
        let text = text
            .strip_suffix("\r\n")
            .or_else(|| text.strip_suffix('\n'))
            .unwrap_or(text);
        let columns = split_csv(text)?;
        if columns.len() != self.fields.len() {
            return Err(DataflowError::Malformed(format!(
                "expected {} CSV columns, found {}",
                self.fields.len(),
                columns.len()
            )));
        }
        self.fields
            .iter()
            .zip(columns)
            .map(|(field, (column, quoted))| self.csv_value(field, &column, quoted))
            .collect()
    }

    fn csv_value(
        &self,
        field: &FieldConfig,
        text: &str,
        quoted: bool,
    ) -> Result<Value, DataflowError> {
        let bad = |expected: &str| DataflowError::Field {
            field: field.name.clone(),
            reason: format!("expected {expected}, found {text:?}"),
        };
        if text.is_empty() && !(quoted && field.field_type == FieldType::String) {
            if field.nullable {
                return Ok(Value::Null);
            }
            if field.field_type != FieldType::String {
                return Err(DataflowError::Field {
                    field: field.name.clone(),
                    reason: "empty, and the field is not nullable".to_owned(),
                });
            }
        }
        Ok(match field.field_type {
            FieldType::String => Value::String(text.to_owned()),
            FieldType::Int => Value::Int(text.trim().parse().map_err(|_| bad("an int"))?),
            FieldType::Float => Value::Float(text.trim().parse().map_err(|_| bad("a float"))?),
            FieldType::Bool => match text.trim().to_ascii_lowercase().as_str() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(bad("true or false")),
            },
            FieldType::Timestamp => {
                Value::Timestamp(self.timestamps.parse_text(&field.name, text.trim())?)
            }
        })
    }
}

/// Splits one CSV line (RFC 4180 quoting: `"a,b"`, `""` inside quotes). Returns each column
/// and whether it was quoted.
fn split_csv(line: &str) -> Result<Vec<(String, bool)>, DataflowError> {
    let mut columns = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        let mut column = String::new();
        let quoted = chars.peek() == Some(&'"');
        if quoted {
            chars.next();
            loop {
                match chars.next() {
                    None => {
                        return Err(DataflowError::Malformed(
                            "unterminated quoted CSV column".to_owned(),
                        ))
                    }
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        column.push('"');
                    }
                    Some('"') => break,
                    Some(c) => column.push(c),
                }
            }
            if !matches!(chars.peek(), None | Some(',')) {
                return Err(DataflowError::Malformed(
                    "text after a closing quote in a CSV column".to_owned(),
                ));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                if c == '"' {
                    return Err(DataflowError::Malformed(
                        "a quote inside an unquoted CSV column".to_owned(),
                    ));
                }
                column.push(c);
                chars.next();
            }
        }
        columns.push((column, quoted));
        match chars.next() {
            Some(',') => continue,
            _ => return Ok(columns),
        }
    }
}

/// A field's slot while a JSON object is read.
enum Slot {
    Missing,
    Value(Value),
    /// A valid, non-NULL value of a field whose value is not kept (decoded as NULL).
    Skipped,
    /// The value had the wrong type (reported with the field's name after the object is read).
    Error(String),
}

struct RowSeed<'a> {
    schema: &'a Schema,
}

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Vec<Slot>;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Vec<Slot>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut row: Vec<Slot> = (0..self.schema.fields.len())
            .map(|_| Slot::Missing)
            .collect();
        let mut guess = 0;
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match self.schema.position_from(&key, guess) {
                Some(i) => {
                    row[i] = self.schema.slot_of(i, map.next_value::<JsonScalar<'de>>()?);
                    guess = i + 1;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(row)
    }
}

/// A JSON value as a field reads it (objects and arrays are kept only as "wrong type").
enum JsonScalar<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Cow<'a, str>),
    Other(&'static str),
}

impl<'de> Deserialize<'de> for JsonScalar<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;
        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = JsonScalar<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(JsonScalar::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
                Ok(JsonScalar::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
                Ok(JsonScalar::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
                Ok(i64::try_from(v).map_or(
                    JsonScalar::Other("an integer beyond 64 bits"),
                    JsonScalar::Int,
                ))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
                Ok(JsonScalar::Float(v))
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(JsonScalar::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(JsonScalar::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(JsonScalar::Str(Cow::Owned(v)))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(JsonScalar::Other("an array"))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(JsonScalar::Other("an object"))
            }
        }
        deserializer.deserialize_any(ScalarVisitor)
    }
}

impl JsonScalar<'_> {
    fn kind(&self) -> &'static str {
        match self {
            JsonScalar::Null => "null",
            JsonScalar::Bool(_) => "a bool",
            JsonScalar::Int(_) => "an integer",
            JsonScalar::Float(_) => "a float",
            JsonScalar::Str(_) => "a string",
            JsonScalar::Other(kind) => kind,
        }
    }

    /// The value of `field`, or why this JSON value cannot be one.
    fn into_value(
        self,
        field: &FieldConfig,
        timestamps: &TimestampFormat,
    ) -> Result<Value, String> {
        let mismatch = |scalar: &JsonScalar<'_>| {
            format!(
                "expected {}, found {}",
                expected(field.field_type, timestamps),
                scalar.kind()
            )
        };
        Ok(match (field.field_type, self) {
            (_, JsonScalar::Null) => Value::Null,
            (FieldType::String, JsonScalar::Str(s)) => Value::String(s.into_owned()),
            (FieldType::Int, JsonScalar::Int(v)) => Value::Int(v),
            (FieldType::Float, JsonScalar::Float(v)) => Value::Float(v),
            (FieldType::Float, JsonScalar::Int(v)) => Value::Float(v as f64),
            (FieldType::Bool, JsonScalar::Bool(v)) => Value::Bool(v),
            (FieldType::Timestamp, scalar) => {
                let name = &field.name;
                let micros = match (timestamps, scalar) {
                    (
                        TimestampFormat::Rfc3339 | TimestampFormat::Pattern(_),
                        JsonScalar::Str(s),
                    ) => timestamps.parse_text(name, &s),
                    (TimestampFormat::EpochSeconds, JsonScalar::Int(v)) => {
                        timestamps.micros_of_seconds(name, v)
                    }
                    (TimestampFormat::EpochSeconds, JsonScalar::Float(v)) => {
                        timestamps.micros_of_float_seconds(name, v)
                    }
                    (TimestampFormat::EpochMillis, JsonScalar::Int(v)) => {
                        timestamps.micros_of_millis(name, v)
                    }
                    (_, scalar) => return Err(mismatch(&scalar)),
                };
                Value::Timestamp(micros.map_err(|e| match e {
                    DataflowError::Field { reason, .. } => reason,
                    other => other.to_string(),
                })?)
            }
            (_, scalar) => return Err(mismatch(&scalar)),
        })
    }
}

fn expected(field_type: FieldType, timestamps: &TimestampFormat) -> String {
    match field_type {
        FieldType::String => "a string".to_owned(),
        FieldType::Int => "an int".to_owned(),
        FieldType::Float => "a float".to_owned(),
        FieldType::Bool => "a bool".to_owned(),
        FieldType::Timestamp => match timestamps {
            TimestampFormat::EpochSeconds | TimestampFormat::EpochMillis => {
                format!("a number ({})", timestamps.name())
            }
            _ => format!("a string ({})", timestamps.name()),
        },
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn field(name: &str, field_type: FieldType, nullable: bool) -> FieldConfig {
        FieldConfig {
            name: name.to_owned(),
            field_type,
            nullable,
        }
    }

    pub(crate) fn schema(format: Format, timestamps: TimestampFormat) -> Schema {
        Schema::new(
            format,
            vec![
                field("station", FieldType::String, false),
                field("ts", FieldType::Timestamp, false),
                field("entries", FieldType::Int, false),
                field("ratio", FieldType::Float, true),
                field("audit", FieldType::Bool, true),
            ],
            "ts",
            timestamps,
        )
        .unwrap()
    }

    const T0: i64 = 1_709_540_100_000_000; // 2024-03-04 08:15:00 UTC

    #[test]
    fn json_decodes_every_type_and_ignores_unknown_fields() {
        let s = schema(Format::Json, TimestampFormat::Rfc3339);
        let (row, ts) = s
            .decode(br#"{"station":"A \"B\"","ts":"2024-03-04T08:15:00Z","entries":3,"ratio":2,"audit":true,"extra":[1,{}]}"#)
            .unwrap();
        assert_eq!(ts, T0);
        assert_eq!(
            row,
            vec![
                Value::String("A \"B\"".into()),
                Value::Timestamp(T0),
                Value::Int(3),
                Value::Float(2.0),
                Value::Bool(true)
            ]
        );
        let (row, _) = s
            .decode(br#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":3,"ratio":null}"#)
            .unwrap();
        assert_eq!(row[3..], [Value::Null, Value::Null]);
    }

    #[test]
    fn a_string_field_nobody_reads_is_checked_but_not_kept() {
        let mut s = schema(Format::Json, TimestampFormat::Rfc3339);
        s.keep_only(&[2]);
        let (row, _) = s
            .decode(br#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":3}"#)
            .unwrap();
        assert_eq!(row[..3], [Value::Null, Value::Timestamp(T0), Value::Int(3)]);
        // Still a non-nullable string: missing, null or a number is rejected as before.
        for bad in [
            &br#"{"ts":"2024-03-04T08:15:00Z","entries":3}"#[..],
            br#"{"station":null,"ts":"2024-03-04T08:15:00Z","entries":3}"#,
            br#"{"station":7,"ts":"2024-03-04T08:15:00Z","entries":3}"#,
        ] {
            let error = s.decode(bad).unwrap_err().to_string();
            assert!(error.contains("station"), "{error}");
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        let s = schema(Format::Json, TimestampFormat::Rfc3339);
        for (payload, expected) in [
            (
                r#"{"station":"A","ts":"2024-03-04T08:15:00Z"}"#,
                "field `entries`: missing",
            ),
            (
                r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":"3"}"#,
                "field `entries`: expected an int, found a string",
            ),
            (
                r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":1.5}"#,
                "found a float",
            ),
            (
                r#"{"station":"A","ts":"yesterday","entries":1}"#,
                "field `ts`",
            ),
            (
                r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":1,"audit":"yes"}"#,
                "field `audit`: expected a bool",
            ),
            (
                r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":1} trailing"#,
                "malformed",
            ),
            ("[1,2]", "malformed"),
            ("", "malformed"),
        ] {
            let err = s.decode(payload.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{payload}: {err}");
        }
        assert!(s.decode(&[0xff, 0xfe]).is_err());
    }

    #[test]
    fn every_timestamp_format() {
        let cases = [
            (TimestampFormat::Rfc3339, "\"2024-03-04T03:15:00-05:00\""),
            (TimestampFormat::EpochSeconds, "1709540100"),
            (TimestampFormat::EpochSeconds, "1709540100.0"),
            (TimestampFormat::EpochMillis, "1709540100000"),
            (
                TimestampFormat::parse("%Y-%m-%d %H:%M:%S").unwrap(),
                "\"2024-03-04 08:15:00\"",
            ),
        ];
        for (format, ts) in cases {
            let s = schema(Format::Json, format);
            let payload = format!(r#"{{"station":"A","ts":{ts},"entries":1}}"#);
            assert_eq!(s.decode(payload.as_bytes()).unwrap().1, T0, "{ts}");
        }
        assert!(TimestampFormat::parse("iso").is_err());
        let csv = schema(Format::Csv, TimestampFormat::EpochMillis);
        assert_eq!(csv.decode(b"A,1709540100000,1,,").unwrap().1, T0);
    }

    #[test]
    fn csv_quoting_nulls_and_column_counts() {
        let s = schema(Format::Csv, TimestampFormat::Rfc3339);
        let (row, _) = s
            .decode(b"\"59 ST, \"\"N\"\"\",2024-03-04T08:15:00Z,7,0.5,TRUE\r\n")
            .unwrap();
        assert_eq!(row[0], Value::String("59 ST, \"N\"".into()));
        assert_eq!(
            row[2..],
            [Value::Int(7), Value::Float(0.5), Value::Bool(true)]
        );
        let (row, _) = s.decode(b",2024-03-04T08:15:00Z,7,,").unwrap();
        assert_eq!(row[0], Value::String(String::new()));
        assert_eq!(row[3..], [Value::Null, Value::Null]);
        for (payload, expected) in [
            (
                "A,2024-03-04T08:15:00Z,7",
                "expected 5 CSV columns, found 3",
            ),
            ("A,2024-03-04T08:15:00Z,,,", "field `entries`: empty"),
            ("A,2024-03-04T08:15:00Z,x,,", "expected an int"),
            ("\"A,2024-03-04T08:15:00Z,1,,", "unterminated"),
        ] {
            let err = s.decode(payload.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{payload}: {err}");
        }
    }

    #[test]
    fn schema_validation() {
        let ts = || field("ts", FieldType::Timestamp, false);
        let new = |fields, event_time| {
            Schema::new(Format::Json, fields, event_time, TimestampFormat::Rfc3339)
        };
        assert!(new(vec![ts(), ts()], "ts")
            .unwrap_err()
            .to_string()
            .contains("twice"));
        assert!(new(vec![ts()], "time")
            .unwrap_err()
            .to_string()
            .contains("no field `time`"));
        let int = vec![field("ts", FieldType::Int, false)];
        assert!(new(int, "ts")
            .unwrap_err()
            .to_string()
            .contains("timestamp"));
    }

    #[test]
    fn reads_what_the_generator_writes() {
        let reading = crate::decode::decode_reading(
            br#"{"ca":"A002","unit":"R051","scp":"02-00-00","station":"59 ST","linename":"NQR456W","division":"BMT","ts":"2024-03-01T08:00:00Z","desc":"REGULAR","entries":12,"exits":7}"#,
        )
        .unwrap();
        let mut fields: Vec<FieldConfig> = [
            "ca", "unit", "scp", "station", "linename", "division", "desc",
        ]
        .iter()
        .map(|n| field(n, FieldType::String, false))
        .collect();
        fields.push(field("ts", FieldType::Timestamp, false));
        fields.push(field("entries", FieldType::Int, false));
        fields.push(field("exits", FieldType::Int, false));
        let s = Schema::new(Format::Json, fields, "ts", TimestampFormat::Rfc3339).unwrap();
        let (row, ts) = s.decode(reading.to_json().as_bytes()).unwrap();
        assert_eq!(ts, reading.ts);
        assert_eq!(row[8], Value::Int(12));
    }
}
