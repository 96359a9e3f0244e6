//! The `source_watermark` operator: one event-time watermark per source and epoch, the same on
//! every worker.
//!
//! Every worker's partition reports are broadcast, so each worker sees all partitions. When an
//! epoch is complete, the source watermark is the smallest partition watermark among partitions
//! that are not idle, and never moves back: `W(e) = max(W(e-1), min over non-idle partitions)`.
//! Each partition counts with its latest report, so a partition whose worker finished reading
//! earlier than the others still holds the watermark (otherwise `W` would depend on which
//! worker finished first). A partition with no records yet holds the watermark at its minimum
//! unless it is idle. If every partition is idle the watermark stays where it is.
//!
//! A finished partition (a file chunk read to its end) can never deliver another record, so it
//! holds nobody back. Once every partition is finished the watermark is the largest partition
//! watermark: that end value depends only on the records, not on which partition finished
//! last (the one before it does not, as with idle partitions).

use std::collections::{BTreeMap, HashMap};

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use super::event_time::WatermarkConfig;
use crate::reading::{EventTime, SourceProgress};
use crate::Epoch;

pub trait SourceWatermark<'scope> {
    /// At each completed epoch in which partitions reported, emits the source watermark, which
    /// starts at `initial` (a checkpoint's, or `i64::MIN`).
    fn source_watermark(
        self,
        config: WatermarkConfig,
        initial: EventTime,
    ) -> StreamVec<'scope, Epoch, EventTime>;
}

impl<'scope> SourceWatermark<'scope> for StreamVec<'scope, Epoch, SourceProgress> {
    fn source_watermark(
        self,
        config: WatermarkConfig,
        initial: EventTime,
    ) -> StreamVec<'scope, Epoch, EventTime> {
        self.broadcast()
            .unary_frontier(Pipeline, "SourceWatermark", move |_cap, _info| {
                let mut watermark = initial;
                // The latest report of every partition seen so far: (watermark, idle). A
                // partition whose worker has stopped reporting (its source finished first)
                // still holds the watermark where its records left it.
                let mut latest: HashMap<i32, PartitionMark> = HashMap::new();
                let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Vec<SourceProgress>)> =
                    BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let (Some(&epoch), Some(cap)) = (cap.least(), cap.retain_least(0)) else {
                            return;
                        };
                        pending
                            .entry(epoch)
                            .or_insert_with(|| (cap, Vec::new()))
                            .1
                            .append(data);
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (cap, reports) = entry.remove();
                        for report in reports {
                            let mark = PartitionMark {
                                watermark: config.watermark_of(report.max_event_time),
                                idle: report.idle,
                                finished: report.finished,
                            };
                            latest.insert(report.partition, mark);
                        }
                        let minimum = latest
                            .values()
                            .filter(|m| !m.idle && !m.finished)
                            .map(|m| m.watermark)
                            .min();
                        let all_finished =
                            !latest.is_empty() && latest.values().all(|m| m.finished);
                        if let Some(minimum) = minimum {
                            watermark = watermark.max(minimum);
                        } else if all_finished {
                            let largest = latest.values().map(|m| m.watermark).max();
                            watermark = watermark.max(largest.unwrap_or(i64::MIN));
                        }
                        output.session(&cap).give(watermark);
                    }
                }
            })
    }
}

/// The latest report of one partition, as the source watermark counts it.
#[derive(Clone, Copy, Debug)]
struct PartitionMark {
    watermark: EventTime,
    idle: bool,
    finished: bool,
}
