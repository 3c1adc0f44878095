//! Resolving an offset of a partition (earliest, latest, by timestamp) with
//! the `ListOffsets` RPC, shared by [`crate::Admin`] and [`crate::Consumer`].

use std::time::Duration;

use strand_proto::v1::ListOffsetsRequest;
use strand_proto::v1::list_offsets_request::Spec;

use crate::connection::with_timeout;
use crate::error::Result;
use crate::metadata::Metadata;
use crate::retry::{Backoff, with_leader};

/// Which offset of a partition to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still stored (the log start offset).
    Earliest,
    /// The offset after the last visible record (the high watermark).
    Latest,
    /// The first offset whose record timestamp is at or after this many ms
    /// since the epoch; the high watermark if every record is older.
    Timestamp(i64),
}

impl OffsetSpec {
    fn to_proto(self) -> Spec {
        match self {
            OffsetSpec::Earliest => Spec::Earliest(true),
            OffsetSpec::Latest => Spec::Latest(true),
            OffsetSpec::Timestamp(ms) => Spec::TimestampMs(ms),
        }
    }
}

/// The answer to an offset lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListedOffsets {
    /// The resolved offset.
    pub offset: u64,
    /// First offset still stored.
    pub log_start_offset: u64,
    /// The offset after the last visible record.
    pub high_watermark: u64,
}

/// Looks `spec` up on the partition's leader, retrying retriable failures
/// for up to `limit`.
pub(crate) async fn list_offsets(
    md: &Metadata,
    topic: &str,
    partition: u32,
    spec: OffsetSpec,
    backoff: Backoff,
    limit: Duration,
) -> Result<ListedOffsets> {
    let timeout = md.conns().config().request_timeout;
    with_leader(md, topic, partition, backoff, limit, |mut client| {
        let request = ListOffsetsRequest {
            topic: topic.to_owned(),
            partition,
            spec: Some(spec.to_proto()),
            topic_id: md.topic_id(topic).map(|id| id.to_string()).unwrap_or_default(),
        };
        with_timeout(
            move || format!("list offsets of {topic}/{partition}"),
            timeout,
            async move {
                let r = client.list_offsets(request).await?.into_inner();
                Ok(ListedOffsets {
                    offset: r.offset,
                    log_start_offset: r.log_start_offset,
                    high_watermark: r.high_watermark,
                })
            },
        )
    })
    .await
}
