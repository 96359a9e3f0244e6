//! Event-time windows: which windows a record belongs to, when a window is final, and when a
//! record is too late for it.
//!
//! All windows are half-open `[start, end)` in microseconds and aligned to the Unix epoch (UTC),
//! so a `1d` window is a UTC day. A window is *final* once `end + allowed_lateness <= watermark`.

use serde::{Deserialize, Serialize};

use crate::duration::HumanDuration;
use crate::error::DataflowError;
use crate::reading::EventTime;
use crate::value::Value;

/// The key of a view's arrangement: one group in one window. Ordered by window first, so the
/// windows that become final form a prefix of the arrangement. Session and global views use
/// `start = end = 0` (a session's extent is only known from its records).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct WindowKey {
    pub start: EventTime,
    pub end: EventTime,
    pub group: Vec<Value>,
}

/// `window = { type = "...", ... }` of a view; a view without `window` keeps one running
/// aggregate per group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
pub enum WindowConfig {
    /// Fixed-size, non-overlapping windows.
    Tumbling { size: HumanDuration },
    /// Windows of `size` starting every `slide`: each record is in `size / slide` of them.
    Hopping {
        size: HumanDuration,
        slide: HumanDuration,
    },
    /// Per group, records closer than `gap` to each other form one session; a session ends `gap`
    /// after its last record.
    Session { gap: HumanDuration },
}

/// A window kind with its sizes in microseconds, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WindowKind {
    /// No window: one running aggregate per group, never final.
    Global,
    /// Tumbling windows are hopping windows whose slide equals their size.
    Hopping {
        size: i64,
        slide: i64,
    },
    Session {
        gap: i64,
    },
}

/// Most windows one record may belong to (`size / slide` of a hopping window); bounds the work
/// and the state one record can cause.
pub const MAX_WINDOWS_PER_RECORD: i64 = 1_000;

impl WindowKind {
    pub fn new(config: Option<&WindowConfig>) -> Result<WindowKind, DataflowError> {
        let positive = |what: &str, d: HumanDuration| {
            if d.micros() > 0 {
                Ok(d.micros())
            } else {
                Err(DataflowError::InvalidWindow(format!(
                    "{what} must be positive"
                )))
            }
        };
        Ok(match config {
            None => WindowKind::Global,
            Some(WindowConfig::Tumbling { size }) => {
                let size = positive("size", *size)?;
                WindowKind::Hopping { size, slide: size }
            }
            Some(WindowConfig::Hopping { size, slide }) => {
                let (size, slide) = (positive("size", *size)?, positive("slide", *slide)?);
                if slide > size {
                    return Err(DataflowError::InvalidWindow(format!(
                        "slide {} is longer than size {}: records between windows would be lost",
                        HumanDuration(std::time::Duration::from_micros(slide as u64)),
                        HumanDuration(std::time::Duration::from_micros(size as u64)),
                    )));
                }
                if size / slide > MAX_WINDOWS_PER_RECORD {
                    return Err(DataflowError::InvalidWindow(format!(
                        "size / slide is {}; at most {MAX_WINDOWS_PER_RECORD} windows per record",
                        size / slide
                    )));
                }
                WindowKind::Hopping { size, slide }
            }
            Some(WindowConfig::Session { gap }) => WindowKind::Session {
                gap: positive("gap", *gap)?,
            },
        })
    }

    pub fn is_windowed(&self) -> bool {
        !matches!(self, WindowKind::Global)
    }

    /// The `[start, end)` of every fixed window holding `ts`, earliest first (hopping windows
    /// start at multiples of `slide`). Empty for session and global views.
    pub fn fixed_windows(&self, ts: EventTime) -> impl Iterator<Item = (EventTime, EventTime)> {
        let (size, slide, last_start) = match *self {
            WindowKind::Hopping { size, slide } => (size, slide, ts.div_euclid(slide) * slide),
            _ => (0, 1, i64::MIN),
        };
        // The first window holding ts starts at the first multiple of slide above ts - size.
        let first_start = if size == 0 {
            i64::MAX
        } else {
            (ts.saturating_sub(size)).div_euclid(slide) * slide + slide
        };
        let count = if size == 0 {
            0
        } else {
            (last_start - first_start) / slide + 1
        };
        (0..count).map(move |i| {
            let start = first_start + i * slide;
            (start, start.saturating_add(size))
        })
    }
}

/// Whether a window ending at `end` is final under `watermark`.
pub fn is_final(end: EventTime, allowed_lateness: i64, watermark: EventTime) -> bool {
    end.saturating_add(allowed_lateness) <= watermark
}

/// Whether a session record at `ts` is too late: any session it could join would already be
/// final, because it could only extend sessions that end after `ts`, and a session ending at or
/// before `watermark - allowed_lateness` is final. (For fixed windows lateness is per window.)
pub fn session_record_is_late(ts: EventTime, allowed_lateness: i64, watermark: EventTime) -> bool {
    ts.saturating_add(allowed_lateness) < watermark
}

/// Splits the sorted event times of one group into sessions: a record at least `gap` after the
/// previous one starts a new session. Returns `(start, end, first index, end index)` per session.
pub fn sessions(times: &[EventTime], gap: i64) -> Vec<(EventTime, EventTime, usize, usize)> {
    let mut sessions = Vec::new();
    let mut begin = 0;
    for i in 1..=times.len() {
        if i == times.len() || times[i] >= times[i - 1].saturating_add(gap) {
            sessions.push((times[begin], times[i - 1].saturating_add(gap), begin, i));
            begin = i;
        }
    }
    sessions
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIN: i64 = 60_000_000;

    #[test]
    fn tumbling_windows_are_half_open_and_epoch_aligned() {
        let hour = WindowKind::Hopping {
            size: 60 * MIN,
            slide: 60 * MIN,
        };
        let one = |ts| hour.fixed_windows(ts).collect::<Vec<_>>();
        assert_eq!(one(0), vec![(0, 60 * MIN)]);
        assert_eq!(one(60 * MIN - 1), vec![(0, 60 * MIN)]);
        assert_eq!(one(60 * MIN), vec![(60 * MIN, 120 * MIN)]);
        assert_eq!(one(-1), vec![(-60 * MIN, 0)]);
    }

    #[test]
    fn hopping_windows_cover_size_over_slide_windows() {
        let hopping = WindowKind::Hopping {
            size: 15 * MIN,
            slide: MIN,
        };
        let windows: Vec<_> = hopping.fixed_windows(20 * MIN + 5).collect();
        assert_eq!(windows.len(), 15);
        assert_eq!(windows[0], (6 * MIN, 21 * MIN));
        assert_eq!(windows[14], (20 * MIN, 35 * MIN));
        let uneven = WindowKind::Hopping {
            size: 10 * MIN,
            slide: 4 * MIN,
        };
        let windows: Vec<_> = uneven.fixed_windows(9 * MIN).collect();
        assert_eq!(
            windows,
            vec![(0, 10 * MIN), (4 * MIN, 14 * MIN), (8 * MIN, 18 * MIN)]
        );
        for ts in -30..30 {
            for (start, end) in uneven.fixed_windows(ts * MIN / 3) {
                assert!(start <= ts * MIN / 3 && ts * MIN / 3 < end);
            }
        }
    }

    #[test]
    fn sessions_split_at_the_gap() {
        let s = sessions(&[0, 5, 9, 20, 29, 40], 10);
        assert_eq!(s, vec![(0, 19, 0, 3), (20, 39, 3, 5), (40, 50, 5, 6)]);
        assert!(sessions(&[], 10).is_empty());
    }

    #[test]
    fn validation_rejects_empty_and_gappy_windows() {
        let d = |s: &str| HumanDuration::parse(s).unwrap();
        assert!(WindowKind::new(Some(&WindowConfig::Tumbling { size: d("0s") })).is_err());
        let gappy = WindowConfig::Hopping {
            size: d("1m"),
            slide: d("5m"),
        };
        assert!(WindowKind::new(Some(&gappy)).is_err());
        assert_eq!(WindowKind::new(None).unwrap(), WindowKind::Global);
    }
}
