//! The `retire_final_windows` operator: evicts windows that became final from the arrangement.
//!
//! When the source watermark of epoch `e` is known and the arrangement holds everything up to
//! `e`, the operator reads the final windows' contents from the arrangement's trace and emits
//! their negation, which a feedback edge brings back into the arrangement at `e + 1`. The
//! windows then accumulate to nothing, differential's compaction drops them as the frontier
//! moves, and the state holds open windows only. Fixed windows are a prefix of the trace (keys
//! order by window start), so the scan stops at the first open window; sessions are found per
//! group from the event times. The views' `finalize` operators know that changes of a final
//! window from `e + 1` on are evictions and ignore them.

use std::collections::BTreeMap;

use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::implementations::ValSpine;
use differential_dataflow::trace::TraceReader;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;
use timely::progress::Antichain;

use super::windows::WindowedValue;
use crate::reading::EventTime;
use crate::value::Value;
use crate::window::{is_final, sessions, WindowKey, WindowKind};
use crate::Epoch;

/// The arrangement of a view's input: (window, group) → input values.
pub type WindowTrace = TraceAgent<ValSpine<WindowKey, Vec<Value>, Epoch, isize>>;

pub trait RetireFinalWindows<'scope> {
    /// Negations of the contents of windows that became final at epoch `e`, timestamped `e + 1`
    /// and sent at `e`: the caller feeds them back through a feedback edge that adds one epoch
    /// (a feedback edge moves messages, not the times inside the data).
    fn retire_final_windows(
        &self,
        watermark: StreamVec<'scope, Epoch, EventTime>,
        window: WindowKind,
        allowed_lateness: i64,
    ) -> StreamVec<'scope, Epoch, (WindowedValue, Epoch, isize)>;
}

impl<'scope> RetireFinalWindows<'scope> for Arranged<'scope, WindowTrace> {
    fn retire_final_windows(
        &self,
        watermark: StreamVec<'scope, Epoch, EventTime>,
        window: WindowKind,
        allowed_lateness: i64,
    ) -> StreamVec<'scope, Epoch, (WindowedValue, Epoch, isize)> {
        let mut trace = self.trace.clone();
        self.stream.clone().binary_frontier(
            watermark,
            Pipeline,
            Pipeline,
            "RetireFinalWindows",
            move |_cap, _info| {
                let mut requested = i64::MIN;
                let mut pending: BTreeMap<Epoch, (Capability<Epoch>, EventTime)> = BTreeMap::new();
                move |(batches, batches_frontier), (watermarks, watermark_frontier), output| {
                    batches.for_each(|_cap, _data| {});
                    watermarks.for_each(|cap, data| {
                        let Some(&epoch) = cap.least() else { return };
                        for &w in data.iter() {
                            if w > requested {
                                requested = w;
                                let cap = cap.retain_least(0).expect("input capability");
                                pending.insert(epoch, (cap, w));
                            }
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        let epoch = *entry.key();
                        if batches_frontier.less_equal(&epoch)
                            || watermark_frontier.less_equal(&epoch)
                        {
                            break;
                        }
                        // Read through the trace's own upper, which is a batch boundary;
                        // our input frontier may lie inside a batch the arrangement already
                        // added (its message still in flight to us).
                        let mut upper = Antichain::new();
                        trace.read_upper(&mut upper);
                        let Some(batches) = trace.batches_through(upper.borrow()) else {
                            break;
                        };
                        let (cap, watermark) = entry.remove();
                        let mut retractions = Vec::new();
                        let (mut cursor, storage) = cursor_list(batches);
                        while cursor.key_valid(&storage) {
                            let key: &WindowKey = cursor.key(&storage);
                            let mut contents: Vec<(&Vec<Value>, isize)> = Vec::new();
                            let mut final_prefix_ended = false;
                            match window {
                                WindowKind::Global => break,
                                WindowKind::Hopping { .. } => {
                                    if !is_final(key.end, allowed_lateness, watermark) {
                                        final_prefix_ended = true;
                                    }
                                }
                                WindowKind::Session { .. } => {}
                            }
                            if final_prefix_ended {
                                break;
                            }
                            while cursor.val_valid(&storage) {
                                let mut count = 0isize;
                                cursor.map_times(&storage, |_time, diff| count += *diff);
                                if count != 0 {
                                    contents.push((cursor.val(&storage), count));
                                }
                                cursor.step_val(&storage);
                            }
                            match window {
                                WindowKind::Session { gap } => {
                                    let times: Vec<EventTime> =
                                        contents.iter().map(|(v, _)| session_time(v)).collect();
                                    for (_, end, first, last) in sessions(&times, gap) {
                                        if is_final(end, allowed_lateness, watermark) {
                                            retractions.extend(contents[first..last].iter().map(
                                                |(v, n)| {
                                                    ((key.clone(), (*v).clone()), epoch + 1, -n)
                                                },
                                            ));
                                        }
                                    }
                                }
                                _ => retractions.extend(
                                    contents
                                        .iter()
                                        .map(|(v, n)| ((key.clone(), (*v).clone()), epoch + 1, -n)),
                                ),
                            }
                            cursor.step_key(&storage);
                        }
                        if !retractions.is_empty() {
                            output.session(&cap).give_iterator(retractions.into_iter());
                        }
                    }
                    // This reader must not hold back compaction of the trace.
                    trace.set_logical_compaction(batches_frontier.frontier());
                    trace.set_physical_compaction(batches_frontier.frontier());
                }
            },
        )
    }
}

/// The event time a session view's input values start with.
fn session_time(values: &[Value]) -> EventTime {
    match values.first() {
        Some(Value::Timestamp(t)) => *t,
        _ => i64::MIN,
    }
}
