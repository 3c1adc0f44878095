//! Retries and dead letters, the pattern RabbitMQ and SQS users bring: a
//! record whose processing keeps failing is retried with exponential
//! backoff and jitter, then set aside in a dead-letter topic
//! (`<topic>.dlq` by default) with headers saying why, and the consumer
//! moves on. `strand dlq replay` sends dead letters back to their topic.
//!
//! Headers added to a dead letter (the record's own headers are kept):
//! `strand.dlq.error`, `strand.dlq.attempts`, `strand.dlq.topic`,
//! `strand.dlq.partition`, `strand.dlq.offset`, `strand.dlq.timestamp`.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use crate::admin::Admin;
use crate::consumer::ConsumerRecord;
use crate::error::{ClientError, Result};
use crate::producer::{Producer, ProducerRecord, RecordMetadata};
use strand_proto::v1::ErrorCode;

pub use strand_proto::headers::{
    DLQ_ATTEMPTS as HEADER_ATTEMPTS, DLQ_ERROR as HEADER_ERROR, DLQ_OFFSET as HEADER_OFFSET,
    DLQ_PARTITION as HEADER_PARTITION, DLQ_TIMESTAMP as HEADER_TIMESTAMP, DLQ_TOPIC as HEADER_TOPIC,
};

/// How often and how patiently a failing record is retried.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Tries in all, the first included. Default 3.
    pub max_attempts: u32,
    /// Wait before the second try. Default 100 ms.
    pub initial_backoff: Duration,
    /// Longest wait between tries. Default 10 s.
    pub max_backoff: Duration,
    /// Growth of the wait per try. Default 2.
    pub multiplier: f64,
    /// Random spread of each wait, as a fraction (0.2 = ±20 %). Default 0.2.
    pub jitter: f64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 3,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(10),
            multiplier: 2.0,
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// The wait after failed try number `attempt` (1-based), jittered.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self.initial_backoff.as_secs_f64() * self.multiplier.max(1.0).powi(attempt.saturating_sub(1) as i32);
        let base = base.min(self.max_backoff.as_secs_f64());
        let spread = self.jitter.clamp(0.0, 1.0);
        let factor = 1.0 + spread * (2.0 * rand::random::<f64>() - 1.0);
        Duration::from_secs_f64((base * factor).max(0.0))
    }
}

/// What became of a record.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler succeeded on this try.
    Processed {
        /// Tries used.
        attempts: u32,
    },
    /// Every try failed; the record is in the dead-letter topic.
    DeadLettered {
        /// Tries used.
        attempts: u32,
        /// Where the dead letter was stored.
        stored: RecordMetadata,
    },
}

/// Runs a handler over records with retries, dead-lettering what keeps
/// failing.
///
/// ```no_run
/// # async fn f(mut consumer: strand_client::Consumer, producer: strand_client::Producer) -> strand_client::Result<()> {
/// use strand_client::{DeadLetterQueue, RetryPolicy};
///
/// let dlq = DeadLetterQueue::new(producer).policy(RetryPolicy { max_attempts: 5, ..Default::default() });
/// loop {
///     for record in consumer.poll().await? {
///         dlq.process(&record, |r| async move {
///             if r.value.is_none() { return Err("empty value"); }
///             Ok(())
///         })
///         .await?;
///     }
///     consumer.commit().await?;
/// }
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct DeadLetterQueue {
    producer: Producer,
    policy: RetryPolicy,
    suffix: String,
    admin: Option<Admin>,
}

impl DeadLetterQueue {
    /// Dead letters go through `producer` (its acks apply).
    pub fn new(producer: Producer) -> Self {
        DeadLetterQueue {
            producer,
            policy: RetryPolicy::default(),
            suffix: ".dlq".into(),
            admin: None,
        }
    }

    /// The retry policy. Default [`RetryPolicy::default`].
    #[must_use]
    pub fn policy(mut self, policy: RetryPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Suffix of dead-letter topics. Default `.dlq`.
    #[must_use]
    pub fn topic_suffix(mut self, suffix: impl Into<String>) -> Self {
        self.suffix = suffix.into();
        self
    }

    /// Creates a missing dead-letter topic with `admin` (with the source
    /// topic's partition count and replication factor). Default: the
    /// topic must exist.
    #[must_use]
    pub fn create_topics_with(mut self, admin: Admin) -> Self {
        self.admin = Some(admin);
        self
    }

    /// The dead-letter topic of `topic`.
    pub fn dlq_topic(&self, topic: &str) -> String {
        format!("{topic}{}", self.suffix)
    }

    /// Runs `handler` on `record` up to `max_attempts` times, waiting the
    /// policy's backoff between tries; if every try fails, stores the record
    /// in the dead-letter topic and returns [`Outcome::DeadLettered`].
    ///
    /// # Errors
    /// Only when the dead letter could not be stored (then the record is
    /// neither processed nor set aside: do not commit past it).
    pub async fn process<F, Fut, E>(&self, record: &ConsumerRecord, mut handler: F) -> Result<Outcome>
    where
        F: FnMut(ConsumerRecord) -> Fut,
        Fut: Future<Output = std::result::Result<(), E>>,
        E: Display,
    {
        let max = self.policy.max_attempts.max(1);
        let mut attempt = 0;
        let last_error = loop {
            attempt += 1;
            match handler(record.clone()).await {
                Ok(()) => return Ok(Outcome::Processed { attempts: attempt }),
                Err(e) if attempt >= max => break e.to_string(),
                Err(e) => {
                    tracing::debug!(
                        topic = %record.topic, partition = record.partition, offset = record.offset,
                        attempt, error = %e, "processing failed; retrying"
                    );
                    tokio::time::sleep(self.policy.backoff(attempt)).await;
                }
            }
        };
        tracing::warn!(
            topic = %record.topic, partition = record.partition, offset = record.offset,
            attempts = attempt, error = %last_error, "dead-lettering a record"
        );
        let stored = self.dead_letter(record, &last_error, attempt).await?;
        Ok(Outcome::DeadLettered {
            attempts: attempt,
            stored,
        })
    }

    /// Stores `record` in its dead-letter topic with the `strand.dlq.*`
    /// headers.
    ///
    /// # Errors
    /// The produce failed (or the topic is missing and cannot be created).
    pub async fn dead_letter(&self, record: &ConsumerRecord, error: &str, attempts: u32) -> Result<RecordMetadata> {
        let topic = self.dlq_topic(&record.topic);
        let build = || {
            copy_to(record, &topic)
                .header(HEADER_ERROR, error.to_string())
                .header(HEADER_ATTEMPTS, attempts.to_string())
                .header(HEADER_TOPIC, record.topic.to_string())
                .header(HEADER_PARTITION, record.partition.to_string())
                .header(HEADER_OFFSET, record.offset.to_string())
                .header(HEADER_TIMESTAMP, record.timestamp_ms.to_string())
        };
        match self.producer.send_and_wait(build()).await {
            Err(e) if e.code() == Some(ErrorCode::UnknownTopic) && self.admin.is_some() => {
                self.create_dlq_topic(&record.topic, &topic).await?;
                self.producer.send_and_wait(build()).await
            }
            other => other,
        }
    }

    async fn create_dlq_topic(&self, source: &str, topic: &str) -> Result<()> {
        let Some(admin) = &self.admin else {
            return Ok(());
        };
        let d = admin.describe_topic(source).await?;
        let partitions = (d.partitions.len() as u32).max(1);
        match admin
            .create_topic(topic, partitions, d.replication_factor.max(1), BTreeMap::new())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(ErrorCode::TopicAlreadyExists) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

/// `record` as a record for `topic`: its key, value, timestamp and own
/// headers (not the `strand.dlq.*` ones).
fn copy_to(record: &ConsumerRecord, topic: &str) -> ProducerRecord {
    let mut r = ProducerRecord::new(topic, record.value.clone().unwrap_or_default());
    r.value = record.value.clone();
    r.key = record.key.clone();
    r.timestamp_ms = Some(record.timestamp_ms);
    r.headers = record
        .headers
        .iter()
        .filter(|(k, _)| !k.starts_with("strand.dlq."))
        .cloned()
        .collect();
    r
}

/// A dead letter as it was before it failed: for its original topic, with
/// its key, value, timestamp and own headers.
///
/// # Errors
/// [`ClientError::InvalidArgument`] if `record` has no
/// `strand.dlq.topic` header (it is not a dead letter).
pub fn restore(record: &ConsumerRecord) -> Result<ProducerRecord> {
    let topic = original_topic(record).ok_or_else(|| not_a_dead_letter(record))?;
    Ok(copy_to(record, &topic))
}

/// The original topic of a dead letter, from its headers.
pub fn original_topic(record: &ConsumerRecord) -> Option<String> {
    record
        .headers
        .iter()
        .find(|(k, _)| k == HEADER_TOPIC)
        .and_then(|(_, v)| v.as_ref())
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(str::to_string)
}

fn not_a_dead_letter(record: &ConsumerRecord) -> ClientError {
    ClientError::invalid(format!(
        "{}/{}@{} has no {HEADER_TOPIC} header: not a dead letter",
        record.topic, record.partition, record.offset
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_within_jitter_and_stops_at_max() {
        let p = RetryPolicy::default();
        for (attempt, base_ms) in [(1u32, 100.0), (2, 200.0), (3, 400.0), (10, 10_000.0), (40, 10_000.0)] {
            for _ in 0..50 {
                let d = p.backoff(attempt).as_secs_f64() * 1000.0;
                assert!(d >= base_ms * 0.79 && d <= base_ms * 1.21, "attempt {attempt}: {d} ms");
            }
        }
        let none = RetryPolicy { jitter: 0.0, ..p };
        assert_eq!(none.backoff(2), Duration::from_millis(200));
    }
}
