//! ListOffsets: earliest, latest (the high watermark) or by timestamp.

use strand_proto::v1::{ListOffsetsRequest, ListOffsetsResponse, list_offsets_request::Spec};

use crate::error::{BrokerError, Result};
use crate::state::BrokerState;

/// Resolves one offset spec.
pub fn list_offsets(state: &BrokerState, req: ListOffsetsRequest) -> Result<ListOffsetsResponse> {
    let p = state.partition(&req.topic, req.partition)?;
    let st = p.state();
    let offset = match req.spec {
        Some(Spec::Earliest(_)) => st.log_start_offset,
        Some(Spec::Latest(_)) => st.high_watermark,
        // A timestamp past every record resolves to the end, as in Kafka's
        // consumer `offsetsForTimes` + seek-to-end.
        Some(Spec::TimestampMs(ts)) => p.lookup_by_timestamp(ts)?.unwrap_or(st.high_watermark),
        None => {
            return Err(BrokerError::InvalidRequest {
                reason: "ListOffsets needs earliest, latest or timestamp_ms".into(),
            });
        }
    };
    Ok(ListOffsetsResponse {
        offset,
        log_start_offset: st.log_start_offset,
        high_watermark: st.high_watermark,
    })
}
