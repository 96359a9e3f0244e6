//! The `collect_snapshots` operator: the single-writer end of a dataflow.
//!
//! View changes, rejected records and source progress are all routed to one worker (worker 0,
//! the writer) and stashed by epoch. When the frontier of all three inputs passes an epoch, no
//! more data can arrive for it, so the epoch is complete: its changes, rejects and partition
//! offsets are handed over together as one `Snapshot`, in epoch order. This is timely's
//! "stash by capability, emit when the frontier passes" pattern; the sink that receives a
//! snapshot commits it in one transaction.

use std::collections::BTreeMap;

use differential_dataflow::consolidation::consolidate;
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::StreamVec;
use timely::ExchangeData;

use crate::reading::{Rejected, SourceProgress};
use crate::Epoch;

/// Index of the worker that receives every snapshot.
pub const WRITER_WORKER: usize = 0;

/// Everything one epoch changed, complete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot<D> {
    pub epoch: Epoch,
    /// Consolidated changes to the view: `(row, +1)` inserts a row, `(row, -1)` retracts one.
    pub changes: Vec<(D, isize)>,
    pub rejects: Vec<Rejected>,
    /// Position of each partition at the end of the epoch, as its source reported it.
    pub progress: Vec<SourceProgress>,
}

impl<D> Snapshot<D> {
    fn new(epoch: Epoch) -> Self {
        Snapshot {
            epoch,
            changes: Vec::new(),
            rejects: Vec::new(),
            progress: Vec::new(),
        }
    }

    /// Records read by the sources in this epoch (decoded or rejected).
    pub fn records_in(&self) -> u64 {
        self.progress.iter().map(|p| p.records).sum()
    }
}

/// Routes every record to the writer worker.
fn to_writer<D>(_: &D) -> u64 {
    WRITER_WORKER as u64
}

/// Collects a view's changes with the rejects and source progress of the same epochs.
pub trait CollectSnapshots<'scope, D> {
    /// Calls `on_snapshot` on the writer worker once per completed epoch, in epoch order.
    fn collect_snapshots<F>(
        self,
        rejects: StreamVec<'scope, Epoch, Rejected>,
        progress: StreamVec<'scope, Epoch, SourceProgress>,
        on_snapshot: F,
    ) where
        F: FnMut(Snapshot<D>) + 'static;
}

impl<'scope, D: ExchangeData + Ord + Clone> CollectSnapshots<'scope, D>
    for StreamVec<'scope, Epoch, (D, Epoch, isize)>
{
    fn collect_snapshots<F>(
        self,
        rejects: StreamVec<'scope, Epoch, Rejected>,
        progress: StreamVec<'scope, Epoch, SourceProgress>,
        mut on_snapshot: F,
    ) where
        F: FnMut(Snapshot<D>) + 'static,
    {
        let mut builder = OperatorBuilder::new("CollectSnapshots".to_owned(), self.scope());
        let mut changes_in = builder.new_input(self, Exchange::new(to_writer));
        let mut rejects_in = builder.new_input(rejects, Exchange::new(to_writer));
        let mut progress_in = builder.new_input(progress, Exchange::new(to_writer));

        builder.build(move |_capabilities| {
            let mut stash: BTreeMap<Epoch, Snapshot<D>> = BTreeMap::new();
            move |frontiers| {
                // Changes carry their own epoch, which may be later than their message's.
                changes_in.for_each(|_cap, data| {
                    for (row, epoch, diff) in data.drain(..) {
                        stash
                            .entry(epoch)
                            .or_insert_with(|| Snapshot::new(epoch))
                            .changes
                            .push((row, diff));
                    }
                });
                rejects_in.for_each(|cap, data| {
                    if let Some(&epoch) = cap.least() {
                        stash
                            .entry(epoch)
                            .or_insert_with(|| Snapshot::new(epoch))
                            .rejects
                            .append(data);
                    }
                });
                progress_in.for_each(|cap, data| {
                    if let Some(&epoch) = cap.least() {
                        stash
                            .entry(epoch)
                            .or_insert_with(|| Snapshot::new(epoch))
                            .progress
                            .append(data);
                    }
                });
                // An epoch is complete once no input can still deliver data for it.
                while let Some(entry) = stash.first_entry() {
                    if frontiers
                        .iter()
                        .any(|frontier| frontier.less_equal(entry.key()))
                    {
                        break;
                    }
                    let mut snapshot = entry.remove();
                    consolidate(&mut snapshot.changes);
                    snapshot.rejects.sort();
                    snapshot.progress.sort();
                    on_snapshot(snapshot);
                }
            }
        });
    }
}
