//! Decoding one JSON turnstile reading, with every field's type checked.

use std::borrow::Cow;

use chrono::DateTime;
use serde::Deserialize;

use crate::error::DataflowError;
use crate::reading::{EventTime, Reading};

/// The wire shape of a reading. Strings are borrowed from the payload where they have no escapes,
/// so decoding allocates only for the owned `Reading`.
#[derive(Deserialize)]
struct WireReading<'a> {
    #[serde(borrow)]
    ca: Cow<'a, str>,
    #[serde(borrow)]
    unit: Cow<'a, str>,
    #[serde(borrow)]
    scp: Cow<'a, str>,
    #[serde(borrow)]
    station: Cow<'a, str>,
    #[serde(borrow)]
    linename: Cow<'a, str>,
    #[serde(borrow)]
    division: Cow<'a, str>,
    #[serde(borrow)]
    ts: Cow<'a, str>,
    #[serde(borrow)]
    desc: Cow<'a, str>,
    entries: i64,
    exits: i64,
}

/// Decodes one reading. Fields beyond the MTA set are ignored (producers may add some); a missing
/// field, a wrong type, a negative count or a timestamp that is not RFC 3339 is an error.
pub fn decode_reading(payload: &[u8]) -> Result<Reading, DataflowError> {
    let wire: WireReading<'_> =
        serde_json::from_slice(payload).map_err(|e| DataflowError::Malformed(e.to_string()))?;
    for (field, value) in [("entries", wire.entries), ("exits", wire.exits)] {
        if value < 0 {
            return Err(DataflowError::InvalidValue {
                field,
                reason: format!("{value} is negative; counts per interval are >= 0"),
            });
        }
    }
    Ok(Reading {
        ts: parse_rfc3339("ts", &wire.ts)?,
        ca: wire.ca.into_owned(),
        unit: wire.unit.into_owned(),
        scp: wire.scp.into_owned(),
        station: wire.station.into_owned(),
        linename: wire.linename.into_owned(),
        division: wire.division.into_owned(),
        desc: wire.desc.into_owned(),
        entries: wire.entries,
        exits: wire.exits,
    })
}

/// Parses an RFC 3339 timestamp (with offset) into UTC microseconds.
pub fn parse_rfc3339(field: &'static str, value: &str) -> Result<EventTime, DataflowError> {
    if let Some(micros) = parse_utc_seconds(value.as_bytes()) {
        return Ok(micros);
    }
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_micros())
        .map_err(|e| DataflowError::InvalidTimestamp {
            field,
            value: value.to_owned(),
            reason: e.to_string(),
        })
}

/// The common shape, `2024-03-01T08:00:00Z` or `…:00.123456Z` (UTC, at most microsecond
/// digits, years 1970 to 9999), read without chrono: it is a good part of decoding a reading.
/// Anything else, including values chrono may read differently (leap seconds, lowercase
/// letters, offsets, nanoseconds), is `None` and left to chrono.
fn parse_utc_seconds(text: &[u8]) -> Option<EventTime> {
    let (Some(b'Z'), Some(head)) = (text.last(), text.get(..19)) else {
        return None;
    };
    let [y0, y1, y2, y3, b'-', mo0, mo1, b'-', d0, d1, b'T', h0, h1, b':', mi0, mi1, b':', s0, s1] =
        *head
    else {
        return None;
    };
    let number = |digits: &[u8]| {
        digits.iter().try_fold(0i64, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + i64::from(d - b'0'))
        })
    };
    let fraction = match &text[19..text.len() - 1] {
        [] => 0,
        [b'.', digits @ ..] if (1..=6).contains(&digits.len()) => {
            number(digits)? * 10i64.pow(6 - digits.len() as u32)
        }
        _ => return None,
    };
    let year = number(&[y0, y1, y2, y3])?;
    let (month, day) = (number(&[mo0, mo1])?, number(&[d0, d1])?);
    let (hour, minute, second) = (number(&[h0, h1])?, number(&[mi0, mi1])?, number(&[s0, s1])?);
    let valid = year >= 1970
        && (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    valid.then(|| {
        let seconds =
            days_from_civil(year, month, day) * 86_400 + hour * 3_600 + minute * 60 + second;
        seconds * 1_000_000 + fraction
    })
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a day since 1970-01-01 (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// "00" to "99", for writing two digits at once.
const DIGIT_PAIRS: [[u8; 2]; 100] = {
    let mut pairs = [[0u8; 2]; 100];
    let mut n = 0;
    while n < 100 {
        pairs[n] = [b'0' + (n / 10) as u8, b'0' + (n % 10) as u8];
        n += 1;
    }
    pairs
};

/// Writes UTC microseconds from 1970 to 9999 as `2024-03-01T08:00:00Z`, with `.123` or
/// `.123456` when there is a fraction, as chrono's `AutoSi` format does; `false` (nothing
/// written) for any other value.
fn write_utc_seconds(out: &mut String, micros: EventTime) -> bool {
    const END: EventTime = 253_402_300_800_000_000; // 10000-01-01T00:00:00Z
    if !(0..END).contains(&micros) {
        return false;
    }
    let (seconds, fraction) = (micros / 1_000_000, micros % 1_000_000);
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let second_of_day = seconds % 86_400;
    // Two digits at a time from a table: this runs once per generated reading in benchmarks.
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    let pairs = [
        (0, year / 100),
        (2, year % 100),
        (5, month),
        (8, day),
        (11, second_of_day / 3_600),
        (14, second_of_day / 60 % 60),
        (17, second_of_day % 60),
        (20, fraction / 10_000),
        (22, fraction / 100 % 100),
        (24, fraction % 100),
    ];
    for (at, value) in pairs {
        text[at..at + 2].copy_from_slice(&DIGIT_PAIRS[value as usize]);
    }
    let end = match fraction {
        0 => 19,
        f if f % 1_000 == 0 => 23,
        _ => 26,
    };
    text[end] = b'Z';
    out.push_str(std::str::from_utf8(&text[..=end]).expect("digits and separators"));
    true
}

/// Formats UTC microseconds as RFC 3339 (`2024-03-01T08:00:00Z`), the inverse of [`parse_rfc3339`].
pub fn format_rfc3339(micros: EventTime) -> String {
    let mut text = String::with_capacity(20);
    if write_utc_seconds(&mut text, micros) {
        return text;
    }
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{micros}us"))
}

impl Reading {
    /// Encodes this reading as one JSON object, the format `decode_reading` reads: the same
    /// text serde_json writes, written by hand because generating readings is a good part of
    /// what a benchmark's producer does.
    pub fn to_json(&self) -> String {
        let mut out = reading_json_head(
            &self.ca,
            &self.unit,
            &self.scp,
            &self.station,
            &self.linename,
            &self.division,
        );
        write_reading_json_tail(&mut out, self.ts, &self.desc, self.entries, self.exits);
        out
    }
}

/// A reading's JSON up to the opening quote of its timestamp: the part every reading of one
/// turnstile shares, which a generator can write once.
pub fn reading_json_head(
    ca: &str,
    unit: &str,
    scp: &str,
    station: &str,
    linename: &str,
    division: &str,
) -> String {
    let mut out = String::with_capacity(192);
    let strings = [
        ("{\"ca\":", ca),
        (",\"unit\":", unit),
        (",\"scp\":", scp),
        (",\"station\":", station),
        (",\"linename\":", linename),
        (",\"division\":", division),
    ];
    for (key, value) in strings {
        out.push_str(key);
        write_json_string(&mut out, value);
    }
    out.push_str(",\"ts\":\"");
    out
}

/// The rest of a reading's JSON, after [`reading_json_head`].
pub fn write_reading_json_tail(
    out: &mut String,
    ts: EventTime,
    desc: &str,
    entries: i64,
    exits: i64,
) {
    if !write_utc_seconds(out, ts) {
        out.push_str(&format_rfc3339(ts));
    }
    out.push_str("\",\"desc\":");
    write_json_string(out, desc);
    out.push_str(",\"entries\":");
    out.push_str(itoa::Buffer::new().format(entries));
    out.push_str(",\"exits\":");
    out.push_str(itoa::Buffer::new().format(exits));
    out.push('}');
}

/// Writes `text` as a JSON string, escaped as serde_json escapes it.
fn write_json_string(out: &mut String, text: &str) {
    out.push('"');
    let mut rest = text;
    while let Some(at) = rest
        .bytes()
        .position(|b| b == b'"' || b == b'\\' || b < 0x20)
    {
        out.push_str(&rest[..at]);
        match rest.as_bytes()[at] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            control => out.push_str(&format!("\\u{control:04x}")),
        }
        rest = &rest[at + 1..];
    }
    out.push_str(rest);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"ca":"A002","unit":"R051","scp":"02-00-00","station":"59 ST","linename":"NQR456W","division":"BMT","ts":"2024-03-01T08:00:00Z","desc":"REGULAR","entries":12,"exits":7}"#;

    #[test]
    fn decodes_a_good_reading_and_round_trips() {
        let r = decode_reading(GOOD.as_bytes()).unwrap();
        assert_eq!(r.station, "59 ST");
        assert_eq!(r.entries, 12);
        assert_eq!(r.ts, 1_709_280_000_000_000);
        assert_eq!(r.turnstile_id(), "A002/R051/02-00-00");
        assert_eq!(decode_reading(r.to_json().as_bytes()).unwrap(), r);
    }

    /// What serde_json writes for a reading: `to_json` must write the same text.
    #[derive(serde::Serialize)]
    struct SerdeReading<'a> {
        ca: &'a str,
        unit: &'a str,
        scp: &'a str,
        station: &'a str,
        linename: &'a str,
        division: &'a str,
        ts: String,
        desc: &'a str,
        entries: i64,
        exits: i64,
    }

    #[test]
    fn to_json_writes_what_serde_json_writes() {
        let mut reading = decode_reading(GOOD.as_bytes()).unwrap();
        let odd = [
            "",
            "a\"b\\c",
            "line\nbreak\ttab\r\u{8}\u{c}\u{1}\u{1f}",
            "Ünïcode ✓",
            "/",
        ];
        for (i, text) in odd.iter().enumerate() {
            reading.station = (*text).to_owned();
            reading.desc = odd[(i + 1) % odd.len()].to_owned();
            reading.entries = [0, -1, i64::MAX, i64::MIN, 12][i];
            reading.ts = [
                0,
                1_709_280_000_123_000,
                -1_000_000,
                1_709_280_000_000_000,
                7,
            ][i];
            let expected = serde_json::to_string(&SerdeReading {
                ca: &reading.ca,
                unit: &reading.unit,
                scp: &reading.scp,
                station: &reading.station,
                linename: &reading.linename,
                division: &reading.division,
                ts: DateTime::from_timestamp_micros(reading.ts)
                    .unwrap()
                    .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
                desc: &reading.desc,
                entries: reading.entries,
                exits: reading.exits,
            })
            .unwrap();
            assert_eq!(reading.to_json(), expected);
        }
    }

    #[test]
    fn the_timestamp_fast_paths_agree_with_chrono() {
        let chrono_parse = |text: &str| {
            DateTime::parse_from_rfc3339(text)
                .map(|t| t.timestamp_micros())
                .ok()
        };
        let chrono_format = |micros| {
            DateTime::from_timestamp_micros(micros)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        };
        // Every day from 1970 to 2100 and beyond, at varied times of day, both ways.
        let mut seconds = 0i64;
        while seconds < 4_200_000_000 {
            let micros = seconds * 1_000_000;
            let text = format_rfc3339(micros);
            assert_eq!(text, chrono_format(micros));
            assert_eq!(parse_utc_seconds(text.as_bytes()), Some(micros), "{text}");
            seconds += 86_400 + 3_671;
        }
        assert_eq!(
            format_rfc3339(253_402_300_799_000_000),
            "9999-12-31T23:59:59Z"
        );
        // What the fast path does not take, chrono decides.
        for text in [
            "2024-02-29T23:59:59Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-04-31T00:00:00Z",
            "2024-03-01T24:00:00Z",
            "2024-03-01T23:60:00Z",
            "2016-12-31T23:59:60Z",
            "2024-03-01t08:00:00z",
            "2024-03-01 08:00:00Z",
            "1969-12-31T23:59:59Z",
            "2024-03-01T08:00:00.5Z",
            "2024-03-01T08:00:00.1234567Z",
            "2024-03-01T08:00:00.Z",
            "2024-03-01T08:00:00.12a4Z",
            "2024-03-01T08:00:00ZZ",
            "2024-03-01T08:00:00+01:00",
            "2024-0a-01T08:00:00Z",
        ] {
            let fast = parse_utc_seconds(text.as_bytes());
            if fast.is_some() {
                assert_eq!(fast, chrono_parse(text), "{text}");
            }
            let parsed = parse_rfc3339("ts", text).ok();
            assert_eq!(parsed, chrono_parse(text), "{text}");
        }
    }

    #[test]
    fn offsets_are_normalised_to_utc() {
        let a = parse_rfc3339("ts", "2024-03-01T03:00:00-05:00").unwrap();
        let b = parse_rfc3339("ts", "2024-03-01T08:00:00Z").unwrap();
        assert_eq!(a, b);
    }

    #[test]
    fn rejects_each_kind_of_bad_input_with_a_reason() {
        let cases = [
            ("{not json", "malformed"),
            (r#"{"ca":"A002"}"#, "missing field"),
            (
                &GOOD.replace("\"entries\":12", "\"entries\":\"12\""),
                "invalid type",
            ),
            (
                &GOOD.replace("2024-03-01T08:00:00Z", "yesterday"),
                "not RFC 3339",
            ),
            (&GOOD.replace("\"exits\":7", "\"exits\":-3"), "negative"),
            ("[1,2,3]", "malformed"),
        ];
        for (payload, expected) in cases {
            let err = decode_reading(payload.as_bytes()).unwrap_err().to_string();
            assert!(err.contains(expected), "{payload}: {err}");
        }
    }
}
