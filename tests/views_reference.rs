//! Reference-model property test of declared views, in the style of differential dataflow's
//! `reduce_reference`: random partitions of random records (keys, event times out of order,
//! late and malformed records) run through every window kind and every aggregate, with 1 and 3
//! workers; after EVERY committed snapshot, each view table and `_late` in the real DuckDB file
//! must equal a from-scratch model (`common::model`) over exactly the records below that
//! snapshot's offsets. The dataflow is the engine's (`build_views` + `Warehouse`); only Kafka is
//! replaced by timely inputs, so many cases fit in CI.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::model::*;
use proptest::prelude::*;
use tidewater::Pipeline;
use tidewater_dataflows::operators::CollectSnapshots;
use tidewater_dataflows::{build_views, RawRecord, SourceProgress, SourceStreams};
use tidewater_sinks::Warehouse;
use timely::dataflow::operators::vec::Input;

/// One generated case: partitions of messages, and where each epoch ends in each partition.
#[derive(Clone, Debug)]
pub struct Case {
    pub partitions: Vec<Vec<Msg>>,
    /// `cuts[p][e]`: the next offset of partition `p` at the end of epoch `e`.
    pub cuts: Vec<Vec<usize>>,
    pub out_of_orderness: i64,
    pub lateness: i64,
}

pub fn pipeline_toml(warehouse: &std::path::Path, case: &Case) -> String {
    let mut text = source_toml("127.0.0.1:9", case.out_of_orderness);
    for view in views(case.lateness) {
        text.push_str(&view.toml());
    }
    text.push_str(&format!(
        "[warehouse]\npath = {:?}\n",
        warehouse.display().to_string()
    ));
    text
}

/// Runs a case through the engine's dataflow with `workers` workers, checking every snapshot.
/// Returns how many snapshots were checked.
pub fn run_case(case: &Case, workers: usize) -> usize {
    run_case_in(&tempfile::tempdir().unwrap(), case, workers)
}

/// As `run_case`, writing the warehouse into `dir` (so a test can query it afterwards).
pub fn run_case_in(dir: &tempfile::TempDir, case: &Case, workers: usize) -> usize {
    let path = dir.path().join("w.duckdb");
    let pipeline = Pipeline::from_toml(&pipeline_toml(&path, case), "case").unwrap();
    let warehouse = Warehouse::open(
        &path,
        &pipeline.views,
        &pipeline.source_infos(),
        &pipeline.definition(),
    )
    .unwrap();
    let slot = Arc::new(Mutex::new(Some(warehouse)));
    let checked = Arc::new(AtomicUsize::new(0));
    let case = Arc::new(case.clone());
    let shared = (Arc::new(pipeline), Arc::clone(&checked));
    timely::execute(timely::Config::process(workers), move |worker| {
        let (pipeline, checked) = (Arc::clone(&shared.0), Arc::clone(&shared.1));
        let case = Arc::clone(&case);
        let check_case = Arc::clone(&case);
        let mut warehouse = if worker.index() == 0 {
            slot.lock().unwrap().take()
        } else {
            None
        };
        let (mut records, mut progress) = worker.dataflow::<u64, _, _>(|scope| {
            let (records_in, records) = scope.new_input::<RawRecord>();
            let (progress_in, progress) = scope.new_input::<SourceProgress>();
            let streams = vec![SourceStreams { records, progress }];
            let mut watermark = i64::MIN;
            build_views(scope, &pipeline.sources, &pipeline.views, streams).collect_snapshots(
                move |snapshot| {
                    let warehouse = warehouse.as_mut().unwrap();
                    let Some(info) = warehouse.commit(&snapshot).unwrap() else {
                        return;
                    };
                    let conn = warehouse.connection();
                    let offsets = read_offsets(conn, info.snapshot_id, EVENTS);
                    let case = &check_case;
                    watermark = next_watermark(
                        watermark,
                        &case.partitions,
                        &offsets,
                        case.out_of_orderness,
                    );
                    let expected = expected(
                        &views(case.lateness),
                        &case.partitions,
                        &offsets,
                        case.out_of_orderness,
                        watermark,
                    );
                    assert_snapshot_matches(
                        conn,
                        info.snapshot_id,
                        &expected,
                        EVENTS,
                        &format!("epoch {}", info.epoch),
                    );
                    checked.fetch_add(1, Ordering::Relaxed);
                },
            );
            (records_in, progress_in)
        });
        let (index, peers) = (worker.index(), worker.peers());
        let epochs = case.cuts.first().map_or(0, |c| c.len());
        for epoch in 0..epochs {
            for (p, messages) in case.partitions.iter().enumerate() {
                if p % peers != index {
                    continue;
                }
                let begin = if epoch == 0 {
                    0
                } else {
                    case.cuts[p][epoch - 1]
                };
                let end = case.cuts[p][epoch];
                for (offset, message) in messages.iter().enumerate().take(end).skip(begin) {
                    records.send(RawRecord {
                        partition: p as i32,
                        offset: offset as i64,
                        payload: message.payload(),
                    });
                }
                progress.send(SourceProgress {
                    partition: p as i32,
                    next_offset: end as i64,
                    records: (end - begin) as u64,
                    max_event_time: None,
                    idle: false,
                    finished: false,
                });
            }
            records.advance_to(epoch as u64 + 1);
            progress.advance_to(epoch as u64 + 1);
            for _ in 0..3 {
                worker.step();
            }
        }
    })
    .unwrap();
    checked.load(Ordering::Relaxed)
}

fn rec_strategy() -> impl Strategy<Value = (Rec, bool)> {
    (
        0..4usize,
        0..3i64,
        prop::option::weighted(0.8, -5..10i64),
        0..8i32,
        any::<bool>(),
        -8..20i64,
        prop::bool::weighted(0.05),
    )
        .prop_map(|(key, sub, value, score, flag, step, bad)| {
            let rec = Rec {
                key: ["a", "b", "c", "d"][key].to_owned(),
                sub,
                value,
                score: score as f64 * 0.25,
                flag,
                // Relative move of event time in seconds, turned into a random walk below.
                ts: step,
            };
            (rec, bad)
        })
}

fn case_strategy() -> impl Strategy<Value = Case> {
    (
        prop::collection::vec(prop::collection::vec(rec_strategy(), 1..40), 1..4),
        1..8usize,
        0..4i64,
        prop::sample::select(vec![0i64, 2, 5]),
        any::<u64>(),
    )
        .prop_map(|(raw, epochs, out_of_orderness, lateness, seed)| {
            let mut rng = seed | 1;
            let mut next = move |bound: usize| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % bound as u64) as usize
            };
            let partitions: Vec<Vec<Msg>> = raw
                .into_iter()
                .map(|recs| {
                    let mut clock = 30i64;
                    recs.into_iter()
                        .map(|(mut rec, bad)| {
                            // Mostly forward, sometimes far back: late and out-of-order records.
                            clock += rec.ts.clamp(-3, 4);
                            let back = if rec.ts < -5 { 12 } else { 0 };
                            rec.ts = T0 + (clock - back).max(0) * SECOND;
                            if bad {
                                Msg::Bad(match rec.sub {
                                    0 => b"{not json".to_vec(),
                                    1 => br#"{"key":"a","sub":"x","score":1,"flag":true,"ts":"2024-03-04T00:00:00Z"}"#.to_vec(),
                                    _ => br#"{"key":"a","sub":1,"score":1,"flag":true,"ts":"yesterday"}"#.to_vec(),
                                })
                            } else {
                                Msg::Good(rec)
                            }
                        })
                        .collect()
                })
                .collect();
            let cuts = partitions
                .iter()
                .map(|messages| {
                    let mut cuts: Vec<usize> =
                        (0..epochs).map(|_| next(messages.len() + 1)).collect();
                    cuts.sort();
                    *cuts.last_mut().unwrap() = messages.len();
                    cuts
                })
                .collect();
            Case {
                partitions,
                cuts,
                out_of_orderness: out_of_orderness * SECOND,
                lateness: lateness * SECOND,
            }
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn every_snapshot_equals_the_model_with_1_and_3_workers(case in case_strategy()) {
        for workers in [1, 3] {
            let checked = run_case(&case, workers);
            prop_assert!(checked >= 1, "no snapshot was committed");
        }
    }
}

#[test]
fn a_hand_made_case_with_late_records_is_checked() {
    let rec = |key: &str, ts: i64, value: i64| {
        Msg::Good(Rec {
            key: key.to_owned(),
            sub: value % 2,
            value: Some(value),
            score: 0.5,
            flag: value > 3,
            ts: T0 + ts * SECOND,
        })
    };
    // Partition 0 runs ahead; partition 1 then sends a record 30 s behind its own clock.
    let case = Case {
        partitions: vec![
            vec![
                rec("a", 1, 1),
                rec("b", 12, 2),
                rec("a", 25, 3),
                rec("a", 41, 4),
            ],
            vec![
                rec("a", 3, 5),
                rec("b", 44, 6),
                rec("a", 4, 7),
                Msg::Bad(b"oops".to_vec()),
            ],
        ],
        cuts: vec![vec![2, 4, 4], vec![1, 2, 4]],
        out_of_orderness: 2 * SECOND,
        lateness: 2 * SECOND,
    };
    for workers in [1, 2] {
        assert_eq!(run_case(&case, workers), 3);
    }
    let offsets: BTreeMap<i32, i64> = [(0, 4), (1, 4)].into();
    let model = expected(
        &views(case.lateness),
        &case.partitions,
        &offsets,
        case.out_of_orderness,
        i64::MIN,
    );
    assert!(
        model
            .late
            .iter()
            .any(|(view, p, o, _)| view == "tumbling" && *p == 1 && *o == 2),
        "{:?}",
        model.late
    );
}

/// Golden tests: one small input, read by hand, and the expected rows of each window kind.
mod golden {
    use super::*;

    fn rec(key: &str, second: i64, value: i64) -> Msg {
        Msg::Good(Rec {
            key: key.to_owned(),
            sub: value % 2,
            value: Some(value),
            score: 1.0,
            flag: value >= 3,
            ts: T0 + second * SECOND,
        })
    }

    /// One partition, one epoch, no out-of-orderness, no allowed lateness. Records in offset
    /// order (key@second value): a@1 1, a@4 2, b@5 3, a@12 4, b@8 5, a@30 6, a@2 7. The partition
    /// watermark before b@8 is 12 and before a@2 is 30; the source watermark at the end is 30.
    /// `flag` is `value >= 3`, `sub` is `value % 2`. Rows are compared as text, sorted.
    fn tables(query: &str) -> Vec<String> {
        let case = Case {
            partitions: vec![vec![
                rec("a", 1, 1),
                rec("a", 4, 2),
                rec("b", 5, 3),
                rec("a", 12, 4),
                rec("b", 8, 5),
                rec("a", 30, 6),
                rec("a", 2, 7),
            ]],
            cuts: vec![vec![7]],
            out_of_orderness: 0,
            lateness: 0,
        };
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(run_case_in(&dir, &case, 2), 1);
        let conn = duckdb::Connection::open(dir.path().join("w.duckdb")).unwrap();
        let mut statement = conn
            .prepare(&format!(
                "SELECT concat_ws(' | ', *COLUMNS(*)) FROM ({query}) ORDER BY ALL"
            ))
            .unwrap();
        let rows = statement
            .query_map([], |row| row.get::<_, String>(0))
            .unwrap();
        rows.map(Result::unwrap).collect()
    }

    /// Window bounds as seconds after T0.
    const S: &str =
        "(epoch(window_start) - 1709510400)::INT AS s, (epoch(window_end) - 1709510400)::INT AS e";

    #[test]
    fn tumbling_10s() {
        // b@8 arrives after a@12 (watermark 12): window [0,10) ends at 10 <= 12, so b@8 is late.
        // a@2 arrives at watermark 30: late too. [30,40) is open (30 + 10 > 30).
        assert_eq!(
            tables(&format!("SELECT key, {S}, n, sum_value, min_value, max_value, distinct_sub, is_final FROM tumbling")),
            [
                "a | 0 | 10 | 2 | 3 | 1 | 2 | 2 | true",
                "a | 10 | 20 | 1 | 4 | 4 | 4 | 1 | true",
                "a | 30 | 40 | 1 | 6 | 6 | 6 | 1 | false",
                "b | 0 | 10 | 1 | 3 | 3 | 3 | 1 | true",
            ]
        );
        assert_eq!(
            tables("SELECT \"view\", \"offset\", (epoch(window_start) - 1709510400)::INT FROM _late WHERE \"view\" LIKE 'tumbling%'"),
            ["tumbling | 4 | 0", "tumbling | 6 | 0", "tumbling_shared | 4 | 0", "tumbling_shared | 6 | 0"]
        );
        // emit = "final": only the final windows.
        assert_eq!(
            tables(&format!(
                "SELECT key, {S}, n, max_value FROM tumbling_shared"
            )),
            [
                "a | 0 | 10 | 2 | 2",
                "a | 10 | 20 | 1 | 4",
                "b | 0 | 10 | 1 | 3"
            ]
        );
    }

    #[test]
    fn hopping_10s_every_4s() {
        // Windows start at multiples of 4: a@1 is in [-8,2) and [-4,6) and [0,10).
        assert_eq!(
            tables(&format!("SELECT key, flag, {S}, n, sum_value, is_final FROM hopping WHERE key = 'a' AND NOT flag")),
            // (sorted as text: "-4" before "-8")
            [
                "a | false | -4 | 6 | 2 | 3 | true",
                "a | false | -8 | 2 | 1 | 1 | true",
                "a | false | 0 | 10 | 2 | 3 | true",
                "a | false | 4 | 14 | 1 | 2 | true",
            ]
        );
        assert_eq!(
            tables(&format!(
                "SELECT key, {S}, n, is_final FROM hopping WHERE key = 'b'"
            )),
            // b@5 (flag: v3 >= 3); b@8 came at watermark 12: [0,10) final, so late there, but
            // [4,14) and [8,18) were still open.
            [
                "b | -4 | 6 | 1 | true",
                "b | 0 | 10 | 1 | true",
                "b | 4 | 14 | 2 | true",
                "b | 8 | 18 | 1 | true"
            ]
        );
    }

    #[test]
    fn sessions_gap_3s() {
        // a: 1, 4 (4 - 1 >= 3: new session), 12, 30; a@2 is late (2 + 0 < watermark 30).
        // b: 5, then 8 (late: 8 < watermark 12).
        assert_eq!(
            tables(&format!(
                "SELECT key, {S}, n, sum_value, is_final FROM sessions"
            )),
            [
                "a | 1 | 4 | 1 | 1 | true",
                "a | 12 | 15 | 1 | 4 | true",
                "a | 30 | 33 | 1 | 6 | false",
                "a | 4 | 7 | 1 | 2 | true",
                "b | 5 | 8 | 1 | 3 | true",
            ]
        );
    }

    #[test]
    fn running_aggregate_without_window() {
        // filter `value > 2 or flag`; group (key, sub); never late, never final.
        assert_eq!(
            tables("SELECT key, sub, n, sum_value, max_value FROM running"),
            [
                "a | 0 | 2 | 10 | 6",
                "a | 1 | 1 | 7 | 7",
                "b | 1 | 2 | 8 | 5"
            ]
        );
    }
}
