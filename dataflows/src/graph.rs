//! Builds the dataflow of a whole pipeline: sources' raw records in, snapshot parts out.
//!
//! Per source: decode (once, however many views read it) → event time and partition watermarks
//! → source watermark. Per group of views that agree on filter, grouping, window and lateness:
//! window assignment with the lateness rule → one shared arrangement by (window, group), kept to
//! open windows by `retire_final_windows` → per view, its aggregates (`reduce`) → `finalize`
//! into row changes. Everything a sink needs leaves as one stream of [`SnapshotPart`]s.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;

use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::AsCollection;
use timely::dataflow::operators::vec::{Map, ToStream};
use timely::dataflow::operators::Inspect;
use timely::dataflow::operators::{Concatenate, ConnectLoop, Feedback};
use timely::dataflow::{Scope, StreamVec};

use crate::aggregate::{combinable, compute, compute_partials};
use crate::operators::{
    checkpoint_marks, AssignEventTime, AssignWindows, Checkpoint, CheckpointSchedule,
    DecodeRecords, Finalize, RetireFinalWindows, SharedClock, SnapshotPart, SourceClock,
    SourceWatermark, StateEntry, WatermarkConfig, WindowAssignment, WindowedValue,
};
use crate::reading::{RawRecord, SourceProgress};
use crate::record::Schema;
use crate::value::Value;
use crate::view::{ArrangementKey, ViewSpec};
use crate::window::{sessions, WindowKey, WindowKind};
use crate::Epoch;

/// A source as the dataflow sees it: how to decode it and how its event time behaves.
#[derive(Clone, Debug)]
pub struct SourceSpec {
    pub name: String,
    pub schema: Arc<Schema>,
    pub watermarks: WatermarkConfig,
}

/// A source's two streams: its records, and its per-partition progress at each epoch's end.
pub struct SourceStreams<'scope> {
    pub records: StreamVec<'scope, Epoch, RawRecord>,
    pub progress: StreamVec<'scope, Epoch, SourceProgress>,
}

/// Views grouped by what they can share, in the order of their first view.
fn arrangement_groups(views: &[ViewSpec]) -> Vec<(ArrangementKey, Vec<usize>)> {
    let mut groups: Vec<(ArrangementKey, Vec<usize>)> = Vec::new();
    let mut index: HashMap<ArrangementKey, usize> = HashMap::new();
    for (i, view) in views.iter().enumerate() {
        let key = view.arrangement_key();
        match index.get(&key) {
            Some(&g) => groups[g].1.push(i),
            None => {
                index.insert(key.clone(), groups.len());
                groups.push((key, vec![i]));
            }
        }
    }
    groups
}

/// How views share arrangements: one line per arrangement, naming its views.
pub fn describe_sharing(views: &[ViewSpec]) -> Vec<Vec<String>> {
    arrangement_groups(views)
        .into_iter()
        .map(|(_, members)| members.iter().map(|&i| views[i].name.clone()).collect())
        .collect()
}

/// What makes a dataflow resumable: checkpoints of its arrangements, and what a restart
/// restores at epoch 0 (the sources then replay from the checkpoint's offsets in epoch 1).
#[derive(Clone, Debug, Default)]
pub struct Durability {
    /// When to checkpoint; `None`: never (the state is not persisted).
    pub checkpoints: Option<CheckpointSchedule>,
    pub restore: Option<Restore>,
    /// Per source (in `specs` order, may be empty): event time shared with this worker's
    /// source, for aligning its partitions.
    pub clocks: Vec<SharedClock>,
}

/// A checkpoint as one worker restores it.
#[derive(Clone, Debug, Default)]
pub struct Restore {
    /// Per source (in `specs` order): its event-time clock at the checkpoint.
    pub clocks: Vec<SourceClock>,
    /// Per arrangement (numbered as in [`arrangement_count`]): this worker's share of its
    /// entries (any share will do: the arrangement routes them by key).
    pub state: BTreeMap<usize, Vec<StateEntry>>,
}

/// How many arrangements the views need; checkpoint entries name them `0..count`.
pub fn arrangement_count(views: &[ViewSpec]) -> usize {
    arrangement_groups(views).len()
}

/// Builds the dataflow; `sources[i]` are the streams of `specs[i]`. No checkpoints.
pub fn build_views<'scope>(
    scope: Scope<'scope, Epoch>,
    specs: &[SourceSpec],
    views: &[ViewSpec],
    sources: Vec<SourceStreams<'scope>>,
) -> StreamVec<'scope, Epoch, SnapshotPart> {
    build_durable_views(scope, specs, views, sources, &Durability::default())
}

/// Builds the dataflow with checkpoints and, when resuming, the restored state.
pub fn build_durable_views<'scope>(
    scope: Scope<'scope, Epoch>,
    specs: &[SourceSpec],
    views: &[ViewSpec],
    sources: Vec<SourceStreams<'scope>>,
    durability: &Durability,
) -> StreamVec<'scope, Epoch, SnapshotPart> {
    let mut parts: Vec<StreamVec<'scope, Epoch, SnapshotPart>> = Vec::new();
    let mut events_of = Vec::new();
    let mut watermark_of = Vec::new();
    let restore = durability.restore.as_ref();
    for (index, (spec, streams)) in specs.iter().zip(sources).enumerate() {
        let clock = restore
            .and_then(|r| r.clocks.get(index).cloned())
            .unwrap_or_else(SourceClock::start);
        let (events, rejects) = streams.records.decode_records(Arc::clone(&spec.schema));
        let share = durability.clocks.get(index).cloned();
        let (events, progress) =
            events.event_time(streams.progress, spec.watermarks, &clock, share.clone());
        let mut watermark = progress
            .clone()
            .source_watermark(spec.watermarks, clock.watermark);
        if let Some(share) = share {
            watermark = watermark.inspect(move |w| share.set_watermark(*w));
        }
        parts.push(rejects.map(move |r| SnapshotPart::Reject(index, r)));
        parts.push(progress.map(move |p| SnapshotPart::Progress(index, p)));
        parts.push(
            watermark
                .clone()
                .map(move |w| SnapshotPart::Watermark(index, w)),
        );
        events_of.push(events);
        watermark_of.push(watermark);
    }

    // Every epoch some source closed: when checkpoints are taken.
    let ticks = scope.concatenate(watermark_of.clone());
    if let Some(schedule) = durability.checkpoints {
        parts.push(checkpoint_marks(ticks.clone(), schedule).map(|()| SnapshotPart::Checkpoint));
    }

    for (arrangement, (key, members)) in arrangement_groups(views).into_iter().enumerate() {
        let first = &views[members[0]];
        let mut projection: Vec<usize> = Vec::new();
        for &member in &members {
            for field in views[member].input_fields() {
                if !projection.contains(&field) {
                    projection.push(field);
                }
            }
        }
        // Sessions need every record's event time; other groups pre-aggregate per epoch when
        // every aggregate of every member allows it.
        let partials = !matches!(key.window, WindowKind::Session { .. })
            && members
                .iter()
                .all(|&i| views[i].aggregates.iter().all(combinable));
        let assignment = Rc::new(WindowAssignment {
            partials,
            filter: first.filter.clone(),
            group_by: key.group_by.clone(),
            window: key.window,
            allowed_lateness: key.allowed_lateness,
            projection: projection.clone(),
            views: members.iter().map(|&i| views[i].name.clone()).collect(),
        });
        let source = key.source;
        let watermark = watermark_of[source].clone();
        let (inserts, late) = events_of[source]
            .clone()
            .assign_windows(watermark.clone(), assignment);
        parts.push(late.map(move |l| SnapshotPart::Late(source, l)));

        let names: Vec<&str> = members.iter().map(|&i| views[i].name.as_str()).collect();
        let arrangement_name = format!("Arrange: windows of {}", names.join(", "));
        // A restart's state enters at epoch 0, before any replayed record.
        let restored = restore
            .and_then(|r| r.state.get(&arrangement))
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|(key, values, count)| ((key, values), 0 as Epoch, count))
            .to_stream(scope)
            .as_collection();
        let inserts = inserts.concat(restored);
        let arranged = if key.window.is_windowed() {
            // Evictions of final windows come back into the arrangement one epoch later.
            let (handle, retired) = scope.feedback::<Vec<(WindowedValue, Epoch, isize)>>(1);
            let arranged = inserts
                .concat(retired.as_collection())
                .arrange_by_key_named(&arrangement_name);
            arranged
                .retire_final_windows(watermark.clone(), key.window, key.allowed_lateness)
                .connect_loop(handle);
            arranged
        } else {
            inserts.arrange_by_key_named(&arrangement_name)
        };
        if let Some(schedule) = durability.checkpoints {
            parts.push(
                arranged
                    .checkpoint(ticks.clone(), schedule)
                    .map(move |entry| SnapshotPart::State(arrangement, entry)),
            );
        }

        for &member in &members {
            let view = Rc::new(views[member].clone());
            let offset = usize::from(matches!(key.window, WindowKind::Session { .. }));
            let positions: Vec<Option<usize>> = view
                .aggregates
                .iter()
                .map(|a| {
                    a.field.map(|f| {
                        offset + projection.iter().position(|&p| p == f).expect("projected")
                    })
                })
                .collect();
            let logic_view = Rc::clone(&view);
            let aggregates = arranged
                .clone()
                .reduce_abelian::<_, ValBuilder<_, _, _, _>, ValSpine<WindowKey, Vec<Value>, Epoch, isize>, _, _>(
                    &format!("Aggregate: {}", view.name),
                    move |_key: &WindowKey, input: &[(&Vec<Value>, isize)], output: &mut Vec<(Vec<Value>, isize)>| {
                        match partials {
                            true => output.push((compute_partials(&logic_view.aggregates, &positions, input), 1)),
                            false => aggregate_window(&logic_view, &positions, input, output),
                        }
                    },
                    |vec, key, upds| {
                        vec.clear();
                        vec.extend(upds.drain(..).map(|(v, t, r)| ((key.clone(), v), t, r)));
                    },
                )
                .as_collection(|k: &WindowKey, v: &Vec<Value>| (k.clone(), v.clone()));
            let changes = aggregates
                .inner
                .finalize(watermark.clone(), member, Rc::clone(&view));
            parts.push(changes.map(SnapshotPart::Change));
        }
    }
    scope.concatenate(parts)
}

/// The output rows of one (window, group): one row of aggregates, or for session views one
/// `[session start, session end, aggregates…]` row per session.
fn aggregate_window(
    view: &ViewSpec,
    positions: &[Option<usize>],
    input: &[(&Vec<Value>, isize)],
    output: &mut Vec<(Vec<Value>, isize)>,
) {
    match view.window {
        WindowKind::Session { gap } => {
            let times: Vec<i64> = input
                .iter()
                .map(|(values, _)| match values.first() {
                    Some(Value::Timestamp(t)) => *t,
                    _ => i64::MIN,
                })
                .collect();
            for (start, end, first, last) in sessions(&times, gap) {
                let mut row = vec![Value::Timestamp(start), Value::Timestamp(end)];
                row.extend(compute(&view.aggregates, positions, &input[first..last]));
                output.push((row, 1));
            }
        }
        _ => output.push((compute(&view.aggregates, positions, input), 1)),
    }
}
