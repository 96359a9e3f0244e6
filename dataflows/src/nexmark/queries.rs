//! Nexmark queries 1, 2, 5, 7 and 8 as incremental differential dataflow computations.
//!
//! Each query is a function from the collection of events to the collection of its output rows.
//! Windows are on the events' `date_time` (event time is data, the timely time is the ingestion
//! epoch) and never close: every window's result is maintained as events arrive, so at each
//! epoch the accumulated output equals the query evaluated over all events seen so far. No
//! watermark is needed, and a late event simply updates its (old) window.
//!
//! Performance is designed in, because these feed a throughput benchmark:
//! * each query first keeps only the fields it reads (small tuples, no strings, except q8's
//!   names), so exchanges and arrangements move few bytes;
//! * the stateful queries pre-aggregate on each worker per epoch before exchanging
//!   ([`sum_per_epoch`], [`max_per_epoch`]), so a worker ships one update per key and epoch
//!   instead of one per event;
//! * counts use `count_total`, whose work per epoch is proportional to the keys that changed,
//!   and the per-window `reduce`s then see one value per auction (q5) or only the epochs' best
//!   bids (q7), not every bid of the window.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::str::FromStr;

use differential_dataflow::operators::arrange::arrangement::arrange_core;
use differential_dataflow::operators::{CountTotal, ThresholdTotal};
use differential_dataflow::trace::implementations::{KeyBatcher, KeySpine};
use differential_dataflow::{AsCollection, ExchangeData, VecCollection};
use serde::{Deserialize, Serialize};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Exchange, Operator};

use super::model::NexmarkEvent;
use crate::error::DataflowError;
use crate::Epoch;

/// q1's exchange rate: euros per 1000 dollars.
pub const Q1_EUROS_PER_1000_DOLLARS: u64 = 908;
/// q2 keeps the bids on auctions whose id is a multiple of this.
pub const Q2_AUCTION_MODULUS: u64 = 123;
/// q5's hopping windows: this long (ms)…
pub const Q5_WINDOW_MS: i64 = 10_000;
/// …starting every this many ms.
pub const Q5_SLIDE_MS: i64 = 2_000;
/// q7's tumbling windows (ms).
pub const Q7_WINDOW_MS: i64 = 10_000;
/// q8's tumbling windows (ms).
pub const Q8_WINDOW_MS: i64 = 10_000;

/// One output row of any of the queries, so a harness can run each the same way.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum NexmarkRow {
    /// A bid with its price converted from dollars to euros.
    Q1 {
        auction: u64,
        bidder: u64,
        price: u64,
        date_time: i64,
    },
    /// A bid on one of the selected auctions.
    Q2 { auction: u64, price: u64 },
    /// An auction with the most bids of its hopping window (`count` of them; ties: all).
    Q5 {
        window_start: i64,
        auction: u64,
        count: u64,
    },
    /// A bid with the highest price of its tumbling window (ties: all).
    Q7 {
        window_start: i64,
        auction: u64,
        bidder: u64,
        price: u64,
    },
    /// A person who opened an auction in the window in which they registered.
    Q8 {
        person: u64,
        name: String,
        window_start: i64,
    },
}

/// The queries this module implements.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Query {
    Q1,
    Q2,
    Q5,
    Q7,
    Q8,
}

impl Query {
    pub const ALL: [Query; 5] = [Query::Q1, Query::Q2, Query::Q5, Query::Q7, Query::Q8];

    /// `q1`, `q2`, …: the name [`FromStr`] reads.
    pub fn name(self) -> &'static str {
        match self {
            Query::Q1 => "q1",
            Query::Q2 => "q2",
            Query::Q5 => "q5",
            Query::Q7 => "q7",
            Query::Q8 => "q8",
        }
    }
}

impl fmt::Display for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Query {
    type Err = DataflowError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Query::ALL
            .into_iter()
            .find(|q| q.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                DataflowError::InvalidView(format!(
                    "unknown Nexmark query {s:?} (expected q1, q2, q5, q7 or q8)"
                ))
            })
    }
}

/// Builds `query` on `events`; the one entry point for harnesses.
pub fn build_query<'scope>(
    query: Query,
    events: VecCollection<'scope, Epoch, NexmarkEvent>,
) -> VecCollection<'scope, Epoch, NexmarkRow> {
    match query {
        Query::Q1 => q1_currency_conversion(events),
        Query::Q2 => q2_selection(events),
        Query::Q5 => q5_hot_items(events),
        Query::Q7 => q7_highest_bid(events),
        Query::Q8 => q8_monitor_new_users(events),
    }
}

/// Start of the tumbling window of `size` ms that holds `time` (windows align to the Unix epoch).
pub fn tumbling_window_start(time: i64, size: i64) -> i64 {
    time.div_euclid(size) * size
}

/// Starts of the hopping windows (`size` ms long, one starting every `slide` ms) that hold
/// `time`, newest first.
pub fn hopping_window_starts(time: i64, size: i64, slide: i64) -> impl Iterator<Item = i64> {
    let newest = time.div_euclid(slide) * slide;
    (0..)
        .map(move |k| newest - k * slide)
        .take_while(move |start| time < start + size)
}

/// q1, currency conversion: every bid, its price in euros (`price * 908 / 1000`). Stateless.
pub fn q1_currency_conversion<'scope>(
    events: VecCollection<'scope, Epoch, NexmarkEvent>,
) -> VecCollection<'scope, Epoch, NexmarkRow> {
    events.flat_map(|event| match event {
        NexmarkEvent::Bid(bid) => Some(NexmarkRow::Q1 {
            auction: bid.auction,
            bidder: bid.bidder,
            price: bid.price * Q1_EUROS_PER_1000_DOLLARS / 1000,
            date_time: bid.date_time,
        }),
        _ => None,
    })
}

/// q2, selection: `(auction, price)` of the bids on auctions whose id is a multiple of 123.
/// Stateless.
pub fn q2_selection<'scope>(
    events: VecCollection<'scope, Epoch, NexmarkEvent>,
) -> VecCollection<'scope, Epoch, NexmarkRow> {
    events.flat_map(|event| match event {
        NexmarkEvent::Bid(bid) if bid.auction % Q2_AUCTION_MODULUS == 0 => Some(NexmarkRow::Q2 {
            auction: bid.auction,
            price: bid.price,
        }),
        _ => None,
    })
}

/// q5, hot items: per hopping window (10 s, every 2 s) the auction(s) with the most bids.
///
/// Bids become `(window, auction)` records, summed per epoch on each worker (hot auctions make
/// these sums large, so this ships far fewer updates), counted by `count_total` (work per epoch:
/// the `(window, auction)` keys that changed), and a `reduce` per window keeps the largest
/// counts. That reduce reads one `(count, auction)` per auction of a changed window, never the
/// bids themselves.
pub fn q5_hot_items<'scope>(
    events: VecCollection<'scope, Epoch, NexmarkEvent>,
) -> VecCollection<'scope, Epoch, NexmarkRow> {
    let bids = events.flat_map(|event| match event {
        NexmarkEvent::Bid(bid) => Some((bid.auction, bid.date_time)),
        _ => None,
    });
    // Each auction's bids go to one worker before they are summed: otherwise every worker
    // ships its own sum for the same hot (window, auction), and the workers' count
    // arrangements merge about twice the updates with two workers as with one.
    let bids = bids
        .inner
        .exchange(|((auction, _), _, _)| {
            let mut hasher = WordHasher::default();
            hasher.write_u64(*auction);
            hasher.finish()
        })
        .as_collection();
    let bids_per_window = bids.flat_map(|(auction, time)| {
        hopping_window_starts(time, Q5_WINDOW_MS, Q5_SLIDE_MS).map(move |start| (start, auction))
    });
    let sums = sum_per_epoch(
        bids_per_window,
        "Q5: bids per window and auction, per epoch",
    );
    // The bids were exchanged by auction, so every (window, auction) is on one worker already:
    // its count is arranged where it is, with no second exchange.
    arrange_core::<_, _, KeyBatcher<(i64, u64), Epoch, isize>, KeySpine<(i64, u64), Epoch, isize>>(
        sums.map(|key| (key, ())).inner,
        Pipeline,
        "Q5: Arrange: bids per window and auction",
        KeyBatcher::new,
    )
    .count_total()
    .map(|((window, auction), count)| (window, (count, auction)))
    .reduce_named(
        "Q5: auctions with the most bids per window",
        |_window, counts: &[(&(isize, u64), isize)], output| {
            // Values arrive sorted, so the largest counts are last.
            let most = counts.last().map_or(0, |(value, _)| value.0);
            for (value, _) in counts.iter().rev().take_while(|(v, _)| v.0 == most) {
                output.push((**value, 1));
            }
        },
    )
    .map(|(window_start, (count, auction))| NexmarkRow::Q5 {
        window_start,
        auction,
        count: count as u64,
    })
}

/// A q7 candidate as the per-window reduce sees it: `(price, (auction, bidder))`, so that the
/// highest prices sort last.
type Q7Candidate = (u64, (u64, u64));

/// q7, highest bid: per tumbling 10 s window the bid(s) with the highest price.
///
/// Bids are only ever inserted, so a bid that is not among the highest of its window in its own
/// epoch on its own worker can never be the window's highest: [`max_per_epoch`] drops it before
/// the exchange, and the `reduce` per window sees a handful of candidates per epoch and worker
/// instead of every bid of the window.
pub fn q7_highest_bid<'scope>(
    events: VecCollection<'scope, Epoch, NexmarkEvent>,
) -> VecCollection<'scope, Epoch, NexmarkRow> {
    let bids = events.flat_map(|event| match event {
        NexmarkEvent::Bid(bid) => Some((
            tumbling_window_start(bid.date_time, Q7_WINDOW_MS),
            (bid.price, (bid.auction, bid.bidder)),
        )),
        _ => None,
    });
    max_per_epoch(bids, "Q7: highest bids per window, per epoch")
        .reduce_named(
            "Q7: highest bids per window",
            |_window, bids: &[(&Q7Candidate, isize)], output| {
                let highest = bids.last().map_or(0, |(bid, _)| bid.0);
                for (bid, _) in bids.iter().rev().take_while(|(b, _)| b.0 == highest) {
                    output.push((**bid, 1));
                }
            },
        )
        .map(
            |(window_start, (price, (auction, bidder)))| NexmarkRow::Q7 {
                window_start,
                auction,
                bidder,
                price,
            },
        )
}

/// What q8 reads of an event: a person's `(id, window)` and name, or a seller's
/// `(seller, window)`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Q8Input {
    Person((u64, i64), String),
    Seller(u64, i64),
}

/// q8, monitor new users: persons who opened an auction in the same tumbling 10 s window in
/// which they registered, as `(person, name, window)`, each once.
///
/// One pass over the events keeps q8's 8% (persons and auctions) as small records; only those
/// are then copied to the two sides of the join (copying the events themselves, strings and
/// all, cost more than the query). Sellers' `(seller, window)` pairs are made distinct first
/// (hot sellers open many auctions per window), then persons keyed by `(id, window)` are
/// semi-joined with them.
pub fn q8_monitor_new_users<'scope>(
    events: VecCollection<'scope, Epoch, NexmarkEvent>,
) -> VecCollection<'scope, Epoch, NexmarkRow> {
    let inputs = events.flat_map(|event| match event {
        NexmarkEvent::Person(person) => Some(Q8Input::Person(
            (
                person.id,
                tumbling_window_start(person.date_time, Q8_WINDOW_MS),
            ),
            person.name,
        )),
        NexmarkEvent::Auction(auction) => Some(Q8Input::Seller(
            auction.seller,
            tumbling_window_start(auction.date_time, Q8_WINDOW_MS),
        )),
        NexmarkEvent::Bid(_) => None,
    });
    let persons = inputs.clone().flat_map(|input| match input {
        Q8Input::Person(key, name) => Some((key, name)),
        Q8Input::Seller(..) => None,
    });
    let sellers = inputs
        .flat_map(|input| match input {
            Q8Input::Seller(seller, window_start) => Some((seller, window_start)),
            Q8Input::Person(..) => None,
        })
        .distinct_total();
    persons
        .semijoin(sellers)
        .map(|((person, window_start), name)| (person, name, window_start))
        .distinct_total()
        .map(|(person, name, window_start)| NexmarkRow::Q8 {
            person,
            name,
            window_start,
        })
}

/// FxHash-style hasher for the per-epoch maps: a multiply and a rotate per word. The keys are
/// ids and times this module made itself, so SipHash's flooding resistance buys nothing here.
#[derive(Clone, Copy, Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0.rotate_left(26)
    }

    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0xf135_7aea_2e62_a9c5);
    }

    #[inline]
    fn write_i64(&mut self, word: i64) {
        self.write_u64(word as u64);
    }
}

type WordHashMap<K, V> = HashMap<K, V, BuildHasherDefault<WordHasher>>;

/// Sums the diffs of equal records per epoch on this worker, and emits each record once with
/// its sum when the epoch is complete ("stash by capability, emit when the frontier passes").
///
/// The collection it returns is the same collection (only consolidated), but a key that gets
/// thousands of updates in an epoch now costs one exchanged update instead of thousands.
pub fn sum_per_epoch<'scope, K>(
    updates: VecCollection<'scope, Epoch, K>,
    name: &str,
) -> VecCollection<'scope, Epoch, K>
where
    K: ExchangeData + Hash,
{
    updates
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<(K, Epoch, isize)>>, _, _, _>(
            Pipeline,
            name,
            |_capability, _info| {
                let mut pending: BTreeMap<Epoch, (Capability<Epoch>, WordHashMap<K, isize>)> =
                    BTreeMap::new();
                // Epochs are alike: sized like the last one, a map does not rehash as it fills.
                let mut last_keys = 0;
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for (key, time, diff) in data.drain(..) {
                            let (_, sums) = pending.entry(time).or_insert_with(|| {
                                let sums = WordHashMap::with_capacity_and_hasher(
                                    last_keys,
                                    Default::default(),
                                );
                                (capability.delayed(&time, 0), sums)
                            });
                            *sums.entry(key).or_insert(0) += diff;
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, (capability, sums)) = entry.remove_entry();
                        last_keys = sums.len();
                        output.session(&capability).give_iterator(
                            sums.into_iter()
                                .filter(|(_, diff)| *diff != 0)
                                .map(|(key, diff)| (key, time, diff)),
                        );
                    }
                }
            },
        )
        .as_collection()
}

/// The best `(rank, payload)` values of one key within one epoch, with their multiplicities.
struct Best<P, X> {
    rank: P,
    values: Vec<(X, isize)>,
}

/// Per epoch not yet complete: a capability for it, and the best values per key so far.
type PendingMaxima<K, P, X> = BTreeMap<Epoch, (Capability<Epoch>, WordHashMap<K, Best<P, X>>)>;

/// Keeps, per key and epoch on this worker, only the updates whose rank (the value's first
/// component) is the largest of that key in that epoch (ties: all of them), emitted when the
/// epoch is complete.
///
/// Valid only for insert-only input: a dropped value could never be a key's maximum later,
/// because whatever beat it stays. A retraction would break that, so it panics on one.
pub fn max_per_epoch<'scope, K, P, X>(
    updates: VecCollection<'scope, Epoch, (K, (P, X))>,
    name: &str,
) -> VecCollection<'scope, Epoch, (K, (P, X))>
where
    K: ExchangeData + Hash,
    P: ExchangeData,
    X: ExchangeData,
{
    updates
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<((K, (P, X)), Epoch, isize)>>, _, _, _>(
            Pipeline,
            name,
            |_capability, _info| {
                let mut pending: PendingMaxima<K, P, X> = BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|capability, data| {
                        for ((key, (rank, payload)), time, diff) in data.drain(..) {
                            assert!(diff > 0, "max_per_epoch needs insert-only input");
                            let (_, best) = pending.entry(time).or_insert_with(|| {
                                (capability.delayed(&time, 0), WordHashMap::default())
                            });
                            match best.entry(key) {
                                std::collections::hash_map::Entry::Vacant(slot) => {
                                    slot.insert(Best {
                                        rank,
                                        values: vec![(payload, diff)],
                                    });
                                }
                                std::collections::hash_map::Entry::Occupied(mut slot) => {
                                    let best = slot.get_mut();
                                    if rank > best.rank {
                                        best.rank = rank;
                                        best.values.clear();
                                        best.values.push((payload, diff));
                                    } else if rank == best.rank {
                                        best.values.push((payload, diff));
                                    }
                                }
                            }
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (time, (capability, best)) = entry.remove_entry();
                        output
                            .session(&capability)
                            .give_iterator(best.into_iter().flat_map(|(key, best)| {
                                let rank = best.rank;
                                best.values.into_iter().map(move |(payload, diff)| {
                                    ((key.clone(), (rank.clone(), payload)), time, diff)
                                })
                            }));
                    }
                }
            },
        )
        .as_collection()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopping_windows_hold_the_time() {
        let starts: Vec<i64> = hopping_window_starts(12_345, 10_000, 2_000).collect();
        assert_eq!(starts, [12_000, 10_000, 8_000, 6_000, 4_000]);
        let starts: Vec<i64> = hopping_window_starts(12_000, 10_000, 2_000).collect();
        assert_eq!(starts, [12_000, 10_000, 8_000, 6_000, 4_000]);
        let starts: Vec<i64> = hopping_window_starts(-1, 10_000, 2_000).collect();
        assert_eq!(starts, [-2_000, -4_000, -6_000, -8_000, -10_000]);
        assert_eq!(tumbling_window_start(-1, 10_000), -10_000);
        assert_eq!(tumbling_window_start(19_999, 10_000), 10_000);
    }

    #[test]
    fn queries_parse_by_name() {
        for query in Query::ALL {
            assert_eq!(query.name().parse::<Query>().unwrap(), query);
        }
        assert_eq!("Q7".parse::<Query>().unwrap(), Query::Q7);
        assert!("q3".parse::<Query>().is_err());
    }
}
