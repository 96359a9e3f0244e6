//! The `decode_records` operator: raw records in, typed events and rejects out.

use std::sync::Arc;

use timely::dataflow::operators::core::OkErr;
use timely::dataflow::StreamVec;
use timely::progress::Timestamp;

use crate::reading::{Event, RawRecord, Rejected};
use crate::record::Schema;

/// Decodes raw records where they were read (no exchange), once per source however many views
/// read it: good ones become events, bad ones `Rejected` rows with the reason, so a bad record
/// never stops the dataflow.
pub trait DecodeRecords<'scope, T: Timestamp> {
    fn decode_records(
        self,
        schema: Arc<Schema>,
    ) -> (StreamVec<'scope, T, Event>, StreamVec<'scope, T, Rejected>);
}

impl<'scope, T: Timestamp> DecodeRecords<'scope, T> for StreamVec<'scope, T, RawRecord> {
    fn decode_records(
        self,
        schema: Arc<Schema>,
    ) -> (StreamVec<'scope, T, Event>, StreamVec<'scope, T, Rejected>) {
        self.ok_err(
            move |record: RawRecord| match schema.decode(&record.payload) {
                Ok((row, event_time)) => Ok(Event {
                    partition: record.partition,
                    offset: record.offset,
                    event_time,
                    row,
                    payload: record.payload,
                    partition_watermark: i64::MIN,
                }),
                Err(error) => Err(Rejected {
                    partition: record.partition,
                    offset: record.offset,
                    payload: record.payload,
                    error: error.to_string(),
                }),
            },
        )
    }
}
