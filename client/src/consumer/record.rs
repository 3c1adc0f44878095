//! What [`crate::Consumer::poll`] returns.

use std::sync::Arc;

use bytes::Bytes;

/// A record read from a partition.
///
/// For uncompressed batches `key`, `value` and header values are slices of
/// the fetched response buffer (no copy); for compressed batches they are
/// slices of one buffer per batch. Holding a record keeps that buffer alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerRecord {
    /// Topic (shared by all records of the topic).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// Offset within the partition.
    pub offset: u64,
    /// Create time set by the producer, ms since the epoch.
    pub timestamp_ms: i64,
    /// Key; `None` is a null key.
    pub key: Option<Bytes>,
    /// Value; `None` is a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Headers in the order the producer added them.
    pub headers: Vec<(String, Option<Bytes>)>,
}
