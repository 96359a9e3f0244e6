//! The one error type of the dataflows crate.

use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum DataflowError {
    /// The payload is not a JSON object of the expected shape (serde's message names the field,
    /// the expected type and the column).
    #[error("malformed reading: {0}")]
    Malformed(String),
    #[error("invalid timestamp in field `{field}`: {value:?} is not RFC 3339 ({reason})")]
    InvalidTimestamp {
        field: &'static str,
        value: String,
        reason: String,
    },
    #[error("invalid value in field `{field}`: {reason}")]
    InvalidValue { field: &'static str, reason: String },
    #[error("field `{field}`: {reason}")]
    Field { field: String, reason: String },
    #[error("schema: {0}")]
    InvalidSchema(String),
    #[error("filter {text:?}, column {column}: {reason}")]
    Filter {
        text: String,
        column: usize,
        reason: String,
    },
    #[error("invalid window: {0}")]
    InvalidWindow(String),
    #[error("{0}")]
    InvalidView(String),
    #[error("invalid duration {value:?}: {reason} (write e.g. 500ms, 1s, 15m, 1h, 1d)")]
    InvalidDuration { value: String, reason: String },
}
