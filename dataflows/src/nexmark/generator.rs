//! A deterministic, random-access Nexmark event generator.
//!
//! It follows the Nexmark reference generator (Beam/Flink `nexmark`): events come in blocks of
//! 50, one person, then three auctions, then 46 bids; event `i` happens at
//! `base_time + i * inter_event_delay`; most bids go to a few *hot* auctions and come from a few
//! hot bidders, most auctions from a few hot sellers, the rest are spread over the auctions still
//! in flight and the people still active.
//!
//! Unlike the reference it is *random access*: [`NexmarkGenerator::event`] computes event `i`
//! from the seed and `i` alone (a SplitMix64 stream keyed by both), never from the events before
//! it. Ids are derived from `i` arithmetically (the `k`-th person is person `1000 + k`), so
//! several workers that each generate their share `i % peers == worker` produce together exactly
//! the sequence one worker would.
//!
//! Two departures from the reference, both so that every reference points at something that
//! exists: bids and auctions never pick ids a few *ahead* of the newest ones (the reference's
//! `*_ID_LEAD`), and a hot bidder is never a person not yet registered. The `extra` padding is
//! left empty and strings are short: this generator feeds throughput benchmarks, where the
//! queries read ids, prices and times.

use std::fmt::Write as _;
use std::ops::Range;

use super::model::{Auction, Bid, NexmarkEvent, Person};

/// Of every [`TOTAL_PROPORTION`] events, this many are persons (the first of the block).
pub const PERSON_PROPORTION: u64 = 1;
/// Of every [`TOTAL_PROPORTION`] events, this many are auctions (after the person).
pub const AUCTION_PROPORTION: u64 = 3;
/// Of every [`TOTAL_PROPORTION`] events, this many are bids (the rest of the block).
pub const BID_PROPORTION: u64 = 46;
pub const TOTAL_PROPORTION: u64 = PERSON_PROPORTION + AUCTION_PROPORTION + BID_PROPORTION;

/// Id of the first person; the `k`-th person (from 0) has id `FIRST_PERSON_ID + k`.
pub const FIRST_PERSON_ID: u64 = 1000;
/// Id of the first auction; the `k`-th auction (from 0) has id `FIRST_AUCTION_ID + k`.
pub const FIRST_AUCTION_ID: u64 = 1000;
pub const FIRST_CATEGORY_ID: u64 = 10;
pub const NUM_CATEGORIES: u64 = 5;
/// Channels that are not hot are `channel-0` .. `channel-9999`.
const CHANNELS_NUMBER: u64 = 10_000;

const HOT_CHANNELS: [&str; 4] = ["Google", "Facebook", "Baidu", "Apple"];
const HOT_URLS: [&str; 4] = [
    "https://www.nexmark.com/googl/item.htm?query=1",
    "https://www.nexmark.com/faceb/item.htm?query=1",
    "https://www.nexmark.com/baidu/item.htm?query=1",
    "https://www.nexmark.com/apple/item.htm?query=1",
];
const FIRST_NAMES: [&str; 11] = [
    "Peter", "Paul", "Luke", "John", "Saul", "Vicky", "Kate", "Julie", "Sarah", "Deiter", "Walter",
];
const LAST_NAMES: [&str; 9] = [
    "Shultz", "Abrams", "Spencer", "White", "Bartels", "Walton", "Smith", "Jones", "Noris",
];
const US_CITIES: [&str; 10] = [
    "Phoenix",
    "Los Angeles",
    "San Francisco",
    "Boise",
    "Portland",
    "Bend",
    "Redmond",
    "Seattle",
    "Kent",
    "Cheyenne",
];
const US_STATES: [&str; 6] = ["AZ", "CA", "ID", "OR", "WA", "WY"];

/// What shapes the generated stream. `Default` is the reference configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NexmarkConfig {
    /// Same seed, same events.
    pub seed: u64,
    /// Event time of event 0, ms since the Unix epoch.
    pub base_time_ms: i64,
    /// Event time between consecutive events, in µs (100: 10,000 events per second).
    pub inter_event_delay_us: u64,
    /// Bids that are not hot go to one of this many newest auctions.
    pub num_in_flight_auctions: u64,
    /// Bidders and sellers that are not hot are one of this many newest people.
    pub num_active_people: u64,
    /// A bid is for a hot auction with probability `1 - 1/ratio` (a ratio ≤ 1: never).
    pub hot_auction_ratio: u64,
    /// An auction is by a hot seller with probability `1 - 1/ratio`.
    pub hot_sellers_ratio: u64,
    /// A bid is by a hot bidder with probability `1 - 1/ratio`.
    pub hot_bidders_ratio: u64,
    /// A bid comes through one of the four hot channels with probability `1 - 1/ratio`.
    pub hot_channels_ratio: u64,
}

impl Default for NexmarkConfig {
    fn default() -> Self {
        NexmarkConfig {
            seed: 0,
            // 2023-11-14T22:13:20Z: a round, recent instant.
            base_time_ms: 1_700_000_000_000,
            inter_event_delay_us: 100,
            num_in_flight_auctions: 100,
            num_active_people: 1000,
            hot_auction_ratio: 2,
            hot_sellers_ratio: 4,
            hot_bidders_ratio: 4,
            hot_channels_ratio: 2,
        }
    }
}

/// Which record event `i` carries; it depends on `i` only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventKind {
    Person,
    Auction,
    Bid,
}

/// The kind of event `index`: its position in its block of [`TOTAL_PROPORTION`].
pub fn event_kind(index: u64) -> EventKind {
    let offset = index % TOTAL_PROPORTION;
    if offset < PERSON_PROPORTION {
        EventKind::Person
    } else if offset < PERSON_PROPORTION + AUCTION_PROPORTION {
        EventKind::Auction
    } else {
        EventKind::Bid
    }
}

/// The 0-based number of the newest person at event `index` (the event's own, for a person).
fn last_person(index: u64) -> u64 {
    let (block, offset) = (index / TOTAL_PROPORTION, index % TOTAL_PROPORTION);
    let in_block = if offset < PERSON_PROPORTION {
        offset
    } else {
        PERSON_PROPORTION - 1
    };
    block * PERSON_PROPORTION + in_block
}

/// The 0-based number of the newest auction at event `index`, which must not be a person (every
/// block opens with its person, so after it the block has at least one auction).
fn last_auction(index: u64) -> u64 {
    let (block, offset) = (index / TOTAL_PROPORTION, index % TOTAL_PROPORTION);
    debug_assert!(
        offset >= PERSON_PROPORTION,
        "persons do not look at auctions"
    );
    let in_block = (offset - PERSON_PROPORTION).min(AUCTION_PROPORTION - 1);
    block * AUCTION_PROPORTION + in_block
}

/// SplitMix64 finaliser: a bijection on `u64` that mixes every input bit into every output bit.
#[inline]
fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The random numbers of one event: a SplitMix64 stream started from a hash of (seed, index).
struct EventRng(u64);

impl EventRng {
    fn new(seed_hash: u64, index: u64) -> Self {
        EventRng(mix64(seed_hash ^ mix64(index)))
    }

    #[inline]
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix64(self.0)
    }

    /// Uniform in `0..n` (`n > 0`), by multiply-high: no division, bias below 2^-40 for our `n`.
    #[inline]
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `[0, 1)`, 53 bits.
    #[inline]
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// True with probability `1 - 1/ratio`: whether to pick the hot choice.
    #[inline]
    fn hot(&mut self, ratio: u64) -> bool {
        ratio > 1 && self.below(ratio) > 0
    }

    /// A price in cents, log-uniform between $1 and $1,000,000 (the reference's `nextPrice`).
    #[inline]
    fn price(&mut self) -> u64 {
        (10f64.powf(self.unit() * 6.0) * 100.0).round() as u64
    }

    /// Appends `n` random lowercase letters, twelve per random number.
    fn push_letters(&mut self, out: &mut String, n: usize) {
        let mut bits = 0u64;
        for i in 0..n {
            if i % 12 == 0 {
                bits = self.next_u64();
            }
            out.push(char::from(b'a' + ((bits & 31) % 26) as u8));
            bits >>= 5;
        }
    }

    /// A string of `min..=max` random lowercase letters.
    fn letters(&mut self, min: usize, max: usize) -> String {
        let n = min + self.below((max - min + 1) as u64) as usize;
        let mut out = String::with_capacity(n);
        self.push_letters(&mut out, n);
        out
    }

    fn pick<'a>(&mut self, choices: &[&'a str]) -> &'a str {
        choices[self.below(choices.len() as u64) as usize]
    }
}

/// Generates Nexmark events by index; cheap to clone and to share among threads.
#[derive(Clone, Debug)]
pub struct NexmarkGenerator {
    config: NexmarkConfig,
    seed_hash: u64,
    /// Event time it takes to open `num_in_flight_auctions` auctions: about how long one runs.
    auction_horizon_ms: i64,
}

impl NexmarkGenerator {
    pub fn new(config: NexmarkConfig) -> Self {
        let events_per_in_flight =
            config.num_in_flight_auctions * TOTAL_PROPORTION / AUCTION_PROPORTION;
        let auction_horizon_ms = (u128::from(events_per_in_flight)
            * u128::from(config.inter_event_delay_us)
            / 1000) as i64;
        NexmarkGenerator {
            seed_hash: mix64(config.seed ^ 0x6e65_786d_6172_6b00),
            config,
            auction_horizon_ms,
        }
    }

    pub fn config(&self) -> &NexmarkConfig {
        &self.config
    }

    /// Event time of event `index`, ms since the Unix epoch.
    pub fn date_time(&self, index: u64) -> i64 {
        let offset_us = u128::from(index) * u128::from(self.config.inter_event_delay_us);
        self.config.base_time_ms + (offset_us / 1000) as i64
    }

    /// Event `index` of the stream, computed from the seed and `index` alone.
    pub fn event(&self, index: u64) -> NexmarkEvent {
        let mut rng = EventRng::new(self.seed_hash, index);
        let date_time = self.date_time(index);
        match event_kind(index) {
            EventKind::Person => NexmarkEvent::Person(self.person(index, date_time, &mut rng)),
            EventKind::Auction => NexmarkEvent::Auction(self.auction(index, date_time, &mut rng)),
            EventKind::Bid => NexmarkEvent::Bid(self.bid(index, date_time, &mut rng)),
        }
    }

    /// The events of `range` that belong to `worker` of `peers` (`index % peers == worker`), in
    /// index order. The shares of all workers partition the range.
    pub fn share(
        &self,
        range: Range<u64>,
        worker: usize,
        peers: usize,
    ) -> impl Iterator<Item = NexmarkEvent> + '_ {
        let (worker, peers) = (worker as u64, peers.max(1) as u64);
        // The first index at or after `range.start` that is `worker` modulo `peers`.
        let first = range.start + (worker + peers - range.start % peers) % peers;
        (first..range.end.max(first))
            .step_by(peers as usize)
            .map(move |index| self.event(index))
    }

    /// A person who is active at event `index` (one of the newest `num_active_people`), 0-based.
    fn active_person(&self, index: u64, rng: &mut EventRng) -> u64 {
        let people = last_person(index) + 1;
        let active = people.min(self.config.num_active_people.max(1));
        people - active + rng.below(active)
    }

    fn person(&self, index: u64, date_time: i64, rng: &mut EventRng) -> Person {
        let (first, last) = (rng.pick(&FIRST_NAMES), rng.pick(&LAST_NAMES));
        let mut name = String::with_capacity(first.len() + 1 + last.len());
        name.push_str(first);
        name.push(' ');
        name.push_str(last);
        let mut email_address = String::with_capacity(16);
        rng.push_letters(&mut email_address, 7);
        email_address.push('@');
        rng.push_letters(&mut email_address, 5);
        email_address.push_str(".com");
        let digits = rng.below(10_000_000_000_000_000);
        let mut credit_card = String::with_capacity(19);
        let _ = write!(
            credit_card,
            "{:04} {:04} {:04} {:04}",
            digits / 1_000_000_000_000,
            digits / 100_000_000 % 10_000,
            digits / 10_000 % 10_000,
            digits % 10_000
        );
        Person {
            id: FIRST_PERSON_ID + last_person(index),
            name,
            email_address,
            credit_card,
            city: rng.pick(&US_CITIES).to_owned(),
            state: rng.pick(&US_STATES).to_owned(),
            date_time,
            extra: String::new(),
        }
    }

    fn auction(&self, index: u64, date_time: i64, rng: &mut EventRng) -> Auction {
        let ratio = self.config.hot_sellers_ratio;
        let seller = if rng.hot(ratio) {
            // The first person of the newest batch of `ratio` people.
            last_person(index) / ratio * ratio
        } else {
            self.active_person(index, rng)
        };
        let initial_bid = rng.price();
        let reserve = initial_bid + rng.price();
        let length_ms = 1 + rng.below((2 * self.auction_horizon_ms).max(1) as u64) as i64;
        Auction {
            id: FIRST_AUCTION_ID + last_auction(index),
            item_name: rng.letters(6, 12),
            description: rng.letters(10, 30),
            initial_bid,
            reserve,
            date_time,
            expires: date_time + length_ms,
            seller: FIRST_PERSON_ID + seller,
            category: FIRST_CATEGORY_ID + rng.below(NUM_CATEGORIES),
            extra: String::new(),
        }
    }

    fn bid(&self, index: u64, date_time: i64, rng: &mut EventRng) -> Bid {
        let newest_auction = last_auction(index);
        let auction_ratio = self.config.hot_auction_ratio;
        let auction = if rng.hot(auction_ratio) {
            // The first auction of the newest batch of `ratio` auctions.
            newest_auction / auction_ratio * auction_ratio
        } else {
            let oldest = newest_auction.saturating_sub(self.config.num_in_flight_auctions);
            oldest + rng.below(newest_auction - oldest + 1)
        };
        let newest_person = last_person(index);
        let bidder_ratio = self.config.hot_bidders_ratio;
        let bidder = if rng.hot(bidder_ratio) {
            // The second person of the newest batch (so that hot bidders are not hot sellers),
            // or of the batch before when the newest has only its first person yet.
            let batch = newest_person / bidder_ratio * bidder_ratio;
            if batch < newest_person {
                batch + 1
            } else if batch >= bidder_ratio {
                batch - bidder_ratio + 1
            } else {
                newest_person
            }
        } else {
            self.active_person(index, rng)
        };
        let price = rng.price();
        let (channel, url) = if rng.hot(self.config.hot_channels_ratio) {
            let i = rng.below(HOT_CHANNELS.len() as u64) as usize;
            (HOT_CHANNELS[i].to_owned(), HOT_URLS[i].to_owned())
        } else {
            let n = rng.below(CHANNELS_NUMBER);
            let mut channel = String::with_capacity(12);
            let _ = write!(channel, "channel-{n}");
            let mut url = String::with_capacity(60);
            let _ = write!(
                url,
                "https://www.nexmark.com/item.htm?query=1&channel_id={n}"
            );
            (channel, url)
        };
        Bid {
            auction: FIRST_AUCTION_ID + auction,
            bidder: FIRST_PERSON_ID + bidder,
            price,
            channel,
            url,
            date_time,
            extra: String::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_open_with_a_person_then_three_auctions() {
        let kinds: Vec<EventKind> = (0..6).map(event_kind).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Person,
                EventKind::Auction,
                EventKind::Auction,
                EventKind::Auction,
                EventKind::Bid,
                EventKind::Bid
            ]
        );
        assert_eq!(event_kind(50), EventKind::Person);
        assert_eq!(event_kind(99), EventKind::Bid);
    }

    #[test]
    fn ids_count_persons_and_auctions() {
        let generator = NexmarkGenerator::new(NexmarkConfig::default());
        let NexmarkEvent::Person(p) = generator.event(100) else {
            panic!("event 100 is a person")
        };
        assert_eq!(p.id, FIRST_PERSON_ID + 2);
        let NexmarkEvent::Auction(a) = generator.event(53) else {
            panic!("event 53 is an auction")
        };
        assert_eq!(a.id, FIRST_AUCTION_ID + 5);
        assert_eq!(a.date_time, generator.date_time(53));
        assert!(a.expires > a.date_time);
    }

    #[test]
    fn share_starts_at_the_workers_first_index() {
        let generator = NexmarkGenerator::new(NexmarkConfig::default());
        let share: Vec<i64> = generator
            .share(7..20, 1, 3)
            .map(|e| e.date_time())
            .collect();
        let expected: Vec<i64> = [7, 10, 13, 16, 19]
            .iter()
            .map(|&i| generator.date_time(i))
            .collect();
        assert_eq!(share, expected);
        assert_eq!(generator.share(5..5, 0, 2).count(), 0);
    }

    #[test]
    fn json_round_trips_with_a_type_field() {
        let generator = NexmarkGenerator::new(NexmarkConfig::default());
        for index in 0..60 {
            let event = generator.event(index);
            let line = event.to_json();
            assert!(!line.contains('\n'));
            let kind = match event {
                NexmarkEvent::Person(_) => "\"type\":\"person\"",
                NexmarkEvent::Auction(_) => "\"type\":\"auction\"",
                NexmarkEvent::Bid(_) => "\"type\":\"bid\"",
            };
            assert!(line.contains(kind), "{line}");
            assert_eq!(NexmarkEvent::from_json(&line).unwrap(), event);
        }
        assert!(NexmarkEvent::from_json("{\"type\":\"lot\"}").is_err());
    }
}
