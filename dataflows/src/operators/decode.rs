//! The `decode_readings` operator: raw records in, readings and rejects out.

use timely::dataflow::operators::core::OkErr;
use timely::dataflow::StreamVec;
use timely::progress::Timestamp;

use crate::decode::decode_reading;
use crate::reading::{RawRecord, Reading, Rejected};

/// Decodes raw records where they were read (no exchange): good ones become readings, bad ones
/// become `Rejected` rows with the reason, so a bad record never stops the dataflow.
pub trait DecodeReadings<'scope, T: Timestamp> {
    fn decode_readings(
        self,
    ) -> (
        StreamVec<'scope, T, Reading>,
        StreamVec<'scope, T, Rejected>,
    );
}

impl<'scope, T: Timestamp> DecodeReadings<'scope, T> for StreamVec<'scope, T, RawRecord> {
    fn decode_readings(
        self,
    ) -> (
        StreamVec<'scope, T, Reading>,
        StreamVec<'scope, T, Rejected>,
    ) {
        self.ok_err(|record: RawRecord| match decode_reading(&record.payload) {
            Ok(reading) => Ok(reading),
            Err(error) => Err(Rejected {
                partition: record.partition,
                offset: record.offset,
                payload: record.payload,
                error: error.to_string(),
            }),
        })
    }
}
