//! The three Nexmark record types and the event that carries one of them.
//!
//! Field names follow the Nexmark reference (Beam/Flink), in snake case. Ids and prices are
//! `u64` (never negative); times are milliseconds since the Unix epoch (`i64`, like every event
//! time in Tidewater). Every type derives `Ord` and `Hash` because differential dataflow keeps
//! data sorted and routes it by hash.

use serde::{Deserialize, Serialize};

use crate::error::DataflowError;

/// A person registering with the auction site.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Person {
    pub id: u64,
    pub name: String,
    pub email_address: String,
    pub credit_card: String,
    pub city: String,
    pub state: String,
    /// Registration time, ms since the Unix epoch.
    pub date_time: i64,
    pub extra: String,
}

/// An item put up for auction by a person (`seller`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Auction {
    pub id: u64,
    pub item_name: String,
    pub description: String,
    /// Prices are in cents.
    pub initial_bid: u64,
    pub reserve: u64,
    /// Opening time, ms since the Unix epoch.
    pub date_time: i64,
    /// Closing time, ms since the Unix epoch.
    pub expires: i64,
    /// The person who sells the item.
    pub seller: u64,
    pub category: u64,
    pub extra: String,
}

/// A bid by a person (`bidder`) on an auction.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Bid {
    pub auction: u64,
    pub bidder: u64,
    /// In cents (dollars in the queries that convert it).
    pub price: u64,
    pub channel: String,
    pub url: String,
    /// Bid time, ms since the Unix epoch.
    pub date_time: i64,
    pub extra: String,
}

/// One event of the Nexmark stream.
///
/// Its JSON form (one line, for files and Kafka topics) carries the kind in a `"type"` field:
/// `{"type":"bid","auction":1000,"bidder":1001,...}`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum NexmarkEvent {
    Person(Person),
    Auction(Auction),
    Bid(Bid),
}

impl NexmarkEvent {
    /// Event time, ms since the Unix epoch.
    pub fn date_time(&self) -> i64 {
        match self {
            NexmarkEvent::Person(p) => p.date_time,
            NexmarkEvent::Auction(a) => a.date_time,
            NexmarkEvent::Bid(b) => b.date_time,
        }
    }

    /// One JSON object on one line (no trailing newline).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("Nexmark events have only JSON-representable fields")
    }

    /// Reads an event written by [`NexmarkEvent::to_json`].
    pub fn from_json(line: &str) -> Result<Self, DataflowError> {
        serde_json::from_str(line).map_err(|e| DataflowError::Malformed(e.to_string()))
    }
}
