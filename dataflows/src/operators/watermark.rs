//! The `source_watermark` operator: one event-time watermark per source and epoch, the same on
//! every worker.
//!
//! Every worker's partition reports are broadcast, so each worker sees all partitions. When an
//! epoch is complete, the source watermark is the smallest partition watermark among partitions
//! that are not idle, and never moves back: `W(e) = max(W(e-1), min over non-idle partitions)`.
//! A partition with no records yet holds the watermark at its minimum unless it is idle. If
//! every partition is idle the watermark stays where it is.

use std::collections::BTreeMap;

use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;

use super::event_time::WatermarkConfig;
use crate::reading::{EventTime, SourceProgress};
use crate::Epoch;

pub trait SourceWatermark<'scope> {
    /// At each completed epoch in which partitions reported, emits the source watermark.
    fn source_watermark(self, config: WatermarkConfig) -> StreamVec<'scope, Epoch, EventTime>;
}

impl<'scope> SourceWatermark<'scope> for StreamVec<'scope, Epoch, SourceProgress> {
    fn source_watermark(self, config: WatermarkConfig) -> StreamVec<'scope, Epoch, EventTime> {
        self.broadcast()
            .unary_frontier(Pipeline, "SourceWatermark", move |_cap, _info| {
                let mut watermark = i64::MIN;
                // Per epoch: the minimum over non-idle partitions so far (None: all idle).
                let mut pending: BTreeMap<Epoch, (Capability<Epoch>, Option<EventTime>)> =
                    BTreeMap::new();
                move |(input, frontier), output| {
                    input.for_each(|cap, data| {
                        let (Some(&epoch), Some(cap)) = (cap.least(), cap.retain_least(0)) else {
                            return;
                        };
                        let (_, minimum) = pending.entry(epoch).or_insert((cap, None));
                        for report in data.iter().filter(|r| !r.idle) {
                            let partition = config.watermark_of(report.max_event_time);
                            *minimum = Some(minimum.map_or(partition, |m| m.min(partition)));
                        }
                    });
                    while let Some(entry) = pending.first_entry() {
                        if frontier.less_equal(entry.key()) {
                            break;
                        }
                        let (cap, minimum) = entry.remove();
                        if let Some(minimum) = minimum {
                            watermark = watermark.max(minimum);
                        }
                        output.session(&cap).give(watermark);
                    }
                }
            })
    }
}
