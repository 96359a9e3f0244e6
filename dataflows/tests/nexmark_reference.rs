//! Nexmark queries against a reference model, in the manner of differential dataflow's
//! `tests/reduce_reference.rs`: generated events go in over several epochs of uneven size, on
//! one worker and on three, and at *every* epoch the accumulated output (all updates at times up
//! to it, consolidated) must equal a from-scratch plain-Rust evaluation of the query over the
//! events of the epochs so far. Also: the generator is random access, its shares partition the
//! stream, its references point at existing records, and its mix is 1:3:46.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use tidewater_dataflows::nexmark::queries::{
    Q1_EUROS_PER_1000_DOLLARS, Q2_AUCTION_MODULUS, Q5_SLIDE_MS, Q5_WINDOW_MS, Q7_WINDOW_MS,
    Q8_WINDOW_MS,
};
use tidewater_dataflows::nexmark::{
    build_query, Bid, NexmarkConfig, NexmarkEvent, NexmarkGenerator, NexmarkRow, Query,
};

/// Events per epoch: uneven, one epoch of a single event, 40,000 in all.
const EPOCH_SIZES: [u64; 7] = [1, 4_999, 12_000, 3_141, 9_000, 859, 10_000];

/// 5 ms between events: 40,000 events span 200 s, i.e. 20 tumbling and ~100 hopping windows of
/// ~2,000 events each, and many windows receive events in two epochs (so results get updated).
fn sparse_config(seed: u64) -> NexmarkConfig {
    NexmarkConfig {
        seed,
        inter_event_delay_us: 5_000,
        ..NexmarkConfig::default()
    }
}

/// What the test does to each generated event before feeding it (and before the reference
/// sees it).
type Transform = fn(NexmarkEvent) -> NexmarkEvent;

fn unchanged(event: NexmarkEvent) -> NexmarkEvent {
    event
}

/// Prices 1..=5 only, so that q7's windows have many bids tied at the highest price.
fn tied_prices(event: NexmarkEvent) -> NexmarkEvent {
    match event {
        NexmarkEvent::Bid(mut bid) => {
            bid.price = bid.price % 5 + 1;
            NexmarkEvent::Bid(bid)
        }
        other => other,
    }
}

type Update = (NexmarkRow, u64, isize);

/// Runs `query` on `workers` worker threads, each feeding its share of every epoch, and returns
/// every output update.
fn run(query: Query, config: &NexmarkConfig, transform: Transform, workers: usize) -> Vec<Update> {
    let captured: Arc<Mutex<Vec<Update>>> = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&captured);
    let generator = NexmarkGenerator::new(config.clone());
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let (index, peers) = (worker.index(), worker.peers());
        let sink = Arc::clone(&sink);
        let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
            let (input, events) = scope.new_collection::<NexmarkEvent, isize>();
            let (probe, _) = build_query(query, events)
                .inspect(move |(row, time, diff)| {
                    sink.lock().unwrap().push((row.clone(), *time, *diff))
                })
                .probe();
            (input, probe)
        });
        let mut start = 0;
        for size in EPOCH_SIZES {
            for event in generator.share(start..start + size, index, peers) {
                input.insert(transform(event));
            }
            start += size;
            input.advance_to(*input.time() + 1);
            input.flush();
            worker.step_while(|| probe.less_than(input.time()));
        }
    })
    .expect("timely starts");
    for result in guards.join() {
        result.expect("worker finishes");
    }
    let updates = captured.lock().unwrap().clone();
    updates
}

/// The multiset of rows after all updates at times up to `epoch`, without zero counts.
fn accumulate(updates: &[Update], epoch: u64) -> BTreeMap<NexmarkRow, isize> {
    let mut rows = BTreeMap::new();
    for (row, time, diff) in updates {
        if *time <= epoch {
            *rows.entry(row.clone()).or_insert(0) += diff;
        }
    }
    rows.retain(|_, count| *count != 0);
    rows
}

/// The query's output over `events`, from scratch, as a multiset.
fn reference(query: Query, events: &[NexmarkEvent]) -> BTreeMap<NexmarkRow, isize> {
    let rows: Vec<NexmarkRow> = match query {
        Query::Q1 => reference_q1(events),
        Query::Q2 => reference_q2(events),
        Query::Q5 => reference_q5(events),
        Query::Q7 => reference_q7(events),
        Query::Q8 => reference_q8(events),
    };
    let mut multiset = BTreeMap::new();
    for row in rows {
        *multiset.entry(row).or_insert(0) += 1;
    }
    multiset
}

fn bids(events: &[NexmarkEvent]) -> impl Iterator<Item = &Bid> {
    events.iter().filter_map(|e| match e {
        NexmarkEvent::Bid(bid) => Some(bid),
        _ => None,
    })
}

fn reference_q1(events: &[NexmarkEvent]) -> Vec<NexmarkRow> {
    bids(events)
        .map(|b| NexmarkRow::Q1 {
            auction: b.auction,
            bidder: b.bidder,
            price: b.price * Q1_EUROS_PER_1000_DOLLARS / 1000,
            date_time: b.date_time,
        })
        .collect()
}

fn reference_q2(events: &[NexmarkEvent]) -> Vec<NexmarkRow> {
    bids(events)
        .filter(|b| b.auction % Q2_AUCTION_MODULUS == 0)
        .map(|b| NexmarkRow::Q2 {
            auction: b.auction,
            price: b.price,
        })
        .collect()
}

/// Window starts (multiples of `slide`) whose `[start, start + size)` holds `time`, found by
/// testing every multiple of `slide` near `time` against the definition.
fn windows_holding(time: i64, size: i64, slide: i64) -> Vec<i64> {
    let near = time - time.rem_euclid(slide);
    (-(size / slide) - 1..=1)
        .map(|k| near + k * slide)
        .filter(|&start| start <= time && time < start + size)
        .collect()
}

fn reference_q5(events: &[NexmarkEvent]) -> Vec<NexmarkRow> {
    let mut counts: BTreeMap<i64, HashMap<u64, u64>> = BTreeMap::new();
    for bid in bids(events) {
        for start in windows_holding(bid.date_time, Q5_WINDOW_MS, Q5_SLIDE_MS) {
            *counts
                .entry(start)
                .or_default()
                .entry(bid.auction)
                .or_insert(0) += 1;
        }
    }
    let mut rows = Vec::new();
    for (window_start, per_auction) in counts {
        let most = per_auction
            .values()
            .copied()
            .max()
            .expect("a window with bids");
        for (&auction, &count) in &per_auction {
            if count == most {
                rows.push(NexmarkRow::Q5 {
                    window_start,
                    auction,
                    count,
                });
            }
        }
    }
    rows
}

fn reference_q7(events: &[NexmarkEvent]) -> Vec<NexmarkRow> {
    let mut windows: BTreeMap<i64, Vec<(u64, u64, u64)>> = BTreeMap::new();
    for bid in bids(events) {
        let [start] = windows_holding(bid.date_time, Q7_WINDOW_MS, Q7_WINDOW_MS)[..] else {
            panic!("a time is in exactly one tumbling window")
        };
        windows
            .entry(start)
            .or_default()
            .push((bid.price, bid.auction, bid.bidder));
    }
    let mut rows = BTreeSet::new();
    for (window_start, bids) in windows {
        let highest = bids.iter().map(|b| b.0).max().expect("a window with bids");
        for &(price, auction, bidder) in bids.iter().filter(|b| b.0 == highest) {
            rows.insert(NexmarkRow::Q7 {
                window_start,
                auction,
                bidder,
                price,
            });
        }
    }
    rows.into_iter().collect()
}

fn reference_q8(events: &[NexmarkEvent]) -> Vec<NexmarkRow> {
    let window = |time: i64| time - time.rem_euclid(Q8_WINDOW_MS);
    let sellers: HashSet<(u64, i64)> = events
        .iter()
        .filter_map(|e| match e {
            NexmarkEvent::Auction(a) => Some((a.seller, window(a.date_time))),
            _ => None,
        })
        .collect();
    let rows: BTreeSet<NexmarkRow> = events
        .iter()
        .filter_map(|e| match e {
            NexmarkEvent::Person(p) if sellers.contains(&(p.id, window(p.date_time))) => {
                Some(NexmarkRow::Q8 {
                    person: p.id,
                    name: p.name.clone(),
                    window_start: window(p.date_time),
                })
            }
            _ => None,
        })
        .collect();
    rows.into_iter().collect()
}

/// Describes how two multisets of rows differ (a few rows of each side).
fn difference(got: &BTreeMap<NexmarkRow, isize>, want: &BTreeMap<NexmarkRow, isize>) -> String {
    let extra: Vec<_> = got
        .iter()
        .filter(|(row, count)| want.get(*row) != Some(*count))
        .take(5)
        .collect();
    let missing: Vec<_> = want
        .iter()
        .filter(|(row, count)| got.get(*row) != Some(*count))
        .take(5)
        .collect();
    format!(
        "{} rows, expected {}; unexpected or miscounted: {extra:?}; missing or miscounted: {missing:?}",
        got.len(),
        want.len()
    )
}

/// The reference output after each epoch.
fn reference_per_epoch(
    query: Query,
    config: &NexmarkConfig,
    transform: Transform,
) -> Vec<BTreeMap<NexmarkRow, isize>> {
    let generator = NexmarkGenerator::new(config.clone());
    let mut events = Vec::new();
    let mut expected = Vec::new();
    for size in EPOCH_SIZES {
        let start = events.len() as u64;
        events.extend((start..start + size).map(|i| transform(generator.event(i))));
        expected.push(reference(query, &events));
    }
    expected
}

/// Runs `query` on 1 and on 3 workers and compares every epoch's accumulated output with the
/// reference; returns the reference per epoch for query-specific checks.
fn check_query(
    query: Query,
    config: &NexmarkConfig,
    transform: Transform,
) -> Vec<BTreeMap<NexmarkRow, isize>> {
    let expected = reference_per_epoch(query, config, transform);
    assert!(
        !expected.last().unwrap().is_empty(),
        "{query}: the reference output is empty, the test would prove nothing"
    );
    for workers in [1, 3] {
        let updates = run(query, config, transform, workers);
        let last_epoch = EPOCH_SIZES.len() as u64 - 1;
        assert!(
            updates.iter().all(|(_, time, _)| *time <= last_epoch),
            "{query}: an update after the last epoch"
        );
        for (epoch, want) in expected.iter().enumerate() {
            let got = accumulate(&updates, epoch as u64);
            assert!(
                &got == want,
                "{query} on {workers} worker(s), epoch {epoch}: {}",
                difference(&got, want)
            );
        }
    }
    expected
}

/// Rows present after one epoch and gone after the next: results that were updated, not only
/// added to.
fn retracted_rows(expected: &[BTreeMap<NexmarkRow, isize>]) -> usize {
    expected
        .windows(2)
        .map(|pair| {
            pair[0]
                .keys()
                .filter(|row| !pair[1].contains_key(*row))
                .count()
        })
        .sum()
}

#[test]
fn q1_matches_the_reference() {
    let expected = check_query(Query::Q1, &sparse_config(1), unchanged);
    // 46 bids in every 50 events.
    assert_eq!(expected.last().unwrap().values().sum::<isize>(), 36_800);
}

#[test]
fn q2_matches_the_reference() {
    check_query(Query::Q2, &sparse_config(2), unchanged);
}

#[test]
fn q5_matches_the_reference() {
    let expected = check_query(Query::Q5, &sparse_config(5), unchanged);
    // The test must exercise updated windows and ties for the most bids.
    assert!(
        retracted_rows(&expected) > 10,
        "q5: too few updated windows"
    );
    let mut per_window: HashMap<i64, usize> = HashMap::new();
    for row in expected.last().unwrap().keys() {
        if let NexmarkRow::Q5 { window_start, .. } = row {
            *per_window.entry(*window_start).or_insert(0) += 1;
        }
    }
    assert!(
        per_window.values().any(|&n| n > 1),
        "q5: no window with tied auctions"
    );
}

#[test]
fn q5_matches_the_reference_with_dense_events() {
    // 100 µs between events: 40,000 events in 4 s, so every window gets events in every epoch
    // and hot auctions collect large counts.
    let config = NexmarkConfig {
        seed: 55,
        ..NexmarkConfig::default()
    };
    check_query(Query::Q5, &config, unchanged);
}

#[test]
fn q7_matches_the_reference() {
    let expected = check_query(Query::Q7, &sparse_config(7), unchanged);
    assert!(
        retracted_rows(&expected) > 0,
        "q7: no window's highest bid changed"
    );
}

#[test]
fn q7_matches_the_reference_with_tied_prices() {
    let expected = check_query(Query::Q7, &sparse_config(77), tied_prices);
    let rows = expected.last().unwrap().len();
    assert!(rows > 100, "q7: only {rows} rows, expected many ties");
}

#[test]
fn q8_matches_the_reference() {
    let expected = check_query(Query::Q8, &sparse_config(8), unchanged);
    assert!(expected.last().unwrap().len() > 50);
}

#[test]
fn generator_is_random_access_and_deterministic() {
    let config = sparse_config(3);
    let generator = NexmarkGenerator::new(config.clone());
    let forward: Vec<NexmarkEvent> = (0..20_000).map(|i| generator.event(i)).collect();
    let again = NexmarkGenerator::new(config);
    // Backwards and strided access produce the same events as a forward pass.
    for i in (0..20_000u64).rev().step_by(7) {
        assert_eq!(again.event(i), forward[i as usize], "event {i}");
    }
    let other_seed = NexmarkGenerator::new(sparse_config(4));
    let differing = (0..20_000)
        .filter(|&i| other_seed.event(i) != forward[i as usize])
        .count();
    assert!(
        differing > 19_000,
        "another seed changed only {differing} events"
    );
}

#[test]
fn generator_shares_partition_the_stream() {
    let generator = NexmarkGenerator::new(sparse_config(9));
    let single: Vec<NexmarkEvent> = generator.share(0..40_000, 0, 1).collect();
    assert_eq!(single.len(), 40_000);
    for peers in [2usize, 3, 5] {
        let mut by_index: BTreeMap<u64, NexmarkEvent> = BTreeMap::new();
        let mut start = 0;
        for size in EPOCH_SIZES {
            let range = start..start + size;
            for worker in 0..peers {
                let indices: Vec<u64> = range
                    .clone()
                    .filter(|i| i % peers as u64 == worker as u64)
                    .collect();
                let share: Vec<NexmarkEvent> =
                    generator.share(range.clone(), worker, peers).collect();
                assert_eq!(share.len(), indices.len(), "{peers} peers, worker {worker}");
                for (index, event) in indices.into_iter().zip(share) {
                    assert!(
                        by_index.insert(index, event).is_none(),
                        "index {index} twice"
                    );
                }
            }
            start += size;
        }
        let union: Vec<NexmarkEvent> = by_index.into_values().collect();
        assert!(
            union == single,
            "{peers} peers: the shares differ from one stream"
        );
    }
}

#[test]
fn generator_references_existing_records_in_the_reference_mix() {
    let generator = NexmarkGenerator::new(NexmarkConfig::default());
    let mut persons: HashSet<u64> = HashSet::new();
    let mut auctions: HashSet<u64> = HashSet::new();
    let mut bids_per_auction: HashMap<u64, u64> = HashMap::new();
    let mut last_time = i64::MIN;
    for block in 0..1_000u64 {
        let mut mix = [0u32; 3];
        for index in block * 50..block * 50 + 50 {
            let event = generator.event(index);
            assert!(event.date_time() >= last_time, "time went back at {index}");
            last_time = event.date_time();
            match event {
                NexmarkEvent::Person(p) => {
                    assert_eq!(p.id, 1000 + persons.len() as u64, "person ids are dense");
                    persons.insert(p.id);
                    mix[0] += 1;
                }
                NexmarkEvent::Auction(a) => {
                    assert_eq!(a.id, 1000 + auctions.len() as u64, "auction ids are dense");
                    assert!(
                        persons.contains(&a.seller),
                        "auction {} by unknown seller",
                        a.id
                    );
                    assert!(a.expires > a.date_time && a.reserve >= a.initial_bid);
                    auctions.insert(a.id);
                    mix[1] += 1;
                }
                NexmarkEvent::Bid(b) => {
                    assert!(
                        auctions.contains(&b.auction),
                        "bid {index} on unknown auction"
                    );
                    assert!(persons.contains(&b.bidder), "bid {index} by unknown bidder");
                    assert!((100..=100_000_000).contains(&b.price), "price {}", b.price);
                    *bids_per_auction.entry(b.auction).or_insert(0) += 1;
                    mix[2] += 1;
                }
            }
        }
        assert_eq!(mix, [1, 3, 46], "block {block}");
    }
    // Skew: half the bids go to the hot auction of their block (one auction in three), so the
    // busiest tenth of auctions has about a quarter of the bids; a uniform choice among the
    // in-flight auctions would give them about a tenth.
    let mut counts: Vec<u64> = bids_per_auction.into_values().collect();
    counts.sort_unstable_by(|a, b| b.cmp(a));
    let busiest: u64 = counts[..counts.len() / 10].iter().sum();
    let total: u64 = counts.iter().sum();
    assert!(
        busiest * 100 > total * 20,
        "the busiest tenth of auctions has {busiest} of {total} bids"
    );
}
