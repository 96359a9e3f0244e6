//! The `into_insertions` operator: a timely stream of records becomes a differential collection.

use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Operator;
use timely::dataflow::StreamVec;
use timely::order::TotalOrder;
use timely::progress::Timestamp;

/// Each record is inserted (diff +1) into the collection at the time it arrived.
pub trait IntoInsertions<'scope, T: Timestamp, D> {
    fn into_insertions(self) -> VecCollection<'scope, T, D>;
}

impl<'scope, T: Timestamp + TotalOrder, D: Clone + 'static> IntoInsertions<'scope, T, D>
    for StreamVec<'scope, T, D>
{
    fn into_insertions(self) -> VecCollection<'scope, T, D> {
        self.unary(Pipeline, "IntoInsertions", |_capability, _info| {
            move |input, output| {
                input.for_each(|capability, data| {
                    let Some(time) = capability.least().cloned() else {
                        return;
                    };
                    if let Some(capability) = capability.retain_least(output.output_index()) {
                        output.session(&capability).give_iterator(
                            data.drain(..).map(|record| (record, time.clone(), 1isize)),
                        );
                    }
                });
            }
        })
        .as_collection()
    }
}
