//! Human-readable durations in config files (`500ms`, `1s`, `15m`, `1h`, `1d`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::DataflowError;

/// A duration written the way people write it in config files.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub fn parse(value: &str) -> Result<Self, DataflowError> {
        let err = |reason: &str| DataflowError::InvalidDuration {
            value: value.to_owned(),
            reason: reason.to_owned(),
        };
        let text = value.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| err("missing unit"))?;
        let (number, unit) = text.split_at(split);
        let number: u64 = number.parse().map_err(|_| err("missing number"))?;
        let unit_ms: u64 = match unit.trim() {
            "ms" => 1,
            "s" => 1_000,
            "m" | "min" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(err("unknown unit")),
        };
        let ms = number
            .checked_mul(unit_ms)
            .ok_or_else(|| err("too large"))?;
        Ok(HumanDuration(Duration::from_millis(ms)))
    }

    /// The duration in microseconds, the unit of event time.
    pub fn micros(self) -> i64 {
        i64::try_from(self.0.as_micros()).unwrap_or(i64::MAX)
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms == 0 {
            return f.write_str("0s");
        }
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if ms.is_multiple_of(size) {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

impl std::str::FromStr for HumanDuration {
    type Err = DataflowError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        HumanDuration::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for HumanDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_common_units() {
        for (text, ms, shown) in [
            ("500ms", 500, "500ms"),
            ("1s", 1000, "1s"),
            ("15m", 900_000, "15m"),
            ("1h", 3_600_000, "1h"),
            ("120m", 7_200_000, "2h"),
        ] {
            let d = HumanDuration::parse(text).unwrap();
            assert_eq!(d.0.as_millis(), ms);
            assert_eq!(d.to_string(), shown);
        }
        assert_eq!(HumanDuration::parse("0s").unwrap().to_string(), "0s");
        for bad in ["", "h", "10", "5 parsecs"] {
            assert!(HumanDuration::parse(bad).is_err(), "{bad}");
        }
    }
}
