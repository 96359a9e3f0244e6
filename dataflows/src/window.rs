//! Event-time windows.

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::reading::EventTime;

/// The window of a view, as written in the pipeline file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    /// Size of the tumbling window (default 1h).
    #[serde(default = "default_window_size")]
    pub size: HumanDuration,
}

fn default_window_size() -> HumanDuration {
    HumanDuration(std::time::Duration::from_secs(3600))
}

impl Default for WindowConfig {
    fn default() -> Self {
        WindowConfig {
            size: default_window_size(),
        }
    }
}

/// Fixed-size, non-overlapping windows aligned to the Unix epoch: `[k·size, (k+1)·size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TumblingWindow {
    pub size_us: i64,
}

impl TumblingWindow {
    pub fn new(config: &WindowConfig) -> Self {
        let size_us = i64::try_from(config.size.0.as_micros()).unwrap_or(i64::MAX);
        TumblingWindow { size_us }
    }

    /// Start of the window holding `ts`; events before 1970 fall in negative windows correctly.
    pub fn start_of(&self, ts: EventTime) -> EventTime {
        ts.div_euclid(self.size_us) * self.size_us
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_half_open_and_epoch_aligned() {
        let hour = TumblingWindow {
            size_us: 3_600_000_000,
        };
        assert_eq!(hour.start_of(0), 0);
        assert_eq!(hour.start_of(3_599_999_999), 0);
        assert_eq!(hour.start_of(3_600_000_000), 3_600_000_000);
        assert_eq!(hour.start_of(-1), -3_600_000_000);
    }
}
