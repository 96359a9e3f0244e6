//! The `checkpoint` operator: the contents of an arrangement at checkpoint epochs.
//!
//! A snapshot records what the view tables look like; to resume after a crash the engine also
//! needs the state behind them: the input multiset of every window still in the arrangement.
//! At every checkpoint epoch `c` (a multiple of `every` from `first` on, and the last epoch of
//! a run, so that a clean stop leaves a checkpoint) this operator waits
//! until the arrangement has passed `c`, reads its trace, accumulates each (window and group,
//! values) over the times `<= c` and emits the non-zero totals at `c`, so that they commit in
//! the snapshot of `c` together with that snapshot's offsets. A restart loads them at epoch 0
//! and replays the records after the checkpoint's offsets (see `build_views`).
//!
//! The operator's trace handle keeps the trace from compacting past the next checkpoint epoch,
//! so that updates up to `c` stay distinguishable from later ones.

use std::collections::BTreeMap;

use differential_dataflow::operators::arrange::Arranged;
use differential_dataflow::trace::cursor::{cursor_list, Cursor};
use differential_dataflow::trace::TraceReader;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::{Capability, Operator};
use timely::dataflow::StreamVec;
use timely::progress::Antichain;

use super::retire::WindowTrace;
use crate::value::Value;
use crate::window::WindowKey;
use crate::Epoch;

/// One entry of an arrangement's state: (window and group, input values, multiplicity).
pub type StateEntry = (WindowKey, Vec<Value>, isize);

/// Which epochs are checkpoints: multiples of `every`, from `first` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CheckpointSchedule {
    pub every: Epoch,
    pub first: Epoch,
}

impl CheckpointSchedule {
    pub fn is_checkpoint(&self, epoch: Epoch) -> bool {
        epoch >= self.first && epoch.is_multiple_of(self.every.max(1))
    }

    /// The first checkpoint epoch at or after `epoch`.
    pub fn next_from(&self, epoch: Epoch) -> Epoch {
        let every = self.every.max(1);
        epoch.max(self.first).div_ceil(every) * every
    }
}

/// Which epochs become checkpoints, decided from the ticks: the scheduled ones, and the last
/// epoch of a run (known once the ticks' frontier is empty), so that a clean stop leaves a
/// checkpoint and the next start has nothing to replay.
struct CheckpointEpochs {
    schedule: CheckpointSchedule,
    /// Checkpoint epochs, with a capability to emit at them.
    decided: BTreeMap<Epoch, Capability<Epoch>>,
    /// The latest unscheduled epoch seen: a checkpoint if the ticks end after it.
    latest: Option<Capability<Epoch>>,
}

impl CheckpointEpochs {
    fn new(schedule: CheckpointSchedule) -> Self {
        CheckpointEpochs {
            schedule,
            decided: BTreeMap::new(),
            latest: None,
        }
    }

    fn observe(&mut self, cap: Capability<Epoch>) {
        let epoch = *cap.time();
        if epoch < self.schedule.first {
            return;
        }
        if self.schedule.is_checkpoint(epoch) {
            self.decided.entry(epoch).or_insert(cap);
        } else if self.latest.as_ref().is_none_or(|l| *l.time() < epoch) {
            self.latest = Some(cap);
        }
    }

    /// Once the ticks have passed the latest epoch, it was the last one (no ticks any more) or
    /// not (later ticks will come).
    fn settle(&mut self, ticks_frontier: &[Epoch]) {
        let Some(latest) = &self.latest else { return };
        if ticks_frontier.is_empty() {
            let cap = self.latest.take().expect("latest");
            self.decided.entry(*cap.time()).or_insert(cap);
        } else if ticks_frontier.iter().all(|f| f > latest.time()) {
            self.latest = None;
        }
    }

    /// The earliest epoch that is or may become a checkpoint.
    fn earliest(&self) -> Option<Epoch> {
        let latest = self.latest.as_ref().map(|c| *c.time());
        let decided = self.decided.keys().next().copied();
        latest.into_iter().chain(decided).min()
    }
}

/// One `()` at every checkpoint epoch (scheduled, or the last of the run).
pub fn checkpoint_marks<'scope, D: Clone + 'static>(
    ticks: StreamVec<'scope, Epoch, D>,
    schedule: CheckpointSchedule,
) -> StreamVec<'scope, Epoch, ()> {
    ticks.unary_frontier(Pipeline, "CheckpointMarks", move |_cap, _info| {
        let mut epochs = CheckpointEpochs::new(schedule);
        move |(input, frontier), output| {
            input.for_each(|cap, _data| {
                epochs.observe(cap.retain_least(0).expect("input capability"));
            });
            epochs.settle(&frontier.frontier());
            for (_, cap) in std::mem::take(&mut epochs.decided) {
                output.session(&cap).give(());
            }
        }
    })
}

pub trait Checkpoint<'scope> {
    /// `ticks` has a message at every epoch the sources closed (any stream will do; the
    /// sources' watermarks are used); the operator only needs their capabilities.
    fn checkpoint<D: Clone + 'static>(
        &self,
        ticks: StreamVec<'scope, Epoch, D>,
        schedule: CheckpointSchedule,
    ) -> StreamVec<'scope, Epoch, StateEntry>;
}

impl<'scope> Checkpoint<'scope> for Arranged<'scope, WindowTrace> {
    fn checkpoint<D: Clone + 'static>(
        &self,
        ticks: StreamVec<'scope, Epoch, D>,
        schedule: CheckpointSchedule,
    ) -> StreamVec<'scope, Epoch, StateEntry> {
        let mut trace = self.trace.clone();
        self.stream.clone().binary_frontier(
            ticks,
            Pipeline,
            Pipeline,
            "Checkpoint",
            move |_cap, _info| {
                let mut epochs = CheckpointEpochs::new(schedule);
                let mut next_checkpoint = schedule.next_from(0);
                move |(batches, batches_frontier), (ticks, ticks_frontier), output| {
                    batches.for_each(|_cap, _data| {});
                    ticks.for_each(|cap, _data| {
                        epochs.observe(cap.retain_least(0).expect("input capability"));
                    });
                    epochs.settle(&ticks_frontier.frontier());
                    while let Some(entry) = epochs.decided.first_entry() {
                        let epoch = *entry.key();
                        if batches_frontier.less_equal(&epoch) {
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
                        let cap = entry.remove();
                        let mut state: Vec<StateEntry> = Vec::new();
                        let (mut cursor, storage) = cursor_list(batches);
                        while cursor.key_valid(&storage) {
                            while cursor.val_valid(&storage) {
                                let mut count = 0isize;
                                cursor.map_times(&storage, |time, diff| {
                                    if *time <= epoch {
                                        count += *diff;
                                    }
                                });
                                if count != 0 {
                                    state.push((
                                        cursor.key(&storage).clone(),
                                        cursor.val(&storage).clone(),
                                        count,
                                    ));
                                }
                                cursor.step_val(&storage);
                            }
                            cursor.step_key(&storage);
                        }
                        output.session(&cap).give_iterator(state.into_iter());
                        next_checkpoint = next_checkpoint.max(schedule.next_from(epoch + 1));
                    }
                    // A scheduled epoch without a tick (no source closed it) is skipped.
                    while ticks_frontier
                        .frontier()
                        .first()
                        .is_some_and(|&f| f > next_checkpoint)
                        && !epochs.decided.contains_key(&next_checkpoint)
                    {
                        next_checkpoint = schedule.next_from(next_checkpoint + 1);
                    }
                    // Times up to the next checkpoint (scheduled, or possibly the last epoch)
                    // must stay apart from later ones; beyond that this reader holds nothing.
                    let next = epochs
                        .earliest()
                        .map_or(next_checkpoint, |e| e.min(next_checkpoint));
                    let hold = batches_frontier
                        .frontier()
                        .iter()
                        .map(|&f| f.min(next))
                        .min()
                        .unwrap_or(next);
                    trace.set_logical_compaction(Antichain::from_elem(hold).borrow());
                    trace.set_physical_compaction(batches_frontier.frontier());
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_counts_multiples_from_the_first_epoch() {
        let schedule = CheckpointSchedule { every: 5, first: 2 };
        let checkpoints: Vec<Epoch> = (0..16).filter(|e| schedule.is_checkpoint(*e)).collect();
        assert_eq!(checkpoints, [5, 10, 15]);
        assert_eq!(schedule.next_from(0), 5);
        assert_eq!(schedule.next_from(6), 10);
        assert_eq!(schedule.next_from(10), 10);
        let every_epoch = CheckpointSchedule { every: 1, first: 0 };
        assert!(every_epoch.is_checkpoint(0) && every_epoch.is_checkpoint(7));
    }
}
