//! View filters: comparisons on fields combined with `and`, `or`, `not`.
//!
//! ```text
//! entries > 0 and (linename = 'NQR' or division <> 'IRT') and desc is not null
//! ```
//! Parsed and type-checked against the source schema once; evaluated with SQL's three-valued
//! logic (a comparison with NULL is unknown, and only rows for which the filter is true pass).

use std::cmp::Ordering;

use crate::decode::parse_rfc3339;
use crate::error::DataflowError;
use crate::record::Schema;
use crate::value::{FieldType, Value};

#[derive(Clone, Debug)]
pub struct Filter {
    text: String,
    expr: Expr,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Debug)]
enum Operand {
    Field(usize),
    Literal(Value),
}

#[derive(Clone, Debug)]
enum Expr {
    Or(Box<Expr>, Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Not(Box<Expr>),
    Compare(Operand, Op, Operand),
    IsNull(usize, bool),
}

impl Filter {
    pub fn parse(text: &str, schema: &Schema) -> Result<Filter, DataflowError> {
        let tokens = tokenize(text)?;
        let mut parser = Parser {
            text,
            tokens,
            next: 0,
            schema,
        };
        let expr = parser.or()?;
        if let Some((column, token)) = parser.peek() {
            return Err(parser.error(column, format!("unexpected {}", token.describe())));
        }
        Ok(Filter {
            text: text.to_owned(),
            expr,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    pub fn matches(&self, row: &[Value]) -> bool {
        eval(&self.expr, row) == Some(true)
    }

    /// The fields the filter reads.
    pub fn fields(&self) -> Vec<usize> {
        fn walk(expr: &Expr, fields: &mut Vec<usize>) {
            match expr {
                Expr::Or(a, b) | Expr::And(a, b) => {
                    walk(a, fields);
                    walk(b, fields);
                }
                Expr::Not(a) => walk(a, fields),
                Expr::IsNull(field, _) => fields.push(*field),
                Expr::Compare(left, _, right) => {
                    for operand in [left, right] {
                        if let Operand::Field(field) = operand {
                            fields.push(*field);
                        }
                    }
                }
            }
        }
        let mut fields = Vec::new();
        walk(&self.expr, &mut fields);
        fields.sort_unstable();
        fields.dedup();
        fields
    }
}

/// An operand's value, by reference: a filter runs once per record and must not copy strings.
fn operand_value<'a>(operand: &'a Operand, row: &'a [Value]) -> &'a Value {
    match operand {
        Operand::Field(i) => &row[*i],
        Operand::Literal(v) => v,
    }
}

fn eval(expr: &Expr, row: &[Value]) -> Option<bool> {
    match expr {
        Expr::Or(a, b) => match (eval(a, row), eval(b, row)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::And(a, b) => match (eval(a, row), eval(b, row)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::Not(a) => eval(a, row).map(|v| !v),
        Expr::IsNull(field, negated) => Some(row[*field].is_null() != *negated),
        Expr::Compare(left, op, right) => {
            let (left, right) = (operand_value(left, row), operand_value(right, row));
            if left.is_null() || right.is_null() {
                return None;
            }
            let ordering = left.compare(right)?;
            Some(match op {
                Op::Eq => ordering == Ordering::Equal,
                Op::Ne => ordering != Ordering::Equal,
                Op::Lt => ordering == Ordering::Less,
                Op::Le => ordering != Ordering::Greater,
                Op::Gt => ordering == Ordering::Greater,
                Op::Ge => ordering != Ordering::Less,
            })
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    Ident(String),
    Int(i64),
    Float(f64),
    Str(String),
    Op(Op),
    Open,
    Close,
}

impl Token {
    fn describe(&self) -> String {
        match self {
            Token::Ident(name) => format!("`{name}`"),
            Token::Int(v) => format!("number {v}"),
            Token::Float(v) => format!("number {v}"),
            Token::Str(s) => format!("string '{s}'"),
            Token::Op(_) => "comparison operator".to_owned(),
            Token::Open => "`(`".to_owned(),
            Token::Close => "`)`".to_owned(),
        }
    }

    fn is_keyword(&self, keyword: &str) -> bool {
        matches!(self, Token::Ident(name) if name.eq_ignore_ascii_case(keyword))
    }
}

/// Tokens with their 1-based column.
fn tokenize(text: &str) -> Result<Vec<(usize, Token)>, DataflowError> {
    let error = |column: usize, reason: &str| DataflowError::Filter {
        text: text.to_owned(),
        column,
        reason: reason.to_owned(),
    };
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let (token, width) = match (c, two.as_str()) {
            (_, "<=") => (Token::Op(Op::Le), 2),
            (_, ">=") => (Token::Op(Op::Ge), 2),
            (_, "<>") | (_, "!=") => (Token::Op(Op::Ne), 2),
            (_, "==") => (Token::Op(Op::Eq), 2),
            ('=', _) => (Token::Op(Op::Eq), 1),
            ('<', _) => (Token::Op(Op::Lt), 1),
            ('>', _) => (Token::Op(Op::Gt), 1),
            ('(', _) => (Token::Open, 1),
            (')', _) => (Token::Close, 1),
            ('\'', _) => {
                let mut value = String::new();
                let mut j = i + 1;
                loop {
                    match chars.get(j) {
                        None => return Err(error(column, "unterminated string")),
                        Some('\'') if chars.get(j + 1) == Some(&'\'') => {
                            value.push('\'');
                            j += 2;
                        }
                        Some('\'') => break,
                        Some(c) => {
                            value.push(*c);
                            j += 1;
                        }
                    }
                }
                (Token::Str(value), j + 1 - i)
            }
            (c, _) if c.is_ascii_digit() || c == '-' || c == '.' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '.') {
                    j += 1;
                }
                let number: String = chars[i..j].iter().collect();
                let token = if let Ok(v) = number.parse::<i64>() {
                    Token::Int(v)
                } else if let Ok(v) = number.parse::<f64>() {
                    Token::Float(v)
                } else {
                    return Err(error(column, &format!("{number:?} is not a number")));
                };
                (token, j - i)
            }
            (c, _) if c.is_ascii_alphabetic() || c == '_' => {
                let mut j = i + 1;
                while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                    j += 1;
                }
                (Token::Ident(chars[i..j].iter().collect()), j - i)
            }
            (c, _) => return Err(error(column, &format!("unexpected character {c:?}"))),
        };
        tokens.push((column, token));
        i += width;
    }
    Ok(tokens)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<(usize, Token)>,
    next: usize,
    schema: &'a Schema,
}

impl Parser<'_> {
    fn error(&self, column: usize, reason: String) -> DataflowError {
        DataflowError::Filter {
            text: self.text.to_owned(),
            column,
            reason,
        }
    }

    fn end_column(&self) -> usize {
        self.text.chars().count() + 1
    }

    fn peek(&self) -> Option<(usize, &Token)> {
        self.tokens.get(self.next).map(|(c, t)| (*c, t))
    }

    fn take_keyword(&mut self, keyword: &str) -> bool {
        let found = self.peek().is_some_and(|(_, t)| t.is_keyword(keyword));
        if found {
            self.next += 1;
        }
        found
    }

    fn or(&mut self) -> Result<Expr, DataflowError> {
        let mut left = self.and()?;
        while self.take_keyword("or") {
            left = Expr::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Expr, DataflowError> {
        let mut left = self.not()?;
        while self.take_keyword("and") {
            left = Expr::And(Box::new(left), Box::new(self.not()?));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Expr, DataflowError> {
        if self.take_keyword("not") {
            return Ok(Expr::Not(Box::new(self.not()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Expr, DataflowError> {
        if let Some((_, Token::Open)) = self.peek() {
            self.next += 1;
            let inner = self.or()?;
            return match self.peek() {
                Some((_, Token::Close)) => {
                    self.next += 1;
                    Ok(inner)
                }
                Some((column, token)) => {
                    Err(self.error(column, format!("expected `)`, found {}", token.describe())))
                }
                None => Err(self.error(self.end_column(), "expected `)`".to_owned())),
            };
        }
        let (left_column, left) = self.operand()?;
        if self.take_keyword("is") {
            let negated = self.take_keyword("not");
            if !self.take_keyword("null") {
                let column = self.peek().map_or(self.end_column(), |(c, _)| c);
                return Err(self.error(column, "expected `null` after `is`".to_owned()));
            }
            return match left {
                Operand::Field(field) => Ok(Expr::IsNull(field, negated)),
                Operand::Literal(_) => {
                    Err(self.error(left_column, "`is null` needs a field".to_owned()))
                }
            };
        }
        // A bool field on its own is a predicate: `flag` means `flag = true`.
        if let Operand::Field(field) = left {
            let is_bool = self.schema.fields()[field].field_type == FieldType::Bool;
            if is_bool && !matches!(self.peek(), Some((_, Token::Op(_)))) {
                return Ok(Expr::Compare(
                    left,
                    Op::Eq,
                    Operand::Literal(Value::Bool(true)),
                ));
            }
        }
        let op = match self.peek() {
            Some((_, Token::Op(op))) => *op,
            Some((column, token)) => {
                return Err(self.error(
                    column,
                    format!("expected a comparison operator, found {}", token.describe()),
                ))
            }
            None => {
                return Err(self.error(
                    self.end_column(),
                    "expected a comparison operator".to_owned(),
                ))
            }
        };
        self.next += 1;
        let (right_column, right) = self.operand()?;
        let (left, right) = self.type_check(left_column, left, right_column, right)?;
        Ok(Expr::Compare(left, op, right))
    }

    fn operand(&mut self) -> Result<(usize, Operand), DataflowError> {
        let Some((column, token)) = self.peek() else {
            return Err(self.error(self.end_column(), "expected a field or a value".to_owned()));
        };
        let token = token.clone();
        self.next += 1;
        let operand = match token {
            Token::Int(v) => Operand::Literal(Value::Int(v)),
            Token::Float(v) => Operand::Literal(Value::Float(v)),
            Token::Str(s) => Operand::Literal(Value::String(s)),
            Token::Ident(name) if name.eq_ignore_ascii_case("true") => {
                Operand::Literal(Value::Bool(true))
            }
            Token::Ident(name) if name.eq_ignore_ascii_case("false") => {
                Operand::Literal(Value::Bool(false))
            }
            Token::Ident(name) => match self.schema.index_of(&name) {
                Some(index) => Operand::Field(index),
                None => {
                    return Err(
                        self.error(column, format!("no field `{name}` in the source schema"))
                    )
                }
            },
            other => {
                return Err(self.error(
                    column,
                    format!("expected a field or a value, found {}", other.describe()),
                ))
            }
        };
        Ok((column, operand))
    }

    /// Checks that the operands can be compared; a string compared with a timestamp field is
    /// read as an RFC 3339 timestamp here, once.
    fn type_check(
        &self,
        left_column: usize,
        left: Operand,
        right_column: usize,
        right: Operand,
    ) -> Result<(Operand, Operand), DataflowError> {
        let kind = |operand: &Operand| match operand {
            Operand::Field(i) => Some(self.schema.fields()[*i].field_type),
            Operand::Literal(_) => None,
        };
        let describe = |operand: &Operand| match operand {
            Operand::Field(i) => {
                let field = &self.schema.fields()[*i];
                format!("{} field `{}`", field.field_type, field.name)
            }
            Operand::Literal(Value::String(_)) => "a string".to_owned(),
            Operand::Literal(Value::Bool(_)) => "a bool".to_owned(),
            Operand::Literal(_) => "a number".to_owned(),
        };
        let literal_fits = |field_type: FieldType, literal: &Value| {
            matches!(
                (field_type, literal),
                (
                    FieldType::Int | FieldType::Float,
                    Value::Int(_) | Value::Float(_)
                ) | (FieldType::String | FieldType::Timestamp, Value::String(_))
                    | (FieldType::Bool, Value::Bool(_))
            )
        };
        let fits = match (kind(&left), kind(&right), &left, &right) {
            (Some(a), Some(b), _, _) => a == b || (a.is_numeric() && b.is_numeric()),
            (Some(t), None, _, Operand::Literal(v)) | (None, Some(t), Operand::Literal(v), _) => {
                literal_fits(t, v)
            }
            _ => false,
        };
        if !fits {
            return Err(self.error(
                left_column,
                format!(
                    "cannot compare {} with {}",
                    describe(&left),
                    describe(&right)
                ),
            ));
        }
        let as_timestamp =
            |column: usize, operand: Operand, other: Option<FieldType>| match (operand, other) {
                (Operand::Literal(Value::String(text)), Some(FieldType::Timestamp)) => {
                    parse_rfc3339("", &text)
                        .map(|t| Operand::Literal(Value::Timestamp(t)))
                        .map_err(|_| {
                            self.error(column, format!("'{text}' is not an RFC 3339 timestamp"))
                        })
                }
                (operand, _) => Ok(operand),
            };
        let (left_kind, right_kind) = (kind(&left), kind(&right));
        Ok((
            as_timestamp(left_column, left, right_kind)?,
            as_timestamp(right_column, right, left_kind)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{FieldConfig, Format, TimestampFormat};

    fn schema() -> Schema {
        let field = |name: &str, field_type, nullable| FieldConfig {
            name: name.to_owned(),
            field_type,
            nullable,
        };
        Schema::new(
            Format::Json,
            vec![
                field("ts", FieldType::Timestamp, false),
                field("line", FieldType::String, false),
                field("entries", FieldType::Int, true),
                field("ratio", FieldType::Float, false),
                field("audit", FieldType::Bool, false),
            ],
            "ts",
            TimestampFormat::Rfc3339,
        )
        .unwrap()
    }

    fn row(line: &str, entries: Option<i64>, audit: bool) -> Vec<Value> {
        vec![
            Value::Timestamp(1_709_540_100_000_000),
            Value::String(line.to_owned()),
            entries.map_or(Value::Null, Value::Int),
            Value::Float(0.5),
            Value::Bool(audit),
        ]
    }

    fn matches(text: &str, row: &[Value]) -> bool {
        Filter::parse(text, &schema()).unwrap().matches(row)
    }

    #[test]
    fn precedence_parentheses_and_not() {
        let r = row("A", Some(5), false);
        assert!(matches("line = 'B' or entries > 1 and audit = false", &r));
        assert!(!matches("(line = 'B' or entries > 1) and audit = true", &r));
        assert!(matches("NOT line = 'B' AND ratio < 1", &r));
        assert!(matches(
            "entries >= 5 and entries <= 5 and entries <> 4 and entries != 6",
            &r
        ));
        assert!(matches(
            "ts >= '2024-03-04T08:00:00Z' and ts < '2024-03-04T09:00:00Z'",
            &r
        ));
        assert!(matches("line = 'it''s' or ratio > 0.25", &r));
        assert!(matches("not audit and entries > 1", &r));
    }

    #[test]
    fn nulls_are_unknown() {
        let r = row("A", None, false);
        assert!(!matches("entries > 1", &r));
        assert!(!matches("not (entries > 1)", &r));
        assert!(matches("entries is null", &r));
        assert!(!matches("entries is not null", &r));
        assert!(matches("entries > 1 or line = 'A'", &r));
    }

    #[test]
    fn errors_name_the_column_and_the_problem() {
        for (text, expected) in [
            (
                "entries > 'x'",
                "column 1: cannot compare int field `entries` with a string",
            ),
            ("stn = 'A'", "column 1: no field `stn`"),
            ("line = 'A", "column 8: unterminated string"),
            ("line 'A'", "column 6: expected a comparison operator"),
            ("(line = 'A'", "column 12: expected `)`"),
            ("line = 'A' line", "column 12: unexpected `line`"),
            ("ts > 'yesterday'", "not an RFC 3339 timestamp"),
            (
                "audit = 1",
                "cannot compare bool field `audit` with a number",
            ),
            ("line =", "column 7: expected a field or a value"),
        ] {
            let err = Filter::parse(text, &schema()).unwrap_err().to_string();
            assert!(err.contains(expected), "{text}: {err}");
        }
    }
}
