//! Producer settings, with Kafka-like defaults.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use parking_lot::Mutex;
use std::time::Duration;

use strand_storage::Compression;
use tokio::sync::{Semaphore, mpsc};

use super::accumulator::{Accumulator, AccumulatorConfig};
use super::sender::{Sender, SenderConfig};
use super::{Acks, Producer, Shared};
use crate::connection::ConnectionConfig;
use crate::error::{ClientError, Result};
use crate::metadata::Metadata;
use crate::retry::Backoff;

/// Builds a [`Producer`]. Every setting has a default; see each method.
///
/// ```no_run
/// # async fn f() -> strand_client::Result<()> {
/// use std::time::Duration;
/// use strand_client::{Acks, Compression, Producer};
///
/// let producer = Producer::builder("127.0.0.1:9292")
///     .linger(Duration::from_millis(10))
///     .compression(Compression::Snappy)
///     .acks(Acks::All)
///     .build()
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until .build().await"]
pub struct ProducerBuilder {
    bootstrap: String,
    linger: Duration,
    batch_bytes: usize,
    buffer_bytes: usize,
    compression: Compression,
    acks: Acks,
    retries: u32,
    delivery_timeout: Duration,
    backoff: Backoff,
    connection: ConnectionConfig,
    max_request_bytes: usize,
    metadata_max_age: Duration,
    idempotence: Option<bool>,
    producer_id_key: Option<String>,
    max_in_flight: usize,
}

impl ProducerBuilder {
    pub(crate) fn new(bootstrap: String) -> Self {
        ProducerBuilder {
            bootstrap,
            linger: Duration::from_millis(5),
            batch_bytes: 256 * 1024,
            buffer_bytes: 32 * 1024 * 1024,
            compression: Compression::None,
            acks: Acks::All,
            retries: u32::MAX,
            delivery_timeout: Duration::from_secs(120),
            backoff: Backoff::default(),
            connection: ConnectionConfig::default(),
            max_request_bytes: 4 * 1024 * 1024 - 64 * 1024,
            metadata_max_age: Duration::from_secs(300),
            idempotence: None,
            producer_id_key: None,
            max_in_flight: 5,
        }
    }

    /// Idempotent delivery: every batch is numbered, so a retry (after a
    /// lost answer, a leader change or a broker restart) is stored once and
    /// answered with the original offsets, and a partition's batches land in
    /// order with several in flight. Default on, unless [`Acks::None`] was
    /// chosen (it gets no answer to check); turning it on with
    /// `Acks::None` is refused.
    pub fn enable_idempotence(mut self, on: bool) -> Self {
        self.idempotence = Some(on);
        self
    }

    /// A stable key for this producer (Kafka's `transactional.id`): a
    /// producer started again with the same key gets the same id with a
    /// newer epoch, and the earlier incarnation's batches are refused
    /// (`PRODUCER_FENCED`) from then on. Default none: a new id per producer.
    /// Implies idempotence.
    pub fn producer_id_key(mut self, key: impl Into<String>) -> Self {
        self.producer_id_key = Some(key.into());
        self
    }

    /// Batches of one partition in flight at once with idempotence (1 to 5,
    /// the broker remembers 5 per producer). Default 5. Without idempotence
    /// a partition always has one, so that retries cannot reorder it.
    pub fn max_in_flight_per_partition(mut self, n: usize) -> Self {
        self.max_in_flight = n;
        self
    }

    /// Whether this builder makes an idempotent producer.
    fn idempotent(&self) -> bool {
        self.idempotence
            .unwrap_or(self.producer_id_key.is_some() || self.acks != Acks::None)
    }

    /// How long a batch waits for more records before it is sent, counted
    /// from its first record. Default 5 ms.
    pub fn linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Target size of a batch (uncompressed): a batch is sealed before a
    /// record that would take it past this. A larger record goes alone in
    /// its batch. Default 256 KiB.
    pub fn batch_bytes(mut self, bytes: usize) -> Self {
        self.batch_bytes = bytes;
        self
    }

    /// Bytes of records that may wait for acknowledgement; `send` waits when
    /// they are in use. Default 32 MiB; at most `u32::MAX`.
    pub fn buffer_bytes(mut self, bytes: usize) -> Self {
        self.buffer_bytes = bytes;
        self
    }

    /// Codec for the records section of each batch. Default none.
    pub fn compression(mut self, compression: Compression) -> Self {
        self.compression = compression;
        self
    }

    /// Acknowledgement level. Default [`Acks::All`].
    pub fn acks(mut self, acks: Acks) -> Self {
        self.acks = acks;
        self
    }

    /// How many times a batch is re-sent after a retriable failure. Default
    /// unlimited: `delivery_timeout` bounds retries.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Upper bound on the time from a record's `send` to its success or
    /// failure, retries included. Default 120 s.
    pub fn delivery_timeout(mut self, timeout: Duration) -> Self {
        self.delivery_timeout = timeout;
        self
    }

    /// Delay before the first retry; it doubles per attempt up to
    /// [`ProducerBuilder::retry_backoff_max`], with ±20 % jitter. Default 100 ms.
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.backoff.initial = backoff;
        self
    }

    /// Largest retry delay. Default 1 s.
    pub fn retry_backoff_max(mut self, backoff: Duration) -> Self {
        self.backoff.max = backoff;
        self
    }

    /// TLS (and a client certificate) for every connection. Default:
    /// plaintext.
    pub fn security(mut self, security: crate::Security) -> Self {
        self.connection.security = security;
        self
    }

    /// How long to wait for the answer to one request (the broker gets the
    /// same limit for its acknowledgement). Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.connection.request_timeout = timeout;
        self
    }

    /// How long to wait for a connection to a broker. Default 10 s.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connection.connect_timeout = timeout;
        self
    }

    /// Largest `ProduceRequest`: batches for one leader are split across
    /// requests at this size (a single larger batch is sent alone). Default
    /// 4 MiB - 64 KiB, under gRPC's usual 4 MiB message limit.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = bytes;
        self
    }

    /// Metadata is refreshed at least this often, to notice new partitions
    /// and moved leaders. Default 5 minutes.
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.metadata_max_age = age;
        self
    }

    /// Checks the settings, loads metadata from the first bootstrap broker
    /// that answers and starts the background sender task (on the current
    /// tokio runtime).
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for an unusable setting;
    /// [`ClientError::Connect`] if no bootstrap broker answers.
    pub async fn build(self) -> Result<Producer> {
        self.validate()?;
        let md = Metadata::connect(&self.bootstrap, self.connection.clone()).await?;
        let idempotent = if self.idempotent() {
            let key = self.producer_id_key.clone();
            // The controller may be electing a leader: retry for as long as
            // a record would be retried.
            let deadline = std::time::Instant::now() + self.delivery_timeout;
            let mut attempt = 0;
            let identity = loop {
                attempt += 1;
                match super::idempotence::init_producer_id(&md, key.as_deref(), None, self.connection.request_timeout)
                    .await
                {
                    Ok(identity) => break identity,
                    Err(e) if e.is_retriable() && std::time::Instant::now() < deadline => {
                        tracing::debug!(error = %e, "no producer id yet; retrying");
                        tokio::time::sleep(self.backoff.delay(attempt)).await;
                    }
                    Err(e) => return Err(e),
                }
            };
            tracing::debug!(producer_id = identity.0, epoch = identity.1, "idempotent producer");
            Some(super::sender::IdempotentState { key, identity })
        } else {
            None
        };
        let max_in_flight = if idempotent.is_some() { self.max_in_flight } else { 1 };
        let acc = Arc::new(Mutex::new(Accumulator::new(AccumulatorConfig {
            batch_bytes: self.batch_bytes,
            linger: self.linger,
            compression: self.compression,
        })));
        let (wake_tx, wake_rx) = mpsc::channel(1);
        let sender = Sender::new(
            SenderConfig {
                acks: self.acks,
                request_timeout: self.connection.request_timeout,
                delivery_timeout: self.delivery_timeout,
                retries: self.retries,
                backoff: self.backoff,
                max_request_bytes: self.max_request_bytes,
                metadata_max_age: self.metadata_max_age,
                max_in_flight,
            },
            md.clone(),
            acc.clone(),
            wake_rx,
            idempotent,
        );
        let task = tokio::spawn(sender.run());
        Ok(Producer {
            shared: Arc::new(Shared {
                md,
                acc,
                buffer: Arc::new(Semaphore::new(self.buffer_bytes)),
                buffer_bytes: self.buffer_bytes,
                wake: wake_tx,
                closed: AtomicBool::new(false),
                task: Mutex::new(Some(task)),
            }),
        })
    }

    fn validate(&self) -> Result<()> {
        let positive = [
            ("batch_bytes", self.batch_bytes),
            ("buffer_bytes", self.buffer_bytes),
            ("max_request_bytes", self.max_request_bytes),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(ClientError::invalid(format!("{name} must be at least 1")));
            }
        }
        if self.buffer_bytes > u32::MAX as usize {
            return Err(ClientError::invalid(format!(
                "buffer_bytes {} exceeds the maximum of {} bytes",
                self.buffer_bytes,
                u32::MAX
            )));
        }
        let durations = [
            ("delivery_timeout", self.delivery_timeout),
            ("request_timeout", self.connection.request_timeout),
            ("connect_timeout", self.connection.connect_timeout),
            ("metadata_max_age", self.metadata_max_age),
        ];
        for (name, d) in durations {
            if d.is_zero() {
                return Err(ClientError::invalid(format!("{name} must be positive")));
            }
        }
        if self.acks == Acks::None && (self.idempotence == Some(true) || self.producer_id_key.is_some()) {
            return Err(ClientError::invalid(
                "enable_idempotence needs acks all or leader: acks none gets no answer to check",
            ));
        }
        if !(1..=5).contains(&self.max_in_flight) {
            return Err(ClientError::invalid(format!(
                "max_in_flight_per_partition {} is outside 1..=5",
                self.max_in_flight
            )));
        }
        if self
            .producer_id_key
            .as_ref()
            .is_some_and(|k| k.is_empty() || k.len() > 256)
        {
            return Err(ClientError::invalid("producer_id_key must be 1 to 256 bytes"));
        }
        if self.backoff.initial > self.backoff.max {
            return Err(ClientError::invalid(format!(
                "retry_backoff {:?} exceeds retry_backoff_max {:?}",
                self.backoff.initial, self.backoff.max
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusable_settings_are_refused_before_connecting() {
        let cases = [
            ("batch_bytes", ProducerBuilder::new("x:1".into()).batch_bytes(0)),
            ("buffer_bytes", ProducerBuilder::new("x:1".into()).buffer_bytes(0)),
            (
                "delivery_timeout",
                ProducerBuilder::new("x:1".into()).delivery_timeout(Duration::ZERO),
            ),
            (
                "retry_backoff",
                ProducerBuilder::new("x:1".into()).retry_backoff(Duration::from_secs(5)),
            ),
        ];
        for (name, b) in cases {
            let err = b.validate().expect_err(name);
            assert_eq!(err.reason(), "INVALID_ARGUMENT", "{name}");
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        assert!(
            ProducerBuilder::new("x:1".into()).validate().is_ok(),
            "defaults are valid"
        );
    }
}
