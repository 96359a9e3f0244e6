//! The `collect_snapshots` operator: the single-writer end of a dataflow.
//!
//! Row changes of every view, rejected and late records, source progress and source watermarks
//! all arrive as [`SnapshotPart`]s, routed to one worker (worker 0, the writer) and stashed by
//! epoch. When the frontier passes an epoch, no more parts can arrive for it, so the epoch is
//! complete: everything it changed is handed over as one `Snapshot`, in epoch order. This is
//! timely's "stash by capability, emit when the frontier passes" pattern; the sink that receives
//! a snapshot commits it in one transaction.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use timely::dataflow::channels::pact::Exchange;
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;

use super::checkpoint::StateEntry;
use super::finalize::ViewChange;
use crate::reading::{EventTime, LateRecord, Rejected, SourceProgress};
use crate::Epoch;

/// Index of the worker that receives every snapshot.
pub const WRITER_WORKER: usize = 0;

/// One piece of an epoch's snapshot. `usize` fields are source indices.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SnapshotPart {
    Change(ViewChange),
    Reject(usize, Rejected),
    Late(usize, LateRecord),
    Progress(usize, SourceProgress),
    Watermark(usize, EventTime),
    /// The epoch is a checkpoint (sent even when every arrangement is empty).
    Checkpoint,
    /// One entry of an arrangement's state at a checkpoint; `usize` is the arrangement.
    State(usize, StateEntry),
}

/// Everything one epoch changed, complete.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub epoch: Epoch,
    /// At most one change per view row, sorted by view and key.
    pub changes: Vec<ViewChange>,
    pub rejects: Vec<(usize, Rejected)>,
    pub late: Vec<(usize, LateRecord)>,
    /// Position of each partition at the end of the epoch, as its source reported it.
    pub progress: Vec<(usize, SourceProgress)>,
    /// The watermark of each source at the end of the epoch.
    pub watermarks: BTreeMap<usize, EventTime>,
    /// At a checkpoint: the state of every arrangement, `(arrangement, entry)`, sorted.
    pub checkpoint: Option<Vec<(usize, StateEntry)>>,
}

impl Snapshot {
    fn new(epoch: Epoch) -> Self {
        Snapshot {
            epoch,
            ..Snapshot::default()
        }
    }

    fn add(&mut self, part: SnapshotPart) {
        match part {
            SnapshotPart::Change(change) => self.changes.push(change),
            SnapshotPart::Reject(source, reject) => self.rejects.push((source, reject)),
            SnapshotPart::Late(source, late) => self.late.push((source, late)),
            SnapshotPart::Progress(source, progress) => self.progress.push((source, progress)),
            SnapshotPart::Watermark(source, watermark) => {
                let known = self.watermarks.entry(source).or_insert(watermark);
                *known = (*known).max(watermark);
            }
            SnapshotPart::Checkpoint => {
                self.checkpoint.get_or_insert_with(Vec::new);
            }
            SnapshotPart::State(arrangement, entry) => self
                .checkpoint
                .get_or_insert_with(Vec::new)
                .push((arrangement, entry)),
        }
    }

    /// Records read by the sources in this epoch (decoded or rejected).
    pub fn records_in(&self) -> u64 {
        self.progress.iter().map(|(_, p)| p.records).sum()
    }

    /// Whether the epoch changed nothing a sink would write (a checkpoint of an epoch that
    /// changed nothing is not needed: the previous one still holds).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
            && self.rejects.is_empty()
            && self.late.is_empty()
            && self.records_in() == 0
    }
}

pub trait CollectSnapshots {
    /// Calls `on_snapshot` on the writer worker once per completed epoch, in epoch order.
    fn collect_snapshots<F>(self, on_snapshot: F)
    where
        F: FnMut(Snapshot) + 'static;
}

impl<'scope> CollectSnapshots for StreamVec<'scope, Epoch, SnapshotPart> {
    fn collect_snapshots<F>(self, mut on_snapshot: F)
    where
        F: FnMut(Snapshot) + 'static,
    {
        let mut stash: BTreeMap<Epoch, Snapshot> = BTreeMap::new();
        self.sink(
            Exchange::new(|_: &SnapshotPart| WRITER_WORKER as u64),
            "CollectSnapshots",
            move |(input, frontier)| {
                input.for_each(|cap, data| {
                    if let Some(&epoch) = cap.least() {
                        let snapshot = stash.entry(epoch).or_insert_with(|| Snapshot::new(epoch));
                        for part in data.drain(..) {
                            snapshot.add(part);
                        }
                    }
                });
                // An epoch is complete once the input can no longer deliver parts for it.
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let mut snapshot = entry.remove();
                    snapshot.changes.sort();
                    snapshot.rejects.sort();
                    snapshot.late.sort();
                    snapshot.progress.sort();
                    if let Some(state) = snapshot.checkpoint.as_mut() {
                        state.sort();
                    }
                    on_snapshot(snapshot);
                }
            },
        );
    }
}
