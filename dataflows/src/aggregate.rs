//! Windowed aggregates, maintained incrementally by differential dataflow.
//!
//! The aggregates (readings, entries, exits) are carried as the *difference* of each record, so
//! differential dataflow sums them while it consolidates: the state per (window, station) is one
//! accumulated `StationTotals`, whatever the number of readings. Late readings are ordinary
//! additions at a later epoch: their window's row is retracted and re-inserted with new totals.

use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use differential_dataflow::lattice::Lattice;
use differential_dataflow::operators::CountTotal;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use timely::order::TotalOrder;
use timely::progress::Timestamp;

use crate::reading::{EventTime, Reading};
use crate::window::TumblingWindow;

/// The group of a row of the station view: one station in one tumbling window.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StationWindow {
    pub window_start: EventTime,
    pub window_end: EventTime,
    pub station: String,
}

/// Aggregates of one group; also the difference type that carries them through differential.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct StationTotals {
    pub readings: i64,
    pub entries: i64,
    pub exits: i64,
}

impl StationTotals {
    pub fn of(reading: &Reading) -> Self {
        StationTotals {
            readings: 1,
            entries: reading.entries,
            exits: reading.exits,
        }
    }
}

impl IsZero for StationTotals {
    fn is_zero(&self) -> bool {
        self.readings == 0 && self.entries == 0 && self.exits == 0
    }
}

impl Semigroup for StationTotals {
    fn plus_equals(&mut self, rhs: &Self) {
        self.readings += rhs.readings;
        self.entries += rhs.entries;
        self.exits += rhs.exits;
    }
}

impl Monoid for StationTotals {
    fn zero() -> Self {
        Self::default()
    }
}

impl Abelian for StationTotals {
    fn negate(&mut self) {
        self.readings = -self.readings;
        self.entries = -self.entries;
        self.exits = -self.exits;
    }
}

impl Multiply<isize> for StationTotals {
    type Output = StationTotals;
    fn multiply(self, rhs: &isize) -> Self::Output {
        let k = *rhs as i64;
        StationTotals {
            readings: self.readings * k,
            entries: self.entries * k,
            exits: self.exits * k,
        }
    }
}

/// Readings count, entries and exits per station and tumbling event-time window.
///
/// The output is a collection of `(group, totals)` rows: at each epoch where a group's totals
/// change, the old row is retracted (diff -1) and the new one inserted (diff +1).
pub fn station_window_totals<'scope, T>(
    readings: VecCollection<'scope, T, Reading>,
    window: TumblingWindow,
) -> VecCollection<'scope, T, (StationWindow, StationTotals)>
where
    T: Timestamp + Lattice + TotalOrder,
{
    readings
        .explode(move |reading| {
            let window_start = window.start_of(reading.ts);
            let group = StationWindow {
                window_start,
                window_end: window_start + window.size_us,
                station: reading.station.clone(),
            };
            Some((group, StationTotals::of(&reading)))
        })
        .arrange_by_self_named("Arrange: station windows")
        .count_total()
}
