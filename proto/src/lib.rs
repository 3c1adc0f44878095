//! Strand's gRPC API: the generated tonic/prost code for `proto/strand.proto`,
//! its descriptor set (for server reflection) and the keyed partitioner that
//! both ends of the API share.
//!
//! Record batches are carried as `bytes::Bytes` in the storage crate's batch
//! format; nothing here interprets them.

/// Version 1 of the API (`package strand.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("strand.v1");

    /// The encoded `FileDescriptorSet` of `strand.proto`, for gRPC server
    /// reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/strand_descriptor.bin"));
}

pub mod partitioner;

/// Record headers with a meaning to Strand, shared by the broker and the
/// clients.
pub mod headers {
    /// A share-group member never acquires the record before this time (ms
    /// since the Unix epoch, decimal ASCII).
    pub const DELIVER_AT: &str = "strand.deliver_at";
    /// Dead letters: the last error's text.
    pub const DLQ_ERROR: &str = "strand.dlq.error";
    /// Dead letters: how many times processing was tried.
    pub const DLQ_ATTEMPTS: &str = "strand.dlq.attempts";
    /// Dead letters: the original topic.
    pub const DLQ_TOPIC: &str = "strand.dlq.topic";
    /// Dead letters: the original partition.
    pub const DLQ_PARTITION: &str = "strand.dlq.partition";
    /// Dead letters: the original offset.
    pub const DLQ_OFFSET: &str = "strand.dlq.offset";
    /// Dead letters: the original record timestamp (ms).
    pub const DLQ_TIMESTAMP: &str = "strand.dlq.timestamp";

    /// The delivery time a record's headers carry, if any (a value that is
    /// not a decimal number is no delivery time).
    pub fn deliver_at<'a>(headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>) -> Option<i64> {
        headers
            .into_iter()
            .filter(|(k, _)| *k == DELIVER_AT)
            .filter_map(|(_, v)| std::str::from_utf8(v?).ok()?.trim().parse::<i64>().ok())
            .last()
    }
}
