//! The `event_time` operator: per-partition watermarks, decided by the records themselves.
//!
//! A partition's watermark is the largest event time among its records so far minus the
//! source's max out-of-orderness. Each event is stamped with the watermark of its partition
//! *just before it*, which depends only on the partition's earlier records, never on when they
//! were polled, how partitions were spread over workers, or restarts: lateness decided from it
//! is deterministic. At the end of each epoch the operator adds each partition's largest event
//! time (and whether it is idle) to the source's progress report.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::Capability;
use timely::dataflow::StreamVec;

use crate::reading::{Event, EventTime, SourceProgress};
use crate::Epoch;

/// The event-time settings of a source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WatermarkConfig {
    /// How far behind the largest event time seen a record may be without being late, in
    /// microseconds.
    pub max_out_of_orderness: i64,
    /// A partition without records for this long (wall clock) stops holding back the source
    /// watermark; `None`: partitions never count as idle.
    pub idle_timeout: Option<Duration>,
}

impl WatermarkConfig {
    /// The watermark implied by a largest event time.
    pub fn watermark_of(&self, max_event_time: Option<EventTime>) -> EventTime {
        max_event_time.map_or(i64::MIN, |t| t.saturating_sub(self.max_out_of_orderness))
    }
}

/// Where a source's event time stood at a checkpoint; a resumed run starts from it, so that
/// lateness after a restart is decided exactly as without the restart.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SourceClock {
    /// Partition → largest event time read so far.
    pub max_event_times: BTreeMap<i32, EventTime>,
    /// The source watermark (`i64::MIN`: none yet).
    pub watermark: EventTime,
}

impl SourceClock {
    /// A source that has read nothing.
    pub fn start() -> Self {
        SourceClock {
            max_event_times: BTreeMap::new(),
            watermark: i64::MIN,
        }
    }
}

/// What the event-time operators of all workers in this process know, shared with the sources
/// of the same process so that they keep partitions aligned in event time: a partition far ahead
/// of the slowest partition that still has records to read is paused until that one catches up,
/// which bounds the state of windows that cannot close yet. The reference is live (updated with
/// every batch), not the per-epoch watermark: with the watermark, every partition could advance
/// at most the allowed drift per epoch, which capped a backfill at a few thousand records per
/// second. Pausing only changes how partitions interleave, never a result.
#[derive(Clone, Debug, Default)]
pub struct SharedClock(Arc<Mutex<ClockView>>);

#[derive(Clone, Debug, Default)]
pub struct ClockView {
    /// Partition → largest event time decoded so far (this process's partitions).
    pub max_event_times: HashMap<i32, EventTime>,
    /// Partitions whose reader has got to the end of the log: they have nothing to catch up
    /// with, so they hold nobody back.
    pub at_end: HashSet<i32>,
    /// The latest source watermark.
    pub watermark: Option<EventTime>,
}

impl ClockView {
    /// The event time the others must not run far ahead of: the slowest partition that has
    /// records and is still reading, or the watermark if that is further.
    pub fn alignment_reference(&self) -> Option<EventTime> {
        let slowest_reading = self
            .max_event_times
            .iter()
            .filter(|(p, _)| !self.at_end.contains(p))
            .map(|(_, max)| *max)
            .min();
        let watermark = self.watermark.filter(|w| *w > i64::MIN);
        slowest_reading.max(watermark)
    }
}

impl SharedClock {
    pub fn view(&self) -> std::sync::MutexGuard<'_, ClockView> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn set_watermark(&self, watermark: EventTime) {
        let mut view = self.view();
        view.watermark = Some(view.watermark.map_or(watermark, |w| w.max(watermark)));
    }

    /// Whether a partition's reader is at the end of the log (set by the source).
    pub fn set_at_end(&self, partition: i32, at_end: bool) {
        let mut view = self.view();
        if at_end {
            view.at_end.insert(partition);
        } else {
            view.at_end.remove(&partition);
        }
    }

    fn observe(&self, maxima: impl IntoIterator<Item = (i32, EventTime)>) {
        let mut view = self.view();
        for (partition, max) in maxima {
            let entry = view.max_event_times.entry(partition).or_insert(max);
            *entry = (*entry).max(max);
        }
    }
}

/// Per partition, as this worker has seen it.
struct PartitionClock {
    max_event_time: Option<EventTime>,
    last_record: Instant,
}

pub trait AssignEventTime<'scope> {
    /// Stamps each event with its partition's watermark and completes `progress` with each
    /// partition's largest event time and idleness. Both inputs must come from the same worker's
    /// source (no exchange), so a partition's events arrive in offset order. Partitions start
    /// from `clock` (a checkpoint's, or [`SourceClock::start`]).
    fn event_time(
        self,
        progress: StreamVec<'scope, Epoch, SourceProgress>,
        config: WatermarkConfig,
        clock: &SourceClock,
        share: Option<SharedClock>,
    ) -> (
        StreamVec<'scope, Epoch, Event>,
        StreamVec<'scope, Epoch, SourceProgress>,
    );
}

impl<'scope> AssignEventTime<'scope> for StreamVec<'scope, Epoch, Event> {
    fn event_time(
        self,
        progress: StreamVec<'scope, Epoch, SourceProgress>,
        config: WatermarkConfig,
        clock: &SourceClock,
        share: Option<SharedClock>,
    ) -> (
        StreamVec<'scope, Epoch, Event>,
        StreamVec<'scope, Epoch, SourceProgress>,
    ) {
        let restored = clock.max_event_times.clone();
        let mut builder = OperatorBuilder::new("EventTime".to_owned(), self.scope());
        let mut events_in = builder.new_input(self, Pipeline);
        let mut progress_in = builder.new_input(progress, Pipeline);
        let (events_out, events) = builder.new_output::<Vec<Event>>();
        let (progress_out, progress) = builder.new_output::<Vec<SourceProgress>>();
        let mut events_out = timely::dataflow::operators::generic::OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<Event>>,
        >::from(events_out);
        let mut progress_out = timely::dataflow::operators::generic::OutputBuilder::<
            _,
            timely::container::CapacityContainerBuilder<Vec<SourceProgress>>,
        >::from(progress_out);

        builder.build(move |_capabilities| {
            let started = Instant::now();
            let mut clocks: HashMap<i32, PartitionClock> = restored
                .iter()
                .map(|(p, max)| {
                    let clock = PartitionClock {
                        max_event_time: Some(*max),
                        last_record: started,
                    };
                    (*p, clock)
                })
                .collect();
            // Largest event time per partition at the end of each epoch not yet reported:
            // events of a later epoch may be processed before an earlier epoch is complete.
            let mut maxima_by_epoch: BTreeMap<Epoch, HashMap<i32, EventTime>> = BTreeMap::new();
            let mut reported_max: HashMap<i32, EventTime> = restored.into_iter().collect();
            let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Vec<SourceProgress>)> =
                BTreeMap::new();
            move |frontiers| {
                let mut output = events_out.activate();
                events_in.for_each(|cap, data| {
                    let (Some(&epoch), Some(out_cap)) = (cap.least(), cap.retain_least(0)) else {
                        return;
                    };
                    let maxima = maxima_by_epoch.entry(epoch).or_default();
                    let now = Instant::now();
                    for event in data.iter_mut() {
                        let clock = clocks.entry(event.partition).or_insert(PartitionClock {
                            max_event_time: None,
                            last_record: now,
                        });
                        event.partition_watermark = config.watermark_of(clock.max_event_time);
                        let max = clock
                            .max_event_time
                            .map_or(event.event_time, |m| m.max(event.event_time));
                        clock.max_event_time = Some(max);
                        clock.last_record = now;
                        maxima.insert(event.partition, max);
                    }
                    if let Some(share) = &share {
                        // Once per batch: the clock is shared by every worker of the process.
                        share.observe(maxima.iter().map(|(p, max)| (*p, *max)));
                    }
                    output.session(&out_cap).give_container(data);
                });
                progress_in.for_each(|cap, data| {
                    let (Some(&epoch), Some(out_cap)) = (cap.least(), cap.retain_least(1)) else {
                        return;
                    };
                    pending
                        .entry(epoch)
                        .or_insert_with(|| (out_cap, Vec::new()))
                        .1
                        .append(data);
                });
                // An epoch's report is complete once neither input can deliver more for it.
                let mut output = progress_out.activate();
                while let Some(entry) = pending.first_entry() {
                    let epoch = *entry.key();
                    if frontiers.iter().any(|f| f.less_equal(&epoch)) {
                        break;
                    }
                    let (cap, mut reports) = entry.remove();
                    while let Some(maxima) = maxima_by_epoch.first_entry() {
                        if *maxima.key() > epoch {
                            break;
                        }
                        for (partition, max) in maxima.remove() {
                            let known = reported_max.entry(partition).or_insert(max);
                            *known = (*known).max(max);
                        }
                    }
                    let now = Instant::now();
                    for report in &mut reports {
                        report.max_event_time = reported_max.get(&report.partition).copied();
                        let last_record = clocks
                            .get(&report.partition)
                            .map_or(started, |clock| clock.last_record);
                        report.idle = config
                            .idle_timeout
                            .is_some_and(|timeout| now.duration_since(last_record) >= timeout);
                    }
                    output.session(&cap).give_container(&mut reports);
                }
            }
        });
        (events, progress)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alignment_follows_the_slowest_partition_still_reading() {
        let clock = SharedClock::default();
        assert_eq!(clock.view().alignment_reference(), None);
        clock.observe([(0, 100), (1, 500), (2, 300)]);
        assert_eq!(clock.view().alignment_reference(), Some(100));
        // Partition 0 is at the end of its log: it holds nobody back.
        clock.set_at_end(0, true);
        assert_eq!(clock.view().alignment_reference(), Some(300));
        // A later watermark wins over a slower reading partition (say, an idle one).
        clock.set_watermark(400);
        assert_eq!(clock.view().alignment_reference(), Some(400));
        // Maxima only grow; records on partition 0 again make it count.
        clock.observe([(0, 50)]);
        clock.set_at_end(0, false);
        clock.set_watermark(0);
        assert_eq!(clock.view().alignment_reference(), Some(400));
        clock.set_at_end(1, true);
        clock.set_at_end(2, true);
        assert_eq!(clock.view().alignment_reference(), Some(400));
    }
}
