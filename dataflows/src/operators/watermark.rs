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
                let mut latest: HashMap<i32, (EventTime, bool)> = HashMap::new();
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
                            let partition = config.watermark_of(report.max_event_time);
                            latest.insert(report.partition, (partition, report.idle));
                        }
                        let minimum = latest
                            .values()
                            .filter(|(_, idle)| !idle)
                            .map(|(w, _)| *w)
                            .min();
                        if let Some(minimum) = minimum {
                            watermark = watermark.max(minimum);
                        }
                        output.session(&cap).give(watermark);
                    }
                }
            })
    }
}
