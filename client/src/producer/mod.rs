//! The producer: batches records per partition and sends them to the
//! partition leaders in the background.
//!
//! A [`Producer`] is a cheap, cloneable handle. [`Producer::send`] encodes
//! the record into its partition's open batch and returns a
//! [`DeliveryFuture`] at once; the future resolves when the broker has
//! acknowledged the record (per [`Acks`]) or the record failed for good.
//! `send` itself only waits when `buffer_bytes` of records are already
//! waiting for acknowledgement (back-pressure).
//!
//! Records of one partition are delivered in the order `send` returned for
//! them, also across retries. With idempotence (the default, see
//! [`ProducerBuilder::enable_idempotence`]) the producer's own retries never
//! store a record twice: a retry after a lost answer, a leader change or a
//! broker restart is answered with the offsets of the stored copy. Only a
//! second `send` of the same record by the application can store it again.
//! Without idempotence, retries are at least once.

mod accumulator;
mod builder;
mod delivery;
mod idempotence;
mod partitioner;
mod record;
mod sender;

use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use strand_proto::v1::ErrorCode;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;

pub use builder::ProducerBuilder;
pub use delivery::DeliveryFuture;
pub use partitioner::{murmur2, partition_for_key};
pub use record::{ProducerRecord, RecordMetadata};

use accumulator::{Accumulator, Target};

use crate::error::{ClientError, Result};
use crate::metadata::Metadata;

/// How much acknowledgement a send waits for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Acks {
    /// The batch is durable on a majority of replicas (the default).
    #[default]
    All,
    /// The leader appended the batch locally.
    Leader,
    /// Fire and forget: the future resolves once the broker received the
    /// request, with [`RecordMetadata::offset`] `None`.
    None,
}

impl Acks {
    pub(crate) fn to_proto(self) -> strand_proto::v1::Acks {
        match self {
            Acks::All => strand_proto::v1::Acks::All,
            Acks::Leader => strand_proto::v1::Acks::Leader,
            Acks::None => strand_proto::v1::Acks::None,
        }
    }
}

/// A handle to a producer. Clones share the same batches, buffer and
/// background task; the task stops after [`Producer::close`], or once every
/// handle is dropped and what was already sent is settled.
#[derive(Clone)]
pub struct Producer {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &*self.shared;
        f.debug_struct("Producer")
            .field("buffer_bytes", &s.buffer_bytes)
            .field("buffer_bytes_free", &s.buffer.available_permits())
            .field("closed", &s.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

struct Shared {
    md: Arc<Metadata>,
    acc: Arc<Mutex<Accumulator>>,
    /// One permit per byte of `buffer_bytes`.
    buffer: Arc<Semaphore>,
    buffer_bytes: usize,
    /// Wakes the sender task (capacity 1: wake-ups coalesce).
    wake: mpsc::Sender<()>,
    closed: AtomicBool,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl Producer {
    /// A builder for a producer that bootstraps from `bootstrap`,
    /// `"host:port[,host:port...]"`.
    pub fn builder(bootstrap: impl Into<String>) -> ProducerBuilder {
        ProducerBuilder::new(bootstrap.into())
    }

    /// Adds `record` to its partition's batch and returns a future for its
    /// acknowledgement.
    ///
    /// The partition is the record's explicit one, else Kafka's hash of the
    /// key, else the topic's sticky partition. This waits only while
    /// `buffer_bytes` are in use by unacknowledged records, or to load the
    /// metadata of a topic not seen before.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC` / `UNKNOWN_PARTITION` (after one metadata refresh),
    /// [`ClientError::RecordTooLarge`] for a record larger than
    /// `buffer_bytes`, [`ClientError::Closed`] after [`Producer::close`].
    /// Failures of the delivery itself come through the [`DeliveryFuture`].
    pub async fn send(&self, record: ProducerRecord) -> Result<DeliveryFuture> {
        let s = &*self.shared;
        if s.closed.load(Ordering::Acquire) || s.wake.is_closed() {
            // Closed, or the sender task is gone: nothing would send the record.
            return Err(ClientError::Closed);
        }
        let target = self.target(&record).await?;
        let size = record.encoded_size();
        if size > s.buffer_bytes {
            return Err(ClientError::RecordTooLarge {
                size,
                max: s.buffer_bytes,
                limit: "buffer_bytes",
            });
        }
        // `size <= buffer_bytes <= u32::MAX`, checked by the builder.
        let permits = u32::try_from(size).unwrap_or(u32::MAX);
        let permit = s
            .buffer
            .clone()
            .acquire_many_owned(permits)
            .await
            .map_err(|_| ClientError::Closed)?;
        let timestamp_ms = record.timestamp_ms.unwrap_or_else(strand_storage::now_ms);
        let (appended, delivery) = {
            let mut acc = s.acc.lock();
            if acc.closed {
                return Err(ClientError::Closed);
            }
            acc.append(&record, target, timestamp_ms, size, Some(permit), Instant::now)
        };
        if appended.wake {
            // Full means a wake-up is already pending; closed means the task ended.
            let _ = s.wake.try_send(());
        }
        Ok(delivery)
    }

    /// [`Producer::send`], then waits for the acknowledgement. Each call
    /// waits out the linger time; use `send` to pipeline records.
    ///
    /// # Errors
    /// As `send`, plus the delivery's own failure.
    pub async fn send_and_wait(&self, record: ProducerRecord) -> Result<RecordMetadata> {
        self.send(record).await?.await
    }

    /// Seals every open batch and waits until every record whose `send`
    /// returned before this call has been acknowledged or has failed.
    ///
    /// # Errors
    /// [`ClientError::Closed`] if the background task is gone.
    pub async fn flush(&self) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        {
            let mut acc = self.shared.acc.lock();
            if acc.sender_done {
                return Ok(());
            }
            if self.shared.wake.is_closed() {
                // The sender task ended abnormally: nobody would answer.
                return Err(ClientError::Closed);
            }
            acc.flush(tx);
        }
        let _ = self.shared.wake.try_send(());
        rx.await.map_err(|_| ClientError::Closed)
    }

    /// Flushes, then stops the background task. Later sends fail with
    /// [`ClientError::Closed`]; this affects every clone of the handle.
    ///
    /// # Errors
    /// As [`Producer::flush`].
    pub async fn close(&self) -> Result<()> {
        let flushed = self.flush().await;
        self.shared.acc.lock().closed = true;
        self.shared.closed.store(true, Ordering::Release);
        let _ = self.shared.wake.try_send(());
        let task = self.shared.task.lock().take();
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "producer sender task ended abnormally");
        }
        flushed
    }

    /// Where `record` goes, loading the topic's metadata if needed.
    async fn target(&self, record: &ProducerRecord) -> Result<Target> {
        let md = &self.shared.md;
        let topic = &*record.topic;
        let mut n = md.partitions_of(topic).await?;
        if let Some(p) = record.partition
            && p >= n
        {
            // Partitions may have been added since the cache was filled.
            let report = md.refresh(&[topic]).await?;
            if let Some(e) = report.error_for(topic) {
                return Err(e.clone());
            }
            n = md.partition_count(topic).unwrap_or(0);
            if p >= n {
                return Err(ClientError::broker(
                    ErrorCode::UnknownPartition,
                    format!("topic {topic:?} has {n} partitions, not {p}"),
                ));
            }
        }
        if n == 0 {
            return Err(ClientError::broker(
                ErrorCode::UnknownPartition,
                format!("topic {topic:?} has no partitions"),
            ));
        }
        Ok(match (record.partition, record.key.as_deref()) {
            (Some(p), _) => Target::Partition(p),
            (None, Some(key)) => Target::Partition(partition_for_key(key, n)),
            (None, None) => Target::Sticky { num_partitions: n },
        })
    }
}
