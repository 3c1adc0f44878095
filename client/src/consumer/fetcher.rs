//! Fetch requests in flight, one per leader, and turning fetched bytes into
//! records.
//!
//! Fetches outlive a single `poll`: a leader that has nothing to send keeps
//! its long poll open while `poll` returns what other leaders sent, as Kafka's
//! fetcher does, so one idle broker never slows down the others.
//!
//! Each leader gets a fetch session (see `FetchRequest.session_id`): after
//! the opening request, a fetch names only the partitions whose position
//! changed and the broker answers only partitions with something new, so a
//! consumer of thousands of partitions sends and receives what moved, not
//! the whole assignment every time. A failed or refused fetch closes the
//! session; the next one opens a new session.
//!
//! Decoding validates every batch (framing and CRC) before reading it, skips
//! records below the consumer's position (a fetch may start inside a batch)
//! and never returns records of a corrupt batch.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use strand_proto::v1::{ErrorCode, FetchPartition, FetchRequest, FetchResponse, TopicPartitions};
use strand_storage::{BatchError, BatchRef, Compression, DecodedRecords, RecordView, batches};

use super::record::ConsumerRecord;
use crate::connection::with_timeout;
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;
use crate::retry::Backoff;

/// One partition of a fetch: where it asked to start.
#[derive(Debug, Clone)]
pub(crate) struct Requested {
    pub topic: Arc<str>,
    /// The id of the topic the position belongs to, if known.
    pub topic_id: Option<Arc<str>>,
    pub partition: u32,
    pub offset: u64,
}

/// A finished fetch.
#[derive(Debug)]
pub(crate) struct FetchOutcome {
    pub addr: Arc<str>,
    pub requested: Vec<Requested>,
    pub result: Result<FetchResponse>,
    /// What the request did to the leader's session.
    session: SessionStep,
}

/// A partition as a session knows it: its position and topic id.
type SessionKey = (Arc<str>, u32);
type SessionPosition = (u64, Option<Arc<str>>);

/// This consumer's session with one leader.
#[derive(Debug, Default)]
struct Session {
    id: u64,
    /// The epoch of the last request the broker answered.
    epoch: u32,
    /// The positions the broker holds.
    sent: HashMap<SessionKey, SessionPosition>,
    /// A request of the session is in flight.
    busy: bool,
}

/// How a request used its leader's session.
#[derive(Debug)]
enum SessionStep {
    /// No session (one was busy, or the broker offers none).
    None,
    /// Opened a session over these positions.
    Open(HashMap<SessionKey, SessionPosition>),
    /// Continued the session at this epoch; these are the positions after.
    Continue(u32, HashMap<SessionKey, SessionPosition>),
}

/// Finds the request entry each response partition answers. Sessionless
/// answers come in request order (the same index is tried first); a
/// session's answer holds only some partitions, looked up by key.
pub(crate) struct RequestedIndex<'a> {
    requested: &'a [Requested],
    by_key: Option<HashMap<(&'a str, u32), &'a Requested>>,
}

impl<'a> RequestedIndex<'a> {
    pub(crate) fn new(requested: &'a [Requested], answers: usize) -> Self {
        let by_key =
            (answers != requested.len()).then(|| requested.iter().map(|r| ((&*r.topic, r.partition), r)).collect());
        RequestedIndex { requested, by_key }
    }

    /// The entry that answer number `index` (for `topic`/`partition`) answers.
    pub(crate) fn get(&self, index: usize, topic: &str, partition: u32) -> Option<&'a Requested> {
        if let Some(by_key) = &self.by_key {
            return by_key.get(&(topic, partition)).copied();
        }
        let matches = |r: &&Requested| &*r.topic == topic && r.partition == partition;
        self.requested
            .get(index)
            .filter(matches)
            .or_else(|| self.requested.iter().find(matches))
    }
}

/// Fetch sizes and timing.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchConfig {
    pub max_wait: Duration,
    pub fetch_max_bytes: u32,
    pub partition_max_bytes: u32,
    pub request_timeout: Duration,
    pub backoff: Backoff,
}

/// The fetches in flight, the failure count and the fetch session per
/// broker.
pub(crate) struct Fetcher {
    config: FetchConfig,
    inflight: FuturesUnordered<BoxFuture<'static, FetchOutcome>>,
    failures: HashMap<Arc<str>, u32>,
    sessions: HashMap<Arc<str>, Session>,
    /// Brokers that answered an opening request without a session.
    sessionless: std::collections::HashSet<Arc<str>>,
}

impl Fetcher {
    pub(crate) fn new(config: FetchConfig) -> Self {
        Fetcher {
            config,
            inflight: FuturesUnordered::new(),
            failures: HashMap::new(),
            sessions: HashMap::new(),
            sessionless: std::collections::HashSet::new(),
        }
    }

    pub(crate) fn config(&self) -> &FetchConfig {
        &self.config
    }

    /// Starts a long-polling fetch of `partitions` from `addr`; after failures
    /// of that broker it first waits the backoff.
    pub(crate) fn start(&mut self, md: Arc<Metadata>, addr: Arc<str>, partitions: Vec<Requested>) {
        let c = self.config;
        let delay = self.failures.get(&addr).map(|n| c.backoff.delay(*n));
        let wire = |r: &Requested| FetchPartition {
            topic: r.topic.to_string(),
            partition: r.partition,
            offset: r.offset,
            max_bytes: c.partition_max_bytes,
            topic_id: r.topic_id.as_deref().unwrap_or_default().to_string(),
        };
        let wanted = || -> HashMap<SessionKey, SessionPosition> {
            partitions
                .iter()
                .map(|r| ((r.topic.clone(), r.partition), (r.offset, r.topic_id.clone())))
                .collect()
        };
        let mut request = FetchRequest {
            max_wait_ms: u32::try_from(c.max_wait.as_millis()).unwrap_or(u32::MAX),
            max_bytes: c.fetch_max_bytes,
            // The fast path: whole batches, decoded here.
            record_format: strand_proto::v1::RecordFormat::Batches as i32,
            ..Default::default()
        };
        let session = if self.sessionless.contains(&addr) {
            None
        } else {
            match self.sessions.get_mut(&addr) {
                Some(s) if s.busy => None,
                Some(s) => Some(s),
                None => Some(self.sessions.entry(addr.clone()).or_default()),
            }
        };
        let step = match session {
            None => {
                request.partitions = partitions.iter().map(wire).collect();
                SessionStep::None
            }
            Some(s) if s.id == 0 => {
                s.busy = true;
                request.session_epoch = 1;
                request.partitions = partitions.iter().map(wire).collect();
                SessionStep::Open(wanted())
            }
            Some(s) => {
                s.busy = true;
                let after = wanted();
                request.session_id = s.id;
                request.session_epoch = s.epoch.wrapping_add(1);
                request.partitions = partitions
                    .iter()
                    .filter(|r| s.sent.get(&(r.topic.clone(), r.partition)) != Some(&(r.offset, r.topic_id.clone())))
                    .map(wire)
                    .collect();
                let mut forgotten: HashMap<&Arc<str>, Vec<u32>> = HashMap::new();
                for (t, p) in s.sent.keys().filter(|k| !after.contains_key(*k)) {
                    forgotten.entry(t).or_default().push(*p);
                }
                request.forgotten = forgotten
                    .into_iter()
                    .map(|(t, partitions)| TopicPartitions {
                        topic: t.to_string(),
                        partitions,
                        topic_id: String::new(),
                    })
                    .collect();
                SessionStep::Continue(request.session_epoch, after)
            }
        };
        self.inflight.push(Box::pin(async move {
            if let Some(d) = delay {
                tokio::time::sleep(d).await;
            }
            let result = async {
                let mut client = md.conns().strand(&addr).await?;
                with_timeout(|| format!("fetch from {addr}"), c.max_wait + c.request_timeout, async {
                    Ok(client.fetch(request).await?.into_inner())
                })
                .await
            }
            .await;
            FetchOutcome {
                addr,
                requested: partitions,
                result,
                session: step,
            }
        }));
    }

    /// Updates the leader's session with a finished fetch. A session error
    /// is answered as an empty fetch: the partitions are asked again, in a
    /// new session, on the next poll.
    fn settle(&mut self, mut outcome: FetchOutcome) -> FetchOutcome {
        let step = std::mem::replace(&mut outcome.session, SessionStep::None);
        if matches!(step, SessionStep::None) {
            return outcome;
        }
        let ok_id = outcome.result.as_ref().ok().map(|r| r.session_id);
        match (step, ok_id) {
            (SessionStep::Open(_), Some(0)) => {
                // A broker without sessions: fetch it in full from now on.
                self.sessions.remove(&outcome.addr);
                self.sessionless.insert(outcome.addr.clone());
            }
            (SessionStep::Open(sent), Some(id)) => {
                self.sessions.insert(
                    outcome.addr.clone(),
                    Session {
                        id,
                        epoch: 1,
                        sent,
                        busy: false,
                    },
                );
            }
            (SessionStep::Continue(epoch, sent), Some(_)) => {
                if let Some(s) = self.sessions.get_mut(&outcome.addr) {
                    s.epoch = epoch;
                    s.sent = sent;
                    s.busy = false;
                }
            }
            (_, _) => {
                self.sessions.remove(&outcome.addr);
                let session_error = outcome
                    .result
                    .as_ref()
                    .err()
                    .and_then(ClientError::code)
                    .is_some_and(|c| {
                        matches!(c, ErrorCode::FetchSessionNotFound | ErrorCode::InvalidFetchSessionEpoch)
                    });
                if session_error {
                    tracing::debug!(broker = %outcome.addr, "fetch session closed; opening a new one");
                    outcome.result = Ok(FetchResponse::default());
                }
            }
        }
        outcome
    }

    /// Waits for the next fetch to finish; `None` if none is in flight.
    pub(crate) async fn next(&mut self) -> Option<FetchOutcome> {
        let outcome = self.inflight.next().await?;
        Some(self.settle(outcome))
    }

    /// A fetch that already finished, without waiting.
    pub(crate) fn next_ready(&mut self) -> Option<FetchOutcome> {
        let outcome = self.inflight.next().now_or_never().flatten()?;
        Some(self.settle(outcome))
    }

    pub(crate) fn record_failure(&mut self, addr: &Arc<str>) {
        let n = self.failures.entry(addr.clone()).or_default();
        *n = n.saturating_add(1);
    }

    pub(crate) fn record_success(&mut self, addr: &str) {
        self.failures.remove(addr);
    }
}

/// Result of decoding one partition's fetched bytes.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// The position after the records returned (unchanged if none).
    pub next_position: u64,
    /// A corrupt batch met after the records returned, if any.
    pub error: Option<ClientError>,
}

/// Decodes the batches in `buf` (a fetch answer for `topic`/`partition`
/// asked from `position`) and appends the records at or after `position` to
/// `out`, in offset order. Stops at the first invalid batch: its records are
/// never returned and the position stays at it.
pub(crate) fn decode_records(
    topic: &Arc<str>,
    partition: u32,
    buf: &Bytes,
    position: u64,
    out: &mut Vec<ConsumerRecord>,
) -> Decoded {
    let mut next = position;
    for batch in batches(buf) {
        let corrupt = |source: BatchError, at: u64| Decoded {
            next_position: at,
            error: Some(ClientError::CorruptBatch {
                topic: topic.to_string(),
                partition,
                offset: at,
                source: Arc::new(source),
            }),
        };
        let batch = match batch {
            Ok(b) => b,
            Err(e) => return corrupt(e, next),
        };
        if batch.next_offset().get() <= next {
            continue;
        }
        let mark = out.len();
        if let Err(e) = decode_batch(topic, partition, buf, &batch, next, out) {
            out.truncate(mark);
            return corrupt(e, next);
        }
        next = batch.next_offset().get();
    }
    Decoded {
        next_position: next,
        error: None,
    }
}

/// Appends the records of one validated batch at or after `position`.
fn decode_batch(
    topic: &Arc<str>,
    partition: u32,
    buf: &Bytes,
    batch: &BatchRef<'_>,
    position: u64,
    out: &mut Vec<ConsumerRecord>,
) -> Result<(), BatchError> {
    let decoded = DecodedRecords::new(batch)?;
    let make = |r: &RecordView<'_>, bytes: &mut dyn FnMut(&[u8]) -> Bytes| ConsumerRecord {
        topic: topic.clone(),
        partition,
        offset: r.offset.get(),
        timestamp_ms: r.timestamp_ms,
        key: r.key.map(&mut *bytes),
        value: r.value.map(&mut *bytes),
        headers: r
            .headers()
            .map(|h| (h.key.to_owned(), h.value.map(&mut *bytes)))
            .collect(),
    };
    if batch.compression() == Compression::None {
        // Keys and values point into the fetched buffer.
        for r in decoded.iter() {
            let r = r?;
            if r.offset.get() >= position {
                out.push(make(&r, &mut |s| share(buf, s)));
            }
        }
        return Ok(());
    }
    // Compressed: validate every record and size one buffer for the byte
    // fields of the records returned, then copy each field into it once.
    let mut total = 0;
    for r in decoded.iter() {
        let r = r?;
        if r.offset.get() >= position {
            total += r.key.map_or(0, <[u8]>::len) + r.value.map_or(0, <[u8]>::len);
            total += r.headers().map(|h| h.value.map_or(0, <[u8]>::len)).sum::<usize>();
        }
    }
    let mut arena = BytesMut::with_capacity(total);
    for r in decoded.iter() {
        let r = r?;
        if r.offset.get() >= position {
            out.push(make(&r, &mut |s| {
                arena.extend_from_slice(s);
                arena.split().freeze()
            }));
        }
    }
    Ok(())
}

/// `part` as a slice of `buf` when it lies inside it (always, for data
/// borrowed from an uncompressed batch), else a copy.
fn share(buf: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(buf.as_ptr() as usize);
    if part.is_empty() {
        Bytes::new()
    } else if start <= buf.len() && part.len() <= buf.len() - start {
        buf.slice(start..start + part.len())
    } else {
        Bytes::copy_from_slice(part)
    }
}

#[cfg(test)]
mod tests {
    use strand_storage::{BatchBuilder, Header, NewRecord};

    use super::*;

    /// A batch of `values` stamped with `base_offset`, as a broker would serve it.
    fn stored_batch(base_offset: u64, values: &[&str], compression: Compression) -> Vec<u8> {
        let mut b = BatchBuilder::new(compression);
        for (i, v) in values.iter().enumerate() {
            let key = format!("k{}", base_offset + i as u64);
            b.push(&NewRecord {
                timestamp_ms: 1_000 + i as i64,
                key: Some(key.as_bytes()),
                value: Some(v.as_bytes()),
                headers: &[Header {
                    key: "h",
                    value: Some(b"hv"),
                }],
            });
        }
        let mut bytes = b.build().expect("non-empty batch");
        stamp(&mut bytes, base_offset);
        bytes
    }

    /// Sets the base offset and re-computes the CRC, as the leader does.
    fn stamp(batch: &mut [u8], base_offset: u64) {
        batch[0..8].copy_from_slice(&base_offset.to_le_bytes());
        let mut h = crc32::Hasher::default();
        h.update(&batch[..12]);
        h.update(&batch[16..]);
        let crc = h.finalize();
        batch[12..16].copy_from_slice(&crc.to_le_bytes());
    }

    /// CRC-32 (IEEE), bitwise: the batch format's checksum, written out so
    /// the tests need no extra dependency.
    mod crc32 {
        #[derive(Default)]
        pub struct Hasher {
            crc: u32,
            started: bool,
        }
        impl Hasher {
            pub fn update(&mut self, data: &[u8]) {
                if !self.started {
                    self.crc = 0xffff_ffff;
                    self.started = true;
                }
                for b in data {
                    self.crc ^= u32::from(*b);
                    for _ in 0..8 {
                        let mask = (self.crc & 1).wrapping_neg();
                        self.crc = (self.crc >> 1) ^ (0xedb8_8320 & mask);
                    }
                }
            }
            pub fn finalize(self) -> u32 {
                !self.crc
            }
        }
    }

    fn fetch_bytes(batches: &[Vec<u8>]) -> Bytes {
        Bytes::from(batches.concat())
    }

    fn offsets(records: &[ConsumerRecord]) -> Vec<u64> {
        records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn records_below_the_position_are_skipped_even_inside_a_batch() {
        for compression in [Compression::None, Compression::Snappy] {
            let buf = fetch_bytes(&[
                stored_batch(10, &["a", "b", "c"], compression),
                stored_batch(13, &["d", "e"], compression),
            ]);
            let topic: Arc<str> = Arc::from("t");
            let cases = [
                (10, vec![10, 11, 12, 13, 14]),
                (12, vec![12, 13, 14]),
                (14, vec![14]),
                (15, vec![]),
            ];
            for (position, want) in cases {
                let mut out = Vec::new();
                let d = decode_records(&topic, 3, &buf, position, &mut out);
                assert!(d.error.is_none(), "{compression:?} from {position}: {:?}", d.error);
                assert_eq!(offsets(&out), want, "{compression:?} from {position}");
                assert_eq!(d.next_position, 15, "{compression:?} from {position}");
            }
            let mut out = Vec::new();
            decode_records(&topic, 3, &buf, 11, &mut out);
            let first = &out[0];
            assert_eq!(first.value.as_deref(), Some(&b"b"[..]), "{compression:?}");
            assert_eq!(first.key.as_deref(), Some(&b"k11"[..]), "{compression:?}");
            assert_eq!(first.timestamp_ms, 1_001);
            assert_eq!(first.headers, vec![("h".to_owned(), Some(Bytes::from_static(b"hv")))]);
            assert_eq!((&*first.topic, first.partition), ("t", 3));
        }
    }

    #[test]
    fn uncompressed_values_are_slices_of_the_fetched_buffer() {
        let buf = fetch_bytes(&[stored_batch(0, &["zero-copy"], Compression::None)]);
        let mut out = Vec::new();
        decode_records(&Arc::from("t"), 0, &buf, 0, &mut out);
        let value = out[0].value.as_ref().expect("a value");
        let inside = buf.as_ptr_range().contains(&value.as_ptr());
        assert!(inside, "the value points into the fetch buffer");
    }

    #[test]
    fn an_empty_fetch_leaves_the_position() {
        let mut out = Vec::new();
        let d = decode_records(&Arc::from("t"), 0, &Bytes::new(), 7, &mut out);
        assert!(out.is_empty() && d.error.is_none());
        assert_eq!(d.next_position, 7);
    }

    #[test]
    fn a_corrupt_batch_is_an_error_and_none_of_its_records_are_returned() {
        let good = stored_batch(0, &["a", "b"], Compression::None);
        let mut bad = stored_batch(2, &["c", "d"], Compression::None);
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        let buf = fetch_bytes(&[good, bad, stored_batch(4, &["e"], Compression::None)]);
        let mut out = Vec::new();
        let d = decode_records(&Arc::from("t"), 0, &buf, 1, &mut out);
        assert_eq!(offsets(&out), vec![1], "records before the corrupt batch are kept");
        assert_eq!(d.next_position, 2, "the position stops at the corrupt batch");
        let err = d.error.expect("corrupt batch reported");
        assert_eq!(err.reason(), "CORRUPT_BATCH");
    }

    #[test]
    fn a_truncated_batch_is_an_error() {
        let whole = stored_batch(0, &["a"], Compression::None);
        let buf = Bytes::copy_from_slice(&whole[..whole.len() - 2]);
        let mut out = Vec::new();
        let d = decode_records(&Arc::from("t"), 0, &buf, 0, &mut out);
        assert!(out.is_empty());
        assert_eq!(d.error.map(|e| e.reason().to_owned()).as_deref(), Some("CORRUPT_BATCH"));
    }
}
