//! The Nexmark benchmark workload: its events, a generator, and queries 1, 2, 5, 7 and 8.
//!
//! Nexmark models an online auction site: people register ([`Person`]), open auctions
//! ([`Auction`]) and bid on them ([`Bid`]). [`NexmarkGenerator`] produces the reference mix
//! (per 50 events: 1 person, 3 auctions, 46 bids) deterministically and by index, so that
//! workers can each generate their share of one stream. [`build_query`] turns a collection of
//! [`NexmarkEvent`]s (timely time: the ingestion epoch; event time: `date_time`) into the
//! collection of a query's [`NexmarkRow`]s, maintained incrementally.
//!
//! Nothing here knows where events come from: a benchmark feeds generated events straight in,
//! and [`NexmarkEvent::to_json`] / [`NexmarkEvent::from_json`] are the line format for files
//! and topics.

pub mod generator;
pub mod model;
pub mod queries;

pub use generator::{event_kind, EventKind, NexmarkConfig, NexmarkGenerator};
pub use model::{Auction, Bid, NexmarkEvent, Person};
pub use queries::{build_query, NexmarkRow, Query};
