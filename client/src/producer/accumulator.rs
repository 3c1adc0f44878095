//! Collects records into one open batch per partition and decides when a
//! batch is sealed: when the next record would push it past `batch_bytes`
//! (a record larger than that goes alone in its batch), when it has lingered
//! long enough and its partition is free to send, or on flush.
//!
//! The accumulator is plain synchronous state behind the producer's mutex:
//! the [`super::Producer`] handles append to it and the sender task takes
//! sealed batches from it. Records are encoded into the batch as they
//! arrive, so a record's own buffers are released at `send`.

use std::collections::VecDeque;
use std::collections::hash_map::Entry;

use foldhash::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_storage::{BatchBuilder, Compression};
use tokio::sync::{OwnedSemaphorePermit, oneshot};

use super::delivery::{Completion, DeliveryFuture};

use super::partitioner::StickyPartition;
use super::record::ProducerRecord;
use crate::error::ClientError;

/// Idle batch builders kept for reuse. Each holds buffers as large as the
/// largest batch it built, so the pool is small: it only has to cover the
/// partitions being written at one time by a typical producer.
const SPARE_BUILDERS: usize = 16;

/// A sealed batch on its way to the broker, with the records it answers for.
#[derive(Debug)]
pub(crate) struct ProducerBatch {
    /// Monotonic id, assigned when the batch was opened.
    pub id: u64,
    pub topic: Arc<str>,
    pub partition: u32,
    /// The encoded batch (storage format, offsets left for the broker).
    pub bytes: Bytes,
    record_count: usize,
    /// Settles the records' delivery futures.
    completion: Completion,
    /// The batch's share of `buffer_bytes`, released when it completes.
    _permit: Option<OwnedSemaphorePermit>,
    /// When its first record arrived; the delivery timeout counts from here.
    pub created_at: Instant,
    /// Sends tried so far.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<ClientError>,
    /// Its place among its partition's sent batches (given at the first
    /// send; retries keep it).
    pub ord: Option<u64>,
    /// How it is numbered, when the producer is idempotent (given at the
    /// first send).
    pub seq: Option<super::idempotence::Sequence>,
    /// The broker said it is not stored (a sequence error): it may be
    /// numbered again.
    pub unwritten: bool,
}

impl ProducerBatch {
    pub(crate) fn record_count(&self) -> usize {
        self.record_count
    }

    /// Resolves every record's future with its offset (`base_offset + i`).
    pub(crate) fn complete(self, base_offset: Option<u64>) {
        self.completion.succeed(base_offset);
    }

    /// Fails every record's future with `err`.
    pub(crate) fn fail(self, err: ClientError) {
        self.completion.fail(err);
    }
}

/// Accumulator settings.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AccumulatorConfig {
    pub batch_bytes: usize,
    pub linger: Duration,
    pub compression: Compression,
}

/// Which partition a record goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target {
    /// This partition (explicit or from the key).
    Partition(u32),
    /// The topic's sticky partition, among this many.
    Sticky { num_partitions: u32 },
}

/// Outcome of [`Accumulator::append`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Appended {
    /// Where the record went.
    pub partition: u32,
    /// The sender task has something new to look at (a sealed batch, or the
    /// first linger deadline).
    pub wake: bool,
}

#[derive(Debug)]
struct OpenBatch {
    id: u64,
    builder: BatchBuilder,
    record_count: usize,
    completion: Completion,
    permit: Option<OwnedSemaphorePermit>,
    created_at: Instant,
}

#[derive(Debug)]
struct TopicBatches {
    name: Arc<str>,
    open: HashMap<u32, OpenBatch>,
    sticky: StickyPartition,
}

/// A linger deadline. Deadlines are appended in opening order, so the queue
/// is sorted; entries of batches sealed early are skipped when popped.
#[derive(Debug)]
struct LingerEntry {
    deadline: Instant,
    topic: Arc<str>,
    partition: u32,
    batch_id: u64,
}

/// A flush waiting for every batch opened before it to complete.
#[derive(Debug)]
pub(crate) struct FlushWaiter {
    /// Batches with ids below this must complete first.
    pub upto: u64,
    pub tx: oneshot::Sender<()>,
}

/// The open batches of every partition, plus the hand-off to the sender.
#[derive(Debug)]
pub(crate) struct Accumulator {
    config: AccumulatorConfig,
    topics: HashMap<Arc<str>, TopicBatches>,
    /// Sealed batches the sender has not taken yet, in sealing order.
    ready: VecDeque<ProducerBatch>,
    linger_queue: VecDeque<LingerEntry>,
    spare: Vec<BatchBuilder>,
    next_id: u64,
    open_count: usize,
    flush_waiters: Vec<FlushWaiter>,
    /// `close` was called: no more appends.
    pub closed: bool,
    /// The sender task finished: nothing is pending and nothing will be sent.
    pub sender_done: bool,
}

impl Accumulator {
    pub(crate) fn new(config: AccumulatorConfig) -> Self {
        Accumulator {
            config,
            topics: HashMap::default(),
            ready: VecDeque::new(),
            linger_queue: VecDeque::new(),
            spare: Vec::new(),
            next_id: 0,
            open_count: 0,
            flush_waiters: Vec::new(),
            closed: false,
            sender_done: false,
        }
    }

    /// Adds `record` (whose [`ProducerRecord::encoded_size`] is `size`) to
    /// its partition's open batch, sealing that batch first if the record
    /// would not fit. `permit` is the record's share of the buffer; `clock`
    /// is read only when the record opens a batch (its linger starts).
    pub(crate) fn append(
        &mut self,
        record: &ProducerRecord,
        target: Target,
        timestamp_ms: i64,
        size: usize,
        permit: Option<OwnedSemaphorePermit>,
        clock: impl FnOnce() -> Instant,
    ) -> (Appended, DeliveryFuture) {
        if !self.topics.contains_key(&*record.topic) {
            self.topics.insert(
                record.topic.clone(),
                TopicBatches {
                    name: record.topic.clone(),
                    open: HashMap::default(),
                    sticky: StickyPartition::default(),
                },
            );
        }
        let Accumulator {
            config,
            topics,
            ready,
            linger_queue,
            spare,
            next_id,
            open_count,
            ..
        } = self;
        let Some(t) = topics.get_mut(&*record.topic) else {
            // Inserted above; unreachable, but never panic here.
            let failed = Completion::new(record.topic.clone(), 0);
            let delivery = failed.delivery(0, timestamp_ms);
            failed.fail(ClientError::Closed);
            return (
                Appended {
                    partition: 0,
                    wake: false,
                },
                delivery,
            );
        };
        let mut wake = false;
        let mut partition = match target {
            Target::Partition(p) => p,
            Target::Sticky { num_partitions } => t.sticky.partition(num_partitions),
        };
        // A record that does not fit seals the open batch; a keyless record
        // then moves to the next sticky partition (Kafka's `onNewBatch`).
        while t
            .open
            .get(&partition)
            .is_some_and(|b| b.record_count > 0 && b.builder.uncompressed_size() + size > config.batch_bytes)
        {
            if let Some(sealed) = seal_open(t, partition, spare, open_count) {
                ready.push_back(sealed);
            }
            wake = true;
            match target {
                Target::Sticky { num_partitions } => partition = t.sticky.partition(num_partitions),
                Target::Partition(_) => break,
            }
        }

        let open = match t.open.entry(partition) {
            Entry::Occupied(o) => o.into_mut(),
            Entry::Vacant(v) => {
                let id = *next_id;
                *next_id += 1;
                *open_count += 1;
                let now = clock();
                wake |= linger_queue.is_empty();
                linger_queue.push_back(LingerEntry {
                    deadline: now + config.linger,
                    topic: t.name.clone(),
                    partition,
                    batch_id: id,
                });
                v.insert(OpenBatch {
                    id,
                    builder: spare.pop().unwrap_or_else(|| BatchBuilder::new(config.compression)),
                    record_count: 0,
                    completion: Completion::new(t.name.clone(), partition),
                    permit: None,
                    created_at: now,
                })
            }
        };
        record.with_new_record(timestamp_ms, |r| open.builder.push(r));
        // At most `batch_bytes` (a u32) of records, each at least a byte.
        let index = u32::try_from(open.record_count).unwrap_or(u32::MAX);
        let delivery = open.completion.delivery(index, timestamp_ms);
        open.record_count += 1;
        match (&mut open.permit, permit) {
            (Some(held), Some(p)) => held.merge(p),
            (slot @ None, p) => *slot = p,
            (Some(_), None) => {}
        }
        if open.builder.uncompressed_size() >= config.batch_bytes {
            if let Some(sealed) = seal_open(t, partition, spare, open_count) {
                ready.push_back(sealed);
            }
            wake = true;
        }
        (Appended { partition, wake }, delivery)
    }

    /// Seals the open batch of `topic`/`partition`, if any. A batch that
    /// fails to encode fails its records here and yields `None`.
    pub(crate) fn seal(&mut self, topic: &str, partition: u32) -> Option<ProducerBatch> {
        let t = self.topics.get_mut(topic)?;
        seal_open(t, partition, &mut self.spare, &mut self.open_count)
    }

    /// Seals the open batch of `topic`/`partition` if it has lingered for
    /// the configured time by `now`.
    pub(crate) fn seal_if_lingered(&mut self, topic: &str, partition: u32, now: Instant) -> Option<ProducerBatch> {
        let lingered = self
            .topics
            .get(topic)
            .and_then(|t| t.open.get(&partition))
            .is_some_and(|b| b.created_at + self.config.linger <= now);
        if lingered { self.seal(topic, partition) } else { None }
    }

    /// Seals every open batch into the ready queue.
    pub(crate) fn seal_all(&mut self) {
        let open: Vec<(Arc<str>, u32)> = self
            .topics
            .values()
            .flat_map(|t| t.open.keys().map(|p| (t.name.clone(), *p)))
            .collect();
        for (topic, partition) in open {
            if let Some(b) = self.seal(&topic, partition) {
                self.ready.push_back(b);
            }
        }
    }

    /// Seals everything and registers a waiter for every batch opened so far.
    pub(crate) fn flush(&mut self, tx: oneshot::Sender<()>) {
        self.seal_all();
        self.flush_waiters.push(FlushWaiter { upto: self.next_id, tx });
    }

    /// Takes the sealed batches, in sealing order.
    pub(crate) fn take_ready(&mut self) -> impl Iterator<Item = ProducerBatch> + '_ {
        self.ready.drain(..)
    }

    /// Takes the registered flush waiters.
    pub(crate) fn take_flush_waiters(&mut self) -> Vec<FlushWaiter> {
        std::mem::take(&mut self.flush_waiters)
    }

    /// The next partition whose open batch has lingered by `now`, consuming
    /// its deadline. Entries of batches already sealed are skipped.
    pub(crate) fn pop_lingered(&mut self, now: Instant) -> Option<(Arc<str>, u32)> {
        while let Some(front) = self.linger_queue.front() {
            if front.deadline > now {
                return None;
            }
            let e = self.linger_queue.pop_front()?;
            let still_open = self
                .topics
                .get(&*e.topic)
                .and_then(|t| t.open.get(&e.partition))
                .is_some_and(|b| b.id == e.batch_id);
            if still_open {
                return Some((e.topic, e.partition));
            }
        }
        None
    }

    /// The earliest linger deadline (possibly of a batch sealed since).
    pub(crate) fn next_linger_deadline(&self) -> Option<Instant> {
        self.linger_queue.front().map(|e| e.deadline)
    }

    /// Whether a partition has an open batch.
    #[cfg(test)]
    pub(crate) fn has_open(&self, topic: &str, partition: u32) -> bool {
        self.topics.get(topic).is_some_and(|t| t.open.contains_key(&partition))
    }

    /// No open batch and nothing waiting for the sender.
    pub(crate) fn is_empty(&self) -> bool {
        self.open_count == 0 && self.ready.is_empty()
    }
}

/// Seals `t`'s open batch of `partition`, if any, keeping its builder
/// for reuse. A batch that fails to encode fails its records here and
/// yields `None`.
fn seal_open(
    t: &mut TopicBatches,
    partition: u32,
    spare: &mut Vec<BatchBuilder>,
    open_count: &mut usize,
) -> Option<ProducerBatch> {
    let mut open = t.open.remove(&partition)?;
    t.sticky.on_sealed(partition);
    *open_count -= 1;
    let built = open.builder.build();
    if spare.len() < SPARE_BUILDERS {
        spare.push(open.builder);
    }
    match built {
        Ok(bytes) => Some(ProducerBatch {
            id: open.id,
            topic: t.name.clone(),
            partition,
            bytes: Bytes::from(bytes),
            record_count: open.record_count,
            completion: open.completion,
            _permit: open.permit,
            created_at: open.created_at,
            attempts: 0,
            last_error: None,
            ord: None,
            seq: None,
            unwritten: false,
        }),
        Err(e) => {
            let err = ClientError::invalid(format!("cannot encode a batch for {}/{partition}: {e}", t.name));
            open.completion.fail(err);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use strand_storage::{BatchRef, DecodedRecords};

    use super::*;

    const NOW_MS: i64 = 1_700_000_000_000;

    fn acc(batch_bytes: usize) -> Accumulator {
        Accumulator::new(AccumulatorConfig {
            batch_bytes,
            linger: Duration::from_millis(5),
            compression: Compression::None,
        })
    }

    fn record(value: &[u8]) -> ProducerRecord {
        ProducerRecord::new("t", Bytes::copy_from_slice(value))
    }

    /// Appends `r` to an explicit partition; returns the receiver of its result.
    fn push(a: &mut Accumulator, r: &ProducerRecord, target: Target, now: Instant) -> (Appended, DeliveryFuture) {
        let size = r.encoded_size();
        a.append(r, target, NOW_MS, size, None, || now)
    }

    fn values(batch: &ProducerBatch) -> Vec<Vec<u8>> {
        let b = BatchRef::validate(&batch.bytes).expect("a valid batch");
        let d = DecodedRecords::new(&b).expect("decodes");
        d.iter()
            .map(|r| r.expect("valid record").value.unwrap_or_default().to_vec())
            .collect()
    }

    #[test]
    fn a_batch_is_sealed_before_the_record_that_would_overflow_it() {
        let one = record(&[1; 100]);
        let estimate = one.encoded_size();
        let mut probe = BatchBuilder::new(Compression::None);
        one.with_new_record(NOW_MS, |r| probe.push(r));
        let actual = probe.uncompressed_size() - strand_storage::HEADER_LEN;
        // Three encoded records plus the estimate of a fourth do not fit.
        let mut a = acc(strand_storage::HEADER_LEN + 3 * actual + estimate - 1);
        let t0 = Instant::now();
        let mut wakes = vec![];
        for _ in 0..3 {
            wakes.push(push(&mut a, &one, Target::Partition(0), t0).0.wake);
        }
        assert_eq!(
            wakes,
            [true, false, false],
            "only the first record (first linger deadline) wakes the sender"
        );
        assert_eq!(a.take_ready().count(), 0, "three records fit");
        let (appended, _rx) = push(&mut a, &one, Target::Partition(0), t0);
        assert!(appended.wake, "sealing wakes the sender");
        let ready: Vec<_> = a.take_ready().collect();
        assert_eq!(ready.len(), 1);
        assert_eq!(ready[0].record_count(), 3);
        assert_eq!(values(&ready[0]).len(), 3);
        assert!(a.has_open("t", 0), "the fourth record opened a new batch");
    }

    #[test]
    fn a_record_larger_than_batch_bytes_goes_alone_in_its_batch() {
        let mut a = acc(200);
        let t0 = Instant::now();
        let _small = push(&mut a, &record(b"small"), Target::Partition(0), t0);
        let _big = push(&mut a, &record(&[7; 1000]), Target::Partition(0), t0);
        let ready: Vec<_> = a.take_ready().collect();
        assert_eq!(ready.len(), 2, "the small batch is sealed first, the big one at once");
        assert_eq!(values(&ready[0]), vec![b"small".to_vec()]);
        assert_eq!(values(&ready[1]), vec![vec![7; 1000]]);
        assert!(!a.has_open("t", 0));
        assert!(ready[0].id < ready[1].id);
    }

    #[test]
    fn lingered_batches_are_reported_once_their_deadline_passes() {
        let mut a = acc(1 << 20);
        let t0 = Instant::now();
        let _r0 = push(&mut a, &record(b"a"), Target::Partition(0), t0);
        let _r1 = push(
            &mut a,
            &record(b"b"),
            Target::Partition(1),
            t0 + Duration::from_millis(2),
        );
        assert_eq!(a.next_linger_deadline(), Some(t0 + Duration::from_millis(5)));
        assert_eq!(a.pop_lingered(t0 + Duration::from_millis(4)), None, "not yet");
        assert!(a.seal_if_lingered("t", 0, t0 + Duration::from_millis(4)).is_none());
        let first = a.pop_lingered(t0 + Duration::from_millis(5));
        assert_eq!(first.as_ref().map(|(t, p)| (&**t, *p)), Some(("t", 0)));
        assert_eq!(
            a.pop_lingered(t0 + Duration::from_millis(5)),
            None,
            "partition 1 lingers until 7 ms"
        );
        let sealed = a
            .seal_if_lingered("t", 0, t0 + Duration::from_millis(5))
            .expect("lingered");
        assert_eq!(values(&sealed), vec![b"a".to_vec()]);
        // Partition 1 is sealed early by a flush: its deadline entry goes stale.
        let (tx, _rx) = oneshot::channel();
        a.flush(tx);
        assert_eq!(
            a.pop_lingered(t0 + Duration::from_secs(1)),
            None,
            "stale entries are skipped"
        );
        assert_eq!(a.take_ready().count(), 1);
        assert!(a.is_empty());
    }

    #[test]
    fn flush_seals_every_open_batch_and_waits_for_ids_opened_before_it() {
        let mut a = acc(1 << 20);
        let t0 = Instant::now();
        for p in 0..3 {
            let _ = push(&mut a, &record(b"x"), Target::Partition(p), t0);
        }
        let (tx, _rx) = oneshot::channel();
        a.flush(tx);
        let ids: Vec<u64> = a.take_ready().map(|b| b.id).collect();
        assert_eq!(ids.len(), 3);
        let waiters = a.take_flush_waiters();
        assert_eq!(waiters.len(), 1);
        assert!(ids.iter().all(|id| *id < waiters[0].upto));
        assert!(a.is_empty());
    }

    #[test]
    fn keyless_records_stick_to_one_partition_and_move_when_its_batch_seals() {
        let per_record = record(&[0; 50]).encoded_size();
        let mut a = acc(strand_storage::HEADER_LEN + 2 * per_record);
        let t0 = Instant::now();
        let sticky = Target::Sticky { num_partitions: 4 };
        let (first, _r) = push(&mut a, &record(&[0; 50]), sticky, t0);
        let (second, _r) = push(&mut a, &record(&[0; 50]), sticky, t0);
        assert_eq!(first.partition, second.partition, "sticks while the batch is open");
        let (third, _r) = push(&mut a, &record(&[0; 50]), sticky, t0);
        assert_ne!(
            third.partition, first.partition,
            "the full batch was sealed, so the record moved"
        );
        let ready: Vec<_> = a.take_ready().collect();
        assert_eq!(ready.len(), 1);
        assert_eq!((ready[0].partition, ready[0].record_count()), (first.partition, 2));
        // A linger seal moves the sticky partition too.
        let sealed = a.seal_if_lingered("t", third.partition, t0 + Duration::from_secs(1));
        assert!(sealed.is_some());
        let (fourth, _r) = push(&mut a, &record(&[0; 50]), sticky, t0);
        assert_ne!(fourth.partition, third.partition);
    }

    #[test]
    fn completing_a_batch_reports_consecutive_offsets() {
        let mut a = acc(1 << 20);
        let t0 = Instant::now();
        let (_, d0) = push(&mut a, &record(b"a"), Target::Partition(2), t0);
        let (_, d1) = push(&mut a, &record(b"b"), Target::Partition(2), t0);
        let batch = a.seal("t", 2).expect("open batch");
        assert!(!d0.is_settled());
        batch.complete(Some(40));
        assert!(d0.is_settled() && d1.is_settled());
        let m0 = futures::FutureExt::now_or_never(d0).expect("resolved").expect("ok");
        let m1 = futures::FutureExt::now_or_never(d1).expect("resolved").expect("ok");
        assert_eq!((m0.offset, m1.offset, m1.partition), (Some(40), Some(41), 2));
        assert_eq!(m0.timestamp_ms, NOW_MS);
    }

    #[test]
    fn the_buffer_permit_is_released_when_the_batch_completes() {
        let sem = Arc::new(tokio::sync::Semaphore::new(1000));
        let mut a = acc(1 << 20);
        let r = record(b"a");
        for _ in 0..2 {
            let permit = sem.clone().try_acquire_many_owned(100).expect("permits");
            let _delivery = a.append(&r, Target::Partition(0), 0, 100, Some(permit), Instant::now);
        }
        assert_eq!(sem.available_permits(), 800);
        let batch = a.seal("t", 0).expect("open");
        assert_eq!(sem.available_permits(), 800, "held while in flight");
        batch.fail(ClientError::Closed);
        assert_eq!(sem.available_permits(), 1000);
    }
}
