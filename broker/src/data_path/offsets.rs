//! ListOffsets: earliest, latest (the high watermark) or by timestamp.

use strand_storage::Offset;

use crate::error::Result;
use crate::node::Node;
use crate::partition::PartitionOffsets;
use crate::topic::TopicUuid;

/// Which offset to resolve.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first stored offset.
    Earliest,
    /// The high watermark (the next offset a consumer would see).
    Latest,
    /// The first offset whose record timestamp is at or after this (ms).
    Timestamp(i64),
}

/// Resolves `spec` on a partition hosted here; also returns its offsets.
pub fn list_offsets(
    node: &Node,
    topic: &str,
    topic_id: Option<TopicUuid>,
    partition: u32,
    spec: OffsetSpec,
) -> Result<(Offset, PartitionOffsets)> {
    let p = node.partition_as(topic, topic_id, partition)?;
    let st = p.offsets();
    let offset = match spec {
        OffsetSpec::Earliest => st.log_start_offset,
        OffsetSpec::Latest => st.high_watermark,
        // A timestamp past every record resolves to the end, as in Kafka's
        // consumer `offsetsForTimes` + seek-to-end.
        OffsetSpec::Timestamp(ts) => p.lookup_by_timestamp(ts)?.unwrap_or(st.high_watermark),
    };
    Ok((offset, st))
}
