//! Decoding one JSON turnstile reading, with every field's type checked.

use std::borrow::Cow;

use chrono::DateTime;
use serde::{Deserialize, Serialize};

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
    DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_micros())
        .map_err(|e| DataflowError::InvalidTimestamp {
            field,
            value: value.to_owned(),
            reason: e.to_string(),
        })
}

/// Formats UTC microseconds as RFC 3339 (`2024-03-01T08:00:00Z`), the inverse of [`parse_rfc3339`].
pub fn format_rfc3339(micros: EventTime) -> String {
    DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_else(|| format!("{micros}us"))
}

/// The wire form of a reading, for producers and tests: the inverse of [`decode_reading`].
#[derive(Serialize)]
pub struct ReadingJson<'a> {
    pub ca: &'a str,
    pub unit: &'a str,
    pub scp: &'a str,
    pub station: &'a str,
    pub linename: &'a str,
    pub division: &'a str,
    pub ts: String,
    pub desc: &'a str,
    pub entries: i64,
    pub exits: i64,
}

impl Reading {
    /// Encodes this reading as one JSON object, the format `decode_reading` reads.
    pub fn to_json(&self) -> String {
        let wire = ReadingJson {
            ca: &self.ca,
            unit: &self.unit,
            scp: &self.scp,
            station: &self.station,
            linename: &self.linename,
            division: &self.division,
            ts: format_rfc3339(self.ts),
            desc: &self.desc,
            entries: self.entries,
            exits: self.exits,
        };
        serde_json::to_string(&wire).expect("a reading always serializes")
    }
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
