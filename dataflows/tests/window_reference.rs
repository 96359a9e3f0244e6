//! Reference-model test in the style of differential's `reduce_reference`: readings arrive over
//! many epochs, many of them late for windows already reported; at EVERY epoch the accumulated
//! output of `station_window_totals` must equal a from-scratch recomputation over all readings
//! inserted so far.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::{Arc, Mutex};

use differential_dataflow::input::Input;
use tidewater_dataflows::{
    station_window_totals, Reading, StationTotals, StationWindow, TumblingWindow,
};

const HOUR: i64 = 3_600_000_000;

/// Tiny deterministic PRNG (the test must not depend on `rand` versions).
struct Lcg(u64);
impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn reading(rng: &mut Lcg) -> Reading {
    let station = ["59 ST", "FULTON ST", "CANAL ST", "125 ST", "86 ST"][rng.below(5) as usize];
    Reading {
        ca: "A002".into(),
        unit: "R051".into(),
        scp: format!("02-00-0{}", rng.below(4)),
        station: station.into(),
        linename: "NQR456W".into(),
        division: "BMT".into(),
        // Six hours of event time in any order: most readings are late for some window.
        ts: 1_709_280_000_000_000 + rng.below(6 * HOUR as u64) as i64,
        desc: "REGULAR".into(),
        entries: rng.below(50) as i64,
        exits: rng.below(40) as i64,
    }
}

fn recompute(
    readings: &[Reading],
    window: TumblingWindow,
) -> BTreeMap<StationWindow, StationTotals> {
    let mut view: BTreeMap<StationWindow, StationTotals> = BTreeMap::new();
    for r in readings {
        let start = window.start_of(r.ts);
        let key = StationWindow {
            window_start: start,
            window_end: start + window.size_us,
            station: r.station.clone(),
        };
        let totals = view.entry(key).or_default();
        totals.readings += 1;
        totals.entries += r.entries;
        totals.exits += r.exits;
    }
    view
}

type View = BTreeMap<StationWindow, StationTotals>;

#[test]
fn output_equals_recomputation_at_every_epoch() {
    for workers in [1, 3] {
        // Epoch → (union of every worker's accumulated output, recomputation from scratch).
        let results: Arc<Mutex<BTreeMap<u64, (View, View)>>> = Arc::default();
        let shared = Arc::clone(&results);
        timely::execute(timely::Config::process(workers), move |worker| {
            let window = TumblingWindow { size_us: HOUR };
            let output = Rc::new(RefCell::new(Vec::new()));
            let sink = Rc::clone(&output);
            let (mut input, probe) = worker.dataflow::<u64, _, _>(|scope| {
                let (input, readings) = scope.new_collection::<Reading, isize>();
                let (probe, _) = station_window_totals(readings, window)
                    .inspect(move |update| sink.borrow_mut().push(update.clone()))
                    .probe();
                (input, probe)
            });

            let (index, peers) = (worker.index(), worker.peers());
            let mut rng = Lcg(17);
            let mut inserted = Vec::new();
            let mut accumulated: BTreeMap<(StationWindow, StationTotals), isize> = BTreeMap::new();
            for epoch in 0..40u64 {
                // Every worker generates the same readings and inserts its share.
                for i in 0..(1 + rng.below(60)) {
                    let r = reading(&mut rng);
                    if i as usize % peers == index {
                        input.insert(r.clone());
                    }
                    inserted.push(r);
                }
                input.advance_to(epoch + 1);
                input.flush();
                worker.step_while(|| probe.less_than(input.time()));

                for (row, time, diff) in output.borrow_mut().drain(..) {
                    assert!(
                        time <= epoch,
                        "output at {time} while closing epoch {epoch}"
                    );
                    *accumulated.entry(row).or_insert(0) += diff;
                }
                accumulated.retain(|_, diff| *diff != 0);
                let mut results = shared.lock().unwrap();
                let (union, expected) = results.entry(epoch).or_default();
                for ((group, totals), diff) in &accumulated {
                    assert_eq!(*diff, 1, "epoch {epoch}: {group:?} has multiplicity {diff}");
                    assert!(
                        union.insert(group.clone(), *totals).is_none(),
                        "two workers output {group:?}"
                    );
                }
                if index == 0 {
                    *expected = recompute(&inserted, window);
                }
            }
        })
        .unwrap();
        let results = results.lock().unwrap();
        assert_eq!(results.len(), 40);
        for (epoch, (union, expected)) in results.iter() {
            assert_eq!(union, expected, "{workers} workers, epoch {epoch}");
        }
    }
}
