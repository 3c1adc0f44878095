//! What goes into [`crate::Producer::send`] and what comes back.

use std::sync::Arc;

use bytes::Bytes;
use strand_storage::{Header, NewRecord, encoded_len_estimate};

/// A record to send.
///
/// ```
/// use strand_client::ProducerRecord;
///
/// let r = ProducerRecord::new("orders", "payload")
///     .key("customer-42")
///     .header("source", "web")
///     .timestamp_ms(1_700_000_000_000);
/// assert_eq!(r.partition, None); // chosen from the key
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic to write to. An `Arc<str>` so sending many records to one
    /// topic can share the name instead of allocating it per record.
    pub topic: Arc<str>,
    /// Explicit partition; `None` lets the partitioner choose (from the key,
    /// or sticky for keyless records).
    pub partition: Option<u32>,
    /// Partitioning key; `None` is a null key.
    pub key: Option<Bytes>,
    /// Payload; `None` is a null value (a tombstone).
    pub value: Option<Bytes>,
    /// Application headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
    /// Create time in ms since the epoch; `None` means the time of `send`.
    pub timestamp_ms: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value, no key, no headers.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp_ms: None,
        }
    }

    /// A record with a key and a null value (a delete marker for compaction).
    pub fn tombstone(topic: impl Into<Arc<str>>, key: impl Into<Bytes>) -> Self {
        ProducerRecord {
            value: None,
            key: Some(key.into()),
            ..ProducerRecord::new(topic, Bytes::new())
        }
    }

    /// Sets the key.
    pub fn key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Appends a header.
    pub fn header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push((key.into(), Some(value.into())));
        self
    }

    /// Delayed delivery: share-group members are not handed the record
    /// before `at` (the `strand.deliver_at` header). It is stored at once,
    /// in order, and ordinary consumers see it at its offset at once.
    pub fn deliver_at(self, at: std::time::SystemTime) -> Self {
        let ms = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.header(strand_proto::headers::DELIVER_AT, ms.to_string())
    }

    /// Delayed delivery `delay` from now (see [`ProducerRecord::deliver_at`]).
    pub fn deliver_after(self, delay: std::time::Duration) -> Self {
        self.deliver_at(std::time::SystemTime::now() + delay)
    }

    /// Sends to this partition instead of letting the partitioner choose.
    pub fn partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the create time (ms since the epoch).
    pub fn timestamp_ms(mut self, timestamp_ms: i64) -> Self {
        self.timestamp_ms = Some(timestamp_ms);
        self
    }

    /// Upper bound of the record's encoded size in a batch, the amount it
    /// counts against `batch_bytes` and `buffer_bytes`.
    pub(crate) fn encoded_size(&self) -> usize {
        self.with_new_record(0, encoded_len_estimate)
    }

    /// Calls `f` with the record as the batch codec sees it. Headers are
    /// borrowed through a stack array when there are few of them.
    pub(crate) fn with_new_record<T>(&self, timestamp_ms: i64, f: impl FnOnce(&NewRecord<'_>) -> T) -> T {
        /// Headers handled without a heap allocation.
        const INLINE_HEADERS: usize = 8;
        fn header((k, v): &(String, Option<Bytes>)) -> Header<'_> {
            Header {
                key: k.as_str(),
                value: v.as_deref(),
            }
        }
        let mut inline = [Header { key: "", value: None }; INLINE_HEADERS];
        let spilled: Vec<Header<'_>>;
        let headers: &[Header<'_>] = if self.headers.len() <= INLINE_HEADERS {
            for (slot, h) in inline.iter_mut().zip(&self.headers) {
                *slot = header(h);
            }
            &inline[..self.headers.len()]
        } else {
            spilled = self.headers.iter().map(header).collect();
            &spilled
        };
        f(&NewRecord {
            timestamp_ms,
            key: self.key.as_deref(),
            value: self.value.as_deref(),
            headers,
        })
    }
}

/// Where a record was stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition.
    pub partition: u32,
    /// The record's offset; `None` with [`crate::Acks::None`], where the
    /// broker does not report it.
    pub offset: Option<u64>,
    /// The record's create timestamp (ms since the epoch) as sent.
    pub timestamp_ms: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoded_size_bounds_the_real_encoding_with_many_headers() {
        let mut r = ProducerRecord::new("t", "value").key("k");
        for i in 0..20 {
            r = r.header(format!("h{i}"), "v");
        }
        let mut b = strand_storage::BatchBuilder::new(strand_storage::Compression::None);
        r.with_new_record(7, |nr| b.push(nr));
        assert!(b.uncompressed_size() - strand_storage::HEADER_LEN <= r.encoded_size());
        let bytes = b.build().expect("one record");
        let batch = strand_storage::BatchRef::validate(&bytes).expect("valid");
        let records = strand_storage::DecodedRecords::new(&batch).expect("decodes");
        let rec = records.iter().next().expect("a record").expect("valid record");
        assert_eq!(rec.headers().count(), 20);
        assert_eq!(rec.timestamp_ms, 7);
    }

    #[test]
    fn tombstones_have_a_key_and_no_value() {
        let r = ProducerRecord::tombstone("t", "k");
        assert_eq!((r.key.as_deref(), r.value.as_deref()), (Some(&b"k"[..]), None));
    }
}
