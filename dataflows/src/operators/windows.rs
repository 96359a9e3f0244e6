//! The `assign_windows` operator: filter, group, window, and the lateness rule.
//!
//! Each event that passes the view's filter becomes one insertion per window it belongs to,
//! keyed by (window, group) and carrying the values the aggregates read. When every aggregate
//! of the views combines, the event is folded into its epoch's partial aggregate of that key
//! instead, and each epoch emits one partial per key it touched (see `EpochPartials`). An event
//! whose window is already final goes to `_late` (one row per view and window), so it changes
//! nothing.
//!
//! Lateness is decided against the larger of two watermarks: the event's own partition
//! watermark (deterministic: it depends on the partition's earlier records only), and the source
//! watermark of the previous epoch, `W(e-1)`. As long as no partition is idle the second is never
//! the larger (a source watermark is a minimum over partitions that each only move forward), so
//! results do not depend on timing. A partition that was idle was left out of `W`; when its
//! records come back, windows may have become final meanwhile, and those records are late by
//! `W(e-1)` even though their own partition had not passed the window: that is the price of not
//! waiting for idle partitions, and the only way timing can change a result.
//!
//! Events of epoch `e` wait (stashed with their capability) until `W(e-1)` is known.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::rc::Rc;

use differential_dataflow::{AsCollection, VecCollection};
use hashbrown::HashTable;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::OutputBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::aggregate::{fold_into_partial, partial_of};
use crate::filter::Filter;
use crate::reading::{Event, EventTime, LateRecord};
use crate::value::Value;
use crate::window::{is_final, session_record_is_late, WindowKey, WindowKind};
use crate::Epoch;

/// What one arrangement needs from the events; shared by every view that agrees on it.
#[derive(Clone, Debug)]
pub struct WindowAssignment {
    pub filter: Option<Filter>,
    pub group_by: Vec<usize>,
    pub window: WindowKind,
    pub allowed_lateness: i64,
    /// Fields kept for the aggregates, in this order (sessions put the event time first).
    pub projection: Vec<usize>,
    /// Names of the views sharing this assignment, for their `_late` rows.
    pub views: Vec<String>,
    /// Emit one partial aggregate per (window, group) and epoch instead of one row per record
    /// (see [`crate::aggregate::partial_of`]); only when every view's aggregates are combinable.
    pub partials: bool,
}

/// One arrangement input: `((window and group), input values)`.
pub type WindowedValue = (WindowKey, Vec<Value>);

impl WindowAssignment {
    /// Calls `open(start, end)` for each window of `event` that is not final under `watermark`
    /// and adds a late row for each that is; nothing for an event the filter drops.
    fn for_each_open_window(
        &self,
        event: &Event,
        watermark: EventTime,
        late: &mut Vec<LateRecord>,
        mut open: impl FnMut(EventTime, EventTime),
    ) {
        if self.filter.as_ref().is_some_and(|f| !f.matches(&event.row)) {
            return;
        }
        let mut late_for = |window_start| {
            late.extend(self.views.iter().map(|view| LateRecord {
                view: view.clone(),
                partition: event.partition,
                offset: event.offset,
                event_time: event.event_time,
                window_start,
                payload: event.payload.clone(),
            }))
        };
        match self.window {
            WindowKind::Hopping { .. } => {
                for (start, end) in self.window.fixed_windows(event.event_time) {
                    if is_final(end, self.allowed_lateness, watermark) {
                        late_for(start);
                    } else {
                        open(start, end);
                    }
                }
            }
            WindowKind::Session { .. }
                if session_record_is_late(event.event_time, self.allowed_lateness, watermark) =>
            {
                late_for(event.event_time);
            }
            WindowKind::Global | WindowKind::Session { .. } => open(0, 0),
        }
    }

    /// The insertions and late rows of one event, given the watermark that decides lateness:
    /// one insertion of the projected values per open window.
    fn assign(
        &self,
        event: &Event,
        watermark: EventTime,
        inserts: &mut Vec<WindowedValue>,
        late: &mut Vec<LateRecord>,
    ) {
        // Session views carry each record's event time in front of the aggregates' inputs.
        let session_time = matches!(self.window, WindowKind::Session { .. })
            .then_some(Value::Timestamp(event.event_time));
        self.for_each_open_window(event, watermark, late, |start, end| {
            let key = WindowKey {
                start,
                end,
                group: self
                    .group_by
                    .iter()
                    .map(|&i| event.row[i].clone())
                    .collect(),
            };
            let values = session_time
                .iter()
                .cloned()
                .chain(self.projection.iter().map(|&i| event.row[i].clone()))
                .collect();
            inserts.push((key, values));
        });
    }

    /// Folds one event into its epoch's partials (for [`WindowAssignment::partials`]), and
    /// adds its late rows.
    fn fold(
        &self,
        event: &Event,
        watermark: EventTime,
        partials: &mut EpochPartials,
        late: &mut Vec<LateRecord>,
    ) {
        self.for_each_open_window(event, watermark, late, |start, end| {
            partials.fold(start, end, self, &event.row)
        });
    }
}

/// One epoch's partial aggregates per (window, group), folded as its events are assigned and
/// emitted once the epoch's last event has been: the combiner of a map-reduce, before the
/// arrangement's exchange and sort. Folding a whole epoch (not each input batch) is what makes
/// it pay: a batch of a thousand readings has almost as many keys as readings, an epoch of
/// hundreds of thousands has only the keys its windows touch, so the arrangement sorts and
/// holds that many rows instead of one per event. An event that finds its key allocates
/// nothing: the key is hashed and compared in place, in the event's row.
struct EpochPartials {
    cap: Capability<Epoch>,
    hasher: foldhash::fast::RandomState,
    partials: HashTable<WindowedValue>,
}

impl EpochPartials {
    fn new(cap: Capability<Epoch>) -> Self {
        EpochPartials {
            cap,
            hasher: foldhash::fast::RandomState::default(),
            partials: HashTable::new(),
        }
    }

    fn fold(
        &mut self,
        start: EventTime,
        end: EventTime,
        assignment: &WindowAssignment,
        row: &[Value],
    ) {
        let group = || assignment.group_by.iter().map(|&i| &row[i]);
        let values = assignment.projection.iter().map(|&i| &row[i]);
        let hash = key_hash(&self.hasher, start, end, group());
        let found = self.partials.find_mut(hash, |(key, _)| {
            key.start == start && key.end == end && key.group.iter().eq(group())
        });
        match found {
            Some((_, partial)) => fold_into_partial(partial, values),
            None => {
                let key = WindowKey {
                    start,
                    end,
                    group: group().cloned().collect(),
                };
                let entry = (key, partial_of(values));
                let hasher = &self.hasher;
                self.partials.insert_unique(hash, entry, |(key, _)| {
                    key_hash(hasher, key.start, key.end, key.group.iter())
                });
            }
        }
    }
}

/// The hash of a (window, group) key, from the key or from the group's values in a row.
fn key_hash<'a>(
    hasher: &foldhash::fast::RandomState,
    start: EventTime,
    end: EventTime,
    group: impl Iterator<Item = &'a Value>,
) -> u64 {
    let mut state = hasher.build_hasher();
    (start, end).hash(&mut state);
    group.for_each(|value| value.hash(&mut state));
    state.finish()
}

/// Events stashed until the watermark that decides their lateness is known.
struct Waiting {
    inserts_cap: Capability<Epoch>,
    late_cap: Capability<Epoch>,
    events: Vec<Event>,
}

pub trait AssignWindows<'scope> {
    /// `watermark` is the source watermark stream of the events' source.
    fn assign_windows(
        self,
        watermark: StreamVec<'scope, Epoch, EventTime>,
        assignment: Rc<WindowAssignment>,
    ) -> (
        VecCollection<'scope, Epoch, WindowedValue>,
        StreamVec<'scope, Epoch, LateRecord>,
    );
}

impl<'scope> AssignWindows<'scope> for StreamVec<'scope, Epoch, Event> {
    fn assign_windows(
        self,
        watermark: StreamVec<'scope, Epoch, EventTime>,
        assignment: Rc<WindowAssignment>,
    ) -> (
        VecCollection<'scope, Epoch, WindowedValue>,
        StreamVec<'scope, Epoch, LateRecord>,
    ) {
        let mut builder = OperatorBuilder::new("AssignWindows".to_owned(), self.scope());
        let mut events_in = builder.new_input(self, Pipeline);
        let mut watermark_in = builder.new_input(watermark, Pipeline);
        let (inserts_out, inserts) = builder.new_output::<Vec<(WindowedValue, Epoch, isize)>>();
        let (late_out, late) = builder.new_output::<Vec<LateRecord>>();
        let mut inserts_out = OutputBuilder::<
            _,
            CapacityContainerBuilder<Vec<(WindowedValue, Epoch, isize)>>,
        >::from(inserts_out);
        let mut late_out =
            OutputBuilder::<_, CapacityContainerBuilder<Vec<LateRecord>>>::from(late_out);

        builder.build(move |_capabilities| {
            let mut waiting: BTreeMap<Epoch, Waiting> = BTreeMap::new();
            // Source watermarks by epoch; `floor` holds the largest one of pruned epochs.
            let mut watermarks: BTreeMap<Epoch, EventTime> = BTreeMap::new();
            let mut floor = i64::MIN;
            let mut partials: BTreeMap<Epoch, EpochPartials> = BTreeMap::new();
            let mut inserts = Vec::new();
            let mut late = Vec::new();
            move |frontiers| {
                watermark_in.for_each(|cap, data| {
                    if let Some(&epoch) = cap.least() {
                        for &w in data.iter() {
                            let entry = watermarks.entry(epoch).or_insert(w);
                            *entry = (*entry).max(w);
                        }
                    }
                });
                events_in.for_each(|cap, data| {
                    let Some(&epoch) = cap.least() else { return };
                    let entry = waiting.entry(epoch).or_insert_with(|| Waiting {
                        inserts_cap: cap.retain_least(0).expect("input capability"),
                        late_cap: cap.retain_least(1).expect("input capability"),
                        events: Vec::new(),
                    });
                    entry.events.append(data);
                });
                // W(e-1) is known once the watermark input has passed e-1.
                let watermark_frontier = &frontiers[1];
                while let Some(entry) = waiting.first_entry() {
                    let epoch = *entry.key();
                    if epoch > 0 && watermark_frontier.less_equal(&(epoch - 1)) {
                        break;
                    }
                    let previous = watermarks
                        .range(..epoch)
                        .map(|(_, w)| *w)
                        .fold(floor, i64::max);
                    let batch = entry.remove();
                    if assignment.partials {
                        let partials = partials
                            .entry(epoch)
                            .or_insert_with(|| EpochPartials::new(batch.inserts_cap.clone()));
                        for event in &batch.events {
                            let watermark = event.partition_watermark.max(previous);
                            assignment.fold(event, watermark, partials, &mut late);
                        }
                    } else {
                        for event in &batch.events {
                            let watermark = event.partition_watermark.max(previous);
                            assignment.assign(event, watermark, &mut inserts, &mut late);
                        }
                    }
                    if !inserts.is_empty() {
                        inserts_out
                            .activate()
                            .session(&batch.inserts_cap)
                            .give_iterator(inserts.drain(..).map(|d| (d, epoch, 1)));
                    }
                    if !late.is_empty() {
                        late_out
                            .activate()
                            .session(&batch.late_cap)
                            .give_container(&mut late);
                    }
                }
                // An epoch's partials are complete once no event of it can still come or wait.
                while let Some(entry) = partials.first_entry() {
                    let epoch = *entry.key();
                    if frontiers[0].less_equal(&epoch) || waiting.contains_key(&epoch) {
                        break;
                    }
                    let EpochPartials { cap, partials, .. } = entry.remove();
                    inserts_out
                        .activate()
                        .session(&cap)
                        .give_iterator(partials.into_iter().map(|d| (d, epoch, 1)));
                }
                // Events still to come are at or after the events frontier; older watermarks
                // only matter through their maximum.
                let oldest = waiting
                    .keys()
                    .next()
                    .copied()
                    .into_iter()
                    .chain(frontiers[0].frontier().iter().copied())
                    .min();
                while let Some(entry) = watermarks.first_entry() {
                    if oldest.is_some_and(|oldest| *entry.key() + 1 >= oldest) {
                        break;
                    }
                    floor = floor.max(entry.remove());
                }
            }
        });
        (inserts.as_collection(), late)
    }
}
