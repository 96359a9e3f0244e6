//! The `finalize` operator: turns a view's differential output into row changes for its table.
//!
//! Per epoch it sees the changes of the view's aggregates and the source watermark. Every table
//! row is identified by its group and window start; a change becomes an upsert of the new row
//! or a delete. A window whose `end + allowed_lateness <= watermark` is final: its row is emitted
//! once more with `is_final = true` (in `final` mode, that is its only appearance), it is no
//! longer kept here, and later changes to it are evictions (see `retire`) and are ignored.
//! Rows of open windows are kept, so a window that becomes final without changing can still be
//! emitted; that is the only state, and it holds open windows only.

use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use super::windows::WindowedValue;
use crate::reading::EventTime;
use crate::value::Value;
use crate::view::{EmitMode, ViewSpec};
use crate::window::{is_final, WindowKind};
use crate::Epoch;

/// A change to one row of one view's table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ViewChange {
    /// Index of the view in the pipeline.
    pub view: usize,
    /// The key columns: the group fields, then `window_start` for windowed views.
    pub key: Vec<Value>,
    /// The whole new row, or `None` to delete the row.
    pub row: Option<Vec<Value>>,
}

/// Per table row (group, window start): its window end and aggregates, or `None` if deleted.
type Touched = BTreeMap<(Vec<Value>, EventTime), Option<(EventTime, Vec<Value>)>>;

/// One row of a windowed view as the aggregation produces it.
struct WindowRow {
    start: EventTime,
    end: EventTime,
    group: Vec<Value>,
    aggregates: Vec<Value>,
}

impl WindowRow {
    /// Session views carry their session's extent in front of the aggregates.
    fn from_output(window: WindowKind, (key, output): WindowedValue) -> WindowRow {
        match (window, output.as_slice()) {
            (WindowKind::Session { .. }, [Value::Timestamp(start), Value::Timestamp(end), ..]) => {
                WindowRow {
                    start: *start,
                    end: *end,
                    group: key.group,
                    aggregates: output[2..].to_vec(),
                }
            }
            _ => WindowRow {
                start: key.start,
                end: key.end,
                group: key.group,
                aggregates: output,
            },
        }
    }
}

pub trait Finalize<'scope> {
    /// `self` is the view's aggregate output (`(key, aggregates)` updates).
    fn finalize(
        self,
        watermark: StreamVec<'scope, Epoch, EventTime>,
        view_index: usize,
        view: Rc<ViewSpec>,
    ) -> StreamVec<'scope, Epoch, ViewChange>;
}

impl<'scope> Finalize<'scope> for StreamVec<'scope, Epoch, (WindowedValue, Epoch, isize)> {
    fn finalize(
        self,
        watermark: StreamVec<'scope, Epoch, EventTime>,
        view_index: usize,
        view: Rc<ViewSpec>,
    ) -> StreamVec<'scope, Epoch, ViewChange> {
        self.binary_frontier(
            watermark,
            Pipeline,
            Pipeline,
            "Finalize",
            move |_cap, _info| {
                let window = view.window;
                let lateness = view.allowed_lateness;
                // Rows of open windows, ordered by window end so the final ones are a prefix.
                let mut open: BTreeMap<(EventTime, EventTime, Vec<Value>), Vec<Value>> =
                    BTreeMap::new();
                let mut watermark = i64::MIN;
                type Pending = (
                    Capability<Epoch>,
                    Vec<(WindowedValue, isize)>,
                    Option<EventTime>,
                );
                let mut pending: BTreeMap<Epoch, Pending> = BTreeMap::new();
                move |(changes, changes_frontier), (watermarks, watermark_frontier), output| {
                    changes.for_each(|cap, data| {
                        for (update, time, diff) in data.drain(..) {
                            let entry = pending
                                .entry(time)
                                .or_insert_with(|| (cap.delayed(&time, 0), Vec::new(), None));
                            entry.1.push((update, diff));
                        }
                    });
                    watermarks.for_each(|cap, data| {
                        let Some(&epoch) = cap.least() else { return };
                        let entry = pending.entry(epoch).or_insert_with(|| {
                            (
                                cap.retain_least(0).expect("input capability"),
                                Vec::new(),
                                None,
                            )
                        });
                        for &w in data.iter() {
                            entry.2 = Some(entry.2.map_or(w, |known: EventTime| known.max(w)));
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        let epoch = *entry.key();
                        if changes_frontier.less_equal(&epoch)
                            || watermark_frontier.less_equal(&epoch)
                        {
                            break;
                        }
                        let (cap, mut updates, epoch_watermark) = entry.remove();
                        let previous = watermark;
                        watermark = watermark.max(epoch_watermark.unwrap_or(i64::MIN));
                        // Per table row (group, window start): its new state, if it changed.
                        let mut touched: Touched = BTreeMap::new();
                        // Retractions first: an update is a retraction of the old row and an
                        // insertion of the new one.
                        updates.sort_by_key(|(_, diff)| *diff);
                        for (update, diff) in updates {
                            let row = WindowRow::from_output(window, update);
                            if window.is_windowed() && is_final(row.end, lateness, previous) {
                                continue; // an eviction of a window that is already final
                            }
                            let id = (row.group.clone(), row.start);
                            if diff < 0 {
                                touched.entry(id).or_insert(None);
                                if window.is_windowed() {
                                    open.remove(&(row.end, row.start, row.group));
                                }
                            } else {
                                touched.insert(id, Some((row.end, row.aggregates.clone())));
                                if window.is_windowed() {
                                    open.insert((row.end, row.start, row.group), row.aggregates);
                                }
                            }
                        }
                        let mut emitted: BTreeMap<(Vec<Value>, EventTime), Option<Vec<Value>>> =
                            BTreeMap::new();
                        if view.emit == EmitMode::Update {
                            for ((group, start), state) in touched {
                                let row = state.map(|(end, aggregates)| {
                                    view_row(&view, &group, start, end, aggregates, false)
                                });
                                emitted.insert((group, start), row);
                            }
                        }
                        if window.is_windowed() {
                            while let Some(first) = open.first_entry() {
                                let (end, _, _) = first.key();
                                if !is_final(*end, lateness, watermark) {
                                    break;
                                }
                                let ((end, start, group), aggregates) = first.remove_entry();
                                let row = view_row(&view, &group, start, end, aggregates, true);
                                emitted.insert((group, start), Some(row));
                            }
                        }
                        if !emitted.is_empty() {
                            let windowed = window.is_windowed();
                            output.session(&cap).give_iterator(emitted.into_iter().map(
                                |((mut key, start), row)| {
                                    if windowed {
                                        key.push(Value::Timestamp(start));
                                    }
                                    ViewChange {
                                        view: view_index,
                                        key,
                                        row,
                                    }
                                },
                            ));
                        }
                    }
                }
            },
        )
    }
}

/// A table row: group fields, window start and end, aggregates, `is_final` (windowed views).
fn view_row(
    view: &ViewSpec,
    group: &[Value],
    start: EventTime,
    end: EventTime,
    aggregates: Vec<Value>,
    is_final: bool,
) -> Vec<Value> {
    let mut row = Vec::with_capacity(view.columns.len());
    row.extend_from_slice(group);
    if view.window.is_windowed() {
        row.push(Value::Timestamp(start));
        row.push(Value::Timestamp(end));
    }
    row.extend(aggregates);
    if view.window.is_windowed() {
        row.push(Value::Bool(is_final));
    }
    row
}
