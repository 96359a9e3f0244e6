//! What the sources of a run share with whoever runs them: stop requests, the end of a bounded
//! run, the first fatal error, and counters for progress displays.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tidewater_dataflows::Epoch;
use timely::dataflow::operators::probe::Handle as ProbeHandle;

use crate::error::ConnectorError;
use crate::kafka::SkippedOffsets;

/// How many epochs a source may run ahead of the epochs the dataflow has finished: beyond that
/// it stops reading (backpressure), so records never pile up in memory in front of a slow
/// pipeline, and what was read is soon committed.
pub const MAX_EPOCHS_AHEAD: Epoch = 2;

/// Whether a source at epoch `current` must wait for the dataflow (`processed` probes its
/// output): the dataflow is more than [`MAX_EPOCHS_AHEAD`] epochs behind.
pub fn dataflow_behind(processed: &ProbeHandle<Epoch>, current: Epoch) -> bool {
    current >= MAX_EPOCHS_AHEAD && processed.less_than(&(current - MAX_EPOCHS_AHEAD))
}

/// Shared between the source operators of all workers and whoever runs them: stop requests,
/// the end of a bounded run, the first fatal error, and counters for progress displays.
#[derive(Debug, Default)]
pub struct SourceControl {
    stop: Arc<AtomicBool>,
    /// Per topic: the offsets at which its source stops.
    end_offsets: Mutex<BTreeMap<String, BTreeMap<i32, i64>>>,
    failure: Mutex<Option<ConnectorError>>,
    records_in: AtomicU64,
    /// Offsets skipped under an `offset_reset` policy, not yet recorded by the sink.
    skipped: Mutex<Vec<SkippedOffsets>>,
}

impl SourceControl {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The flag a signal handler sets: sources close their epoch and stop, and the sink commits
    /// a last snapshot.
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.stop)
    }

    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Bounds the run: the source of `topic` stops once every partition it reads has reached its
    /// offset here. Set once per topic; later calls are ignored.
    pub fn set_end_offsets(&self, topic: &str, end_offsets: BTreeMap<i32, i64>) {
        self.end_offsets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(topic.to_owned())
            .or_insert(end_offsets);
    }

    /// Whether every given partition of `topic` has reached its end offset (false while no end
    /// is set).
    pub(crate) fn end_reached<'a>(
        &self,
        topic: &str,
        positions: impl Iterator<Item = (&'a i32, i64)>,
    ) -> bool {
        let ends = self.end_offsets.lock().unwrap_or_else(|e| e.into_inner());
        let Some(ends) = ends.get(topic) else {
            return false;
        };
        positions
            .into_iter()
            .all(|(p, next)| next >= ends.get(p).copied().unwrap_or(0))
    }

    /// Records a fatal source error (the first one wins) and stops every source.
    pub fn fail(&self, error: ConnectorError) {
        let mut failure = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        if failure.is_none() {
            *failure = Some(error);
        }
        self.request_stop();
    }

    /// The first fatal error, as text, without taking it.
    pub fn failure_text(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(ToString::to_string)
    }

    pub fn take_failure(&self) -> Option<ConnectorError> {
        self.failure
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// Notes offsets skipped under an `offset_reset` policy.
    pub fn record_skipped(&self, skipped: SkippedOffsets) {
        self.skipped
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(skipped);
    }

    /// Takes the skipped ranges noted so far (the sink records them with its next snapshot).
    pub fn take_skipped(&self) -> Vec<SkippedOffsets> {
        std::mem::take(&mut *self.skipped.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Counts records a source has read.
    pub(crate) fn add_records_in(&self, records: u64) {
        self.records_in.fetch_add(records, Ordering::Relaxed);
    }

    /// Records read by all sources so far.
    pub fn records_in(&self) -> u64 {
        self.records_in.load(Ordering::Relaxed)
    }
}
