//! The fast path of JSON decoding: one flat object whose strings have no escapes, which is
//! what producers almost always send. It only tokenizes: each value becomes the same
//! [`JsonScalar`] the serde path makes and goes through the same [`Schema::slot_of`] (a string
//! nobody reads is only validated, as `slot_of` would skip it), so values and field errors are
//! identical by construction. Anything it does not handle (escapes, nested values, unusual
//! numbers, any syntax error) makes it give up, and the serde path decodes the payload and words
//! the error.

use std::borrow::Cow;

use super::{JsonScalar, Schema, Slot};

/// The slots of `payload`, or `None` when the serde path must decide.
pub(super) fn flat_object(schema: &Schema, payload: &[u8]) -> Option<Vec<Slot>> {
    let mut scan = Scanner {
        bytes: payload,
        at: 0,
    };
    let mut row: Vec<Slot> = (0..schema.fields.len()).map(|_| Slot::Missing).collect();
    scan.skip_whitespace();
    scan.expect(b'{')?;
    scan.skip_whitespace();
    if scan.peek() == Some(b'}') {
        scan.at += 1;
    } else {
        // Fields usually come in the same order in every record: look where the last one
        // was found first, comparing the key's bytes with that field's name.
        let mut guess = 0;
        loop {
            scan.expect(b'"')?;
            let index = match schema.fields.get(guess) {
                Some(field) if schema.plain_names[guess] && scan.key_is(&field.name) => Some(guess),
                _ => schema.position_from(scan.string_text()?, guess),
            };
            scan.skip_whitespace();
            scan.expect(b':')?;
            scan.skip_whitespace();
            let token = scan.token()?;
            if let Some(index) = index {
                row[index] = match token {
                    Token::Str(text, ascii) if schema.skips_strings_of(index) => {
                        valid_utf8(text, ascii)?;
                        Slot::Skipped
                    }
                    token => schema.slot_of(index, token.into_scalar()?),
                };
                guess = index + 1;
            } else if let Token::Str(text, ascii) = token {
                valid_utf8(text, ascii)?;
            }
            scan.skip_whitespace();
            match scan.next()? {
                b',' => scan.skip_whitespace(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    scan.skip_whitespace();
    (scan.at == payload.len()).then_some(row)
}

/// Whether any of the eight bytes of `word` is a quote, a backslash, a control character or not
/// ASCII (the usual bit tricks: a byte is flagged when subtracting leaves its high bit set).
fn needs_a_look(word: u64) -> bool {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let zero_byte = |w: u64| w.wrapping_sub(ONES) & !w & HIGH;
    let quote = zero_byte(word ^ (ONES * u64::from(b'"')));
    let backslash = zero_byte(word ^ (ONES * u64::from(b'\\')));
    let control = word.wrapping_sub(ONES * 0x20) & !word & HIGH;
    (quote | backslash | control | (word & HIGH)) != 0
}

/// A scanned value: strings stay bytes until someone needs their text.
enum Token<'a> {
    /// A string's bytes between its quotes, and whether they are all ASCII.
    Str(&'a [u8], bool),
    Scalar(JsonScalar<'a>),
}

impl<'a> Token<'a> {
    fn into_scalar(self) -> Option<JsonScalar<'a>> {
        match self {
            Token::Str(text, _) => std::str::from_utf8(text)
                .ok()
                .map(|s| JsonScalar::Str(Cow::Borrowed(s))),
            Token::Scalar(scalar) => Some(scalar),
        }
    }
}

/// Checks that a string's bytes are UTF-8 (as serde_json does), unless known to be ASCII.
fn valid_utf8(text: &[u8], ascii: bool) -> Option<()> {
    (ascii || std::str::from_utf8(text).is_ok()).then_some(())
}

struct Scanner<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// Whether a key whose opening quote was read is exactly `name`; if so, it is consumed
    /// with its closing quote. Only for names with no character JSON escapes.
    fn key_is(&mut self, name: &str) -> bool {
        let end = self.at + name.len();
        let matches = self.bytes.get(self.at..end) == Some(name.as_bytes())
            && self.bytes.get(end) == Some(&b'"');
        if matches {
            self.at = end + 1;
        }
        matches
    }

    /// The bytes of a string whose opening quote was read, up to its closing quote (consumed),
    /// and whether they are all ASCII. Gives up on escapes and on control characters (which
    /// JSON does not allow unescaped).
    fn string_bytes(&mut self) -> Option<(&'a [u8], bool)> {
        let start = self.at;
        let bytes = &self.bytes[start..];
        // Eight bytes at a time while they are plain ASCII: most strings are short, but this is
        // the loop every byte of a record goes through.
        let mut length = 0;
        while let Some(word) = bytes.get(length..length + 8) {
            if needs_a_look(u64::from_le_bytes(word.try_into().expect("eight bytes"))) {
                break;
            }
            length += 8;
        }
        let mut ascii = true;
        loop {
            match *bytes.get(length)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                byte => ascii &= byte.is_ascii(),
            }
            length += 1;
        }
        self.at = start + length + 1;
        Some((&bytes[..length], ascii))
    }

    /// [`Scanner::string_bytes`] as text.
    fn string_text(&mut self) -> Option<&'a str> {
        let (text, _) = self.string_bytes()?;
        std::str::from_utf8(text).ok()
    }

    fn literal(&mut self, text: &[u8], value: JsonScalar<'a>) -> Option<JsonScalar<'a>> {
        let end = self.at + text.len();
        (self.bytes.get(self.at..end)? == text).then(|| {
            self.at = end;
            value
        })
    }

    fn token(&mut self) -> Option<Token<'a>> {
        let scalar = match self.peek()? {
            b'"' => {
                self.at += 1;
                let (text, ascii) = self.string_bytes()?;
                return Some(Token::Str(text, ascii));
            }
            b'n' => self.literal(b"null", JsonScalar::Null),
            b't' => self.literal(b"true", JsonScalar::Bool(true)),
            b'f' => self.literal(b"false", JsonScalar::Bool(false)),
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        };
        scalar.map(Token::Scalar)
    }

    /// A number: small integers are read here; anything else (fractions, exponents, 19 digits
    /// or more, `-0`, which serde_json reads as a float) by serde_json itself.
    fn number(&mut self) -> Option<JsonScalar<'a>> {
        let start = self.at;
        let negative = self.peek() == Some(b'-');
        if negative {
            self.at += 1;
        }
        let digits_start = self.at;
        let mut magnitude: i64 = 0;
        while let Some(digit @ b'0'..=b'9') = self.peek() {
            magnitude = magnitude
                .wrapping_mul(10)
                .wrapping_add(i64::from(digit - b'0'));
            self.at += 1;
        }
        let digits = self.at - digits_start;
        let plain_integer = (1..=18).contains(&digits)
            && !matches!(self.peek(), Some(b'.' | b'e' | b'E'))
            && (self.bytes[digits_start] != b'0' || (digits == 1 && !negative));
        if plain_integer {
            return Some(JsonScalar::Int(if negative {
                -magnitude
            } else {
                magnitude
            }));
        }
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-')
        ) {
            self.at += 1;
        }
        serde_json::from_slice(&self.bytes[start..self.at]).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::tests::schema as declared;
    use crate::record::{Format, TimestampFormat};

    /// The record tests' schema (station, ts, entries, ratio, audit), once with every field
    /// kept and once with `station` validated but not kept.
    fn schemas() -> [Schema; 2] {
        let all = declared(Format::Json, TimestampFormat::Rfc3339);
        let mut unread_station = all.clone();
        unread_station.keep_only(&[2, 3, 4]);
        [all, unread_station]
    }

    /// Both paths' result for `payload`, as text; `None` from the fast path when it gave up.
    fn both(schema: &Schema, payload: &[u8]) -> (Option<String>, String) {
        let show = |row: Result<Vec<crate::value::Value>, _>| match row {
            Ok(row) => format!("{row:?}"),
            Err(e) => format!("error: {e}"),
        };
        let fast = flat_object(schema, payload).map(|slots| show(schema.finish_json_row(slots)));
        let general = show(
            schema
                .deserialize_json(payload)
                .and_then(|slots| schema.finish_json_row(slots)),
        );
        (fast, general)
    }

    const GOOD: &str = r#"{"station":"59 ST","ts":"2024-03-04T08:15:00Z","entries":12,"ratio":0.25,"audit":true,"unread":"x","extra":7}"#;

    #[test]
    fn a_word_needs_a_look_when_any_byte_is_special() {
        assert!(!needs_a_look(u64::from_le_bytes(*b"59 ST ab")));
        for special in [b'"', b'\\', 0x00, 0x1f, 0x80, 0xff] {
            for at in 0..8 {
                let mut word = *b"abcdefgh";
                word[at] = special;
                assert!(needs_a_look(u64::from_le_bytes(word)), "{special} at {at}");
            }
        }
        for plain in [0x20, b'!', b'#', b'[', b']', 0x7f] {
            assert!(!needs_a_look(u64::from_le_bytes([plain; 8])), "{plain}");
        }
    }

    #[test]
    fn handles_the_usual_record_and_agrees_with_serde() {
        for schema in &schemas() {
            handles_the_usual_record(schema);
        }
    }

    fn handles_the_usual_record(schema: &Schema) {
        for payload in [
            GOOD.to_owned(),
            r#" { "entries" : -3 , "ts":"2024-03-04T08:15:00Z","station":"Ünïcode","ratio":null}
"#
            .to_owned(),
            r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":0,"ratio":3}"#.to_owned(),
            r#"{"station":"A","station":"B","ts":"2024-03-04T08:15:00Z","entries":1}"#.to_owned(),
            // Keys that a field's name is a prefix of, or that are a prefix of one.
            r#"{"stationx":"A","sta":"B","station":"C","ts":"2024-03-04T08:15:00Z","entries":1}"#
                .to_owned(),
            r#"{"ts":"2024-03-04T08:15:00Z","entries":1,"station":"A","ratiö":"x"}"#.to_owned(),
            // Field errors are found on the fast path too, and worded the same.
            r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":"1"}"#.to_owned(),
            r#"{"station":null,"ts":"2024-03-04T08:15:00Z","entries":1}"#.to_owned(),
            r#"{"station":"A","ts":"yesterday","entries":1}"#.to_owned(),
            r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":1,"audit":1}"#.to_owned(),
            "{}".to_owned(),
        ] {
            let (fast, general) = both(schema, payload.as_bytes());
            assert_eq!(fast.as_deref(), Some(general.as_str()), "{payload}");
        }
    }

    #[test]
    fn gives_up_or_agrees_on_everything_else() {
        for schema in &schemas() {
            gives_up_or_agrees(schema);
        }
    }

    fn gives_up_or_agrees(schema: &Schema) {
        let mut payloads: Vec<String> = [
            r#"{"station":"A \"quoted\"","ts":"2024-03-04T08:15:00Z","entries":1}"#,
            r#"{"station":"a long station name \"x\"","ts":"2024-03-04T08:15:00Z","entries":1}"#,
            r#"{"station":"a long Ünïcode station name","ts":"2024-03-04T08:15:00Z","entries":1}"#,
            "{\"station\":\"a long name with a tab\there\",\"ts\":\"2024-03-04T08:15:00Z\",\"entries\":1}",
            r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":1,"nested":{"a":[1,2]}}"#,
            r#"{"station":"tab	inside","ts":"2024-03-04T08:15:00Z","entries":1}"#,
            "[1,2]",
            "",
            "null",
            r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":1} x"#,
            r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":1,}"#,
            r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":nul}"#,
            r#"{"station":"A","ts":"2024-03-04T08:15:00Z","entries":truex}"#,
            r#"{"station":"A" "ts":"2024-03-04T08:15:00Z"}"#,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        for number in [
            "0",
            "-0",
            "007",
            "-",
            "1.5",
            "1e3",
            "-1E-2",
            "1.",
            ".5",
            "+1",
            "999999999999999999",
            "-999999999999999999",
            "1000000000000000000",
            "9223372036854775807",
            "9223372036854775808",
            "-9223372036854775808",
            "-9223372036854775809",
            "18446744073709551616",
            "1--2",
            "1e",
            "0x10",
        ] {
            for field in ["entries", "ratio", "extra"] {
                payloads.push(format!(
                    r#"{{"station":"A","ts":"2024-03-04T08:15:00Z","entries":1,"{field}":{number}}}"#
                ));
            }
        }
        // Every prefix of a good record: truncated messages.
        payloads.extend((0..GOOD.len()).map(|end| GOOD[..end].to_owned()));
        let mut handled = 0;
        for payload in &payloads {
            let (fast, general) = both(schema, payload.as_bytes());
            if let Some(fast) = fast {
                assert_eq!(fast, general, "{payload}");
                handled += 1;
            }
        }
        assert!(
            handled > 20,
            "the fast path handled only {handled} payloads"
        );
        // Invalid UTF-8 inside a string.
        let mut bytes = GOOD.as_bytes().to_vec();
        bytes[13] = 0xff;
        assert!(flat_object(schema, &bytes).is_none());
        assert!(schema.decode(&bytes).is_err());
    }
}
