//! [`ShareConsumer`]: a member of a share group, the queue on the log
//! (Kafka's KIP-932 share consumer; what SQS and RabbitMQ users know as a
//! work queue).
//!
//! Any number of members read the same partitions. Each record is handed
//! to one member, locked to it for the lock duration, and acknowledged one
//! by one: [`AcknowledgeType::Accept`] (done), `Release` (deliver again now,
//! to anyone), `Reject` (never again; copied to `<topic>.dlq`) or `Renew`
//! (keep the lock longer). A record not acknowledged before its lock runs
//! out, or held by a member that leaves or goes silent, is delivered again
//! with its delivery count increased; after the broker's delivery limit
//! (default 5) it goes to the dead-letter topic. Records produced with
//! [`crate::ProducerRecord::deliver_at`] are not handed out before their
//! time.
//!
//! Acknowledgements are queued by [`ShareConsumer::acknowledge`] and sent
//! with the next [`ShareConsumer::poll`] or by [`ShareConsumer::commit`];
//! [`ShareConsumer::close`] sends them and releases what the member still
//! holds. Delivery is at-least-once: a record whose acknowledgement was
//! confirmed is never delivered again; one whose processing outlived its
//! lock may be processed twice.

mod admin;
mod builder;

use std::sync::Arc;
use std::time::Duration;

use crate::connection::Link as Channel;
use strand_proto::v1 as pb;
use strand_proto::v1::share_groups_client::ShareGroupsClient;

pub use builder::ShareConsumerBuilder;

use crate::consumer::{ConsumerRecord, OffsetReset};
use crate::coordinator::Coordinator;
use crate::error::{ClientError, Result};

/// What a member says of a record it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AcknowledgeType {
    /// Processed: never deliver again.
    Accept,
    /// Not processed: deliver again now, to any member.
    Release,
    /// Cannot be processed: never deliver again; copy to `<topic>.dlq`.
    Reject,
    /// Still working on it: extend the lock by a lock duration.
    Renew,
}

impl AcknowledgeType {
    fn to_proto(self) -> pb::AcknowledgeType {
        match self {
            AcknowledgeType::Accept => pb::AcknowledgeType::AcknowledgeAccept,
            AcknowledgeType::Release => pb::AcknowledgeType::AcknowledgeRelease,
            AcknowledgeType::Reject => pb::AcknowledgeType::AcknowledgeReject,
            AcknowledgeType::Renew => pb::AcknowledgeType::AcknowledgeRenew,
        }
    }
}

impl std::str::FromStr for AcknowledgeType {
    type Err = ClientError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "accept" => Ok(AcknowledgeType::Accept),
            "release" => Ok(AcknowledgeType::Release),
            "reject" => Ok(AcknowledgeType::Reject),
            "renew" => Ok(AcknowledgeType::Renew),
            other => Err(ClientError::invalid(format!(
                "unknown acknowledgement {other:?}: accept, release, reject or renew"
            ))),
        }
    }
}

/// A record handed to this member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord {
    /// The record.
    pub record: ConsumerRecord,
    /// How often it was delivered, this time included (1 the first time).
    pub delivery_count: u32,
    /// This member holds it until then (ms since the Unix epoch).
    pub lock_deadline_ms: i64,
}

/// An acknowledgement the coordinator refused.
#[derive(Debug)]
pub struct AcknowledgementFailure {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// First offset of the range.
    pub first_offset: u64,
    /// Last offset of the range.
    pub last_offset: u64,
    /// What was sent.
    pub kind: AcknowledgeType,
    /// Why (`INVALID_RECORD_STATE`: the member no longer held the record —
    /// its lock ran out and it may have gone to another member — and it is
    /// not done).
    pub error: ClientError,
}

/// Settings a [`ShareConsumer`] was built with.
#[derive(Debug, Clone)]
pub(crate) struct ShareSettings {
    pub max_records: u32,
    pub max_wait: Duration,
    pub lock_duration: Option<Duration>,
    pub session_timeout: Option<Duration>,
    pub offset_reset: OffsetReset,
    pub request_timeout: Duration,
}

/// A member of a share group. See the [module docs](self).
#[derive(Debug)]
pub struct ShareConsumer {
    coordinator: Arc<Coordinator>,
    member_id: String,
    topics: Vec<String>,
    settings: ShareSettings,
    pending: Vec<(pb::ShareAcknowledgement, AcknowledgeType)>,
    failures: Vec<AcknowledgementFailure>,
}

fn ms(d: Option<Duration>) -> u32 {
    d.map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX))
}

fn to_record(a: pb::AcquiredRecord) -> ShareRecord {
    let r = a.record.unwrap_or_default();
    ShareRecord {
        record: ConsumerRecord {
            topic: Arc::from(a.topic.as_str()),
            partition: a.partition,
            offset: r.offset,
            timestamp_ms: r.timestamp_ms,
            key: r.key,
            value: r.value,
            headers: r.headers.into_iter().map(|h| (h.key, h.value)).collect(),
        },
        delivery_count: a.delivery_count,
        lock_deadline_ms: a.lock_deadline_ms,
    }
}

impl ShareConsumer {
    /// A builder for a member of `group`, reaching the cluster through
    /// `bootstrap` (`"host:port[,host:port...]"`).
    pub fn builder(bootstrap: impl Into<String>, group: impl Into<String>) -> ShareConsumerBuilder {
        ShareConsumerBuilder::new(bootstrap.into(), group.into())
    }

    /// This member's id (random, for its life).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The group.
    pub fn group(&self) -> &str {
        self.coordinator.group()
    }

    /// Reads `topics` from the next poll on (replacing the subscription).
    pub fn subscribe<S: AsRef<str>>(&mut self, topics: &[S]) {
        self.topics = topics.iter().map(|t| t.as_ref().to_string()).collect();
    }

    /// Queues an acknowledgement of `record`, sent with the next
    /// [`ShareConsumer::poll`] or [`ShareConsumer::commit`].
    pub fn acknowledge(&mut self, record: &ShareRecord, kind: AcknowledgeType) {
        let r = &record.record;
        // Consecutive offsets of one partition with one outcome travel as a
        // range.
        if let Some((last, k)) = self.pending.last_mut()
            && *k == kind
            && last.topic == *r.topic
            && last.partition == r.partition
            && last.last_offset + 1 == r.offset
        {
            last.last_offset = r.offset;
            return;
        }
        self.pending.push((
            pb::ShareAcknowledgement {
                topic: r.topic.to_string(),
                partition: r.partition,
                first_offset: r.offset,
                last_offset: r.offset,
                r#type: kind.to_proto() as i32,
            },
            kind,
        ));
    }

    /// Acknowledgements queued and not sent yet.
    pub fn pending_acknowledgements(&self) -> usize {
        self.pending.len()
    }

    /// The acknowledgements that polls sent and the coordinator refused,
    /// since the last call.
    pub fn take_acknowledgement_failures(&mut self) -> Vec<AcknowledgementFailure> {
        std::mem::take(&mut self.failures)
    }

    fn note_results(
        &mut self,
        sent: &[(pb::ShareAcknowledgement, AcknowledgeType)],
        results: Vec<pb::ShareAcknowledgementResult>,
    ) -> Vec<AcknowledgementFailure> {
        let mut failed = Vec::new();
        for ((a, kind), r) in sent.iter().zip(results) {
            let Some(e) = r.error.as_ref() else { continue };
            let Some(error) = ClientError::from_partition_error(e, &a.topic, a.partition, a.first_offset) else {
                continue;
            };
            tracing::warn!(
                topic = %a.topic, partition = a.partition, first = a.first_offset, last = a.last_offset,
                error = %error, "acknowledgement refused"
            );
            failed.push(AcknowledgementFailure {
                topic: a.topic.clone(),
                partition: a.partition,
                first_offset: a.first_offset,
                last_offset: a.last_offset,
                kind: *kind,
                error,
            });
        }
        failed
    }

    /// Sends the queued acknowledgements, then acquires up to the
    /// configured number of records, waiting up to the configured wait for
    /// any. Refused acknowledgements are kept for
    /// [`ShareConsumer::take_acknowledgement_failures`].
    ///
    /// # Errors
    /// No subscription; the coordinator could not be reached within the
    /// request timeout (the queued acknowledgements are kept and sent
    /// again).
    pub async fn poll(&mut self) -> Result<Vec<ShareRecord>> {
        if self.topics.is_empty() {
            return Err(ClientError::invalid("subscribe to a topic before polling"));
        }
        let sent = std::mem::take(&mut self.pending);
        let s = &self.settings;
        let req = pb::ShareFetchRequest {
            group: self.coordinator.group().to_string(),
            member_id: self.member_id.clone(),
            topics: self.topics.clone(),
            max_records: s.max_records,
            max_wait_ms: ms(Some(s.max_wait)),
            lock_duration_ms: ms(s.lock_duration),
            session_timeout_ms: ms(s.session_timeout),
            offset_reset: match s.offset_reset {
                OffsetReset::Earliest => pb::ShareOffsetReset::Earliest,
                _ => pb::ShareOffsetReset::Latest,
            } as i32,
            acknowledgements: sent.iter().map(|(a, _)| a.clone()).collect(),
        };
        let limit = s.max_wait + s.request_timeout;
        let answer = self
            .coordinator
            .call_on(limit, |mut c: ShareGroupsClient<Channel>| {
                let req = req.clone();
                async move { Ok(c.share_fetch(req).await?.into_inner()) }
            })
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                // Not sent, or sent without an answer: sent again (an
                // accept or reject that already took effect is answered as
                // done; a release or renew that did is refused as
                // INVALID_RECORD_STATE).
                let mut kept = sent;
                kept.append(&mut self.pending);
                self.pending = kept;
                return Err(e);
            }
        };
        let failed = self.note_results(&sent, answer.acknowledgement_results);
        self.failures.extend(failed);
        Ok(answer.records.into_iter().map(to_record).collect())
    }

    /// Sends the queued acknowledgements now; returns those refused.
    ///
    /// # Errors
    /// The coordinator could not be reached within the request timeout (the
    /// acknowledgements are kept and sent again).
    pub async fn commit(&mut self) -> Result<Vec<AcknowledgementFailure>> {
        if self.pending.is_empty() {
            return Ok(Vec::new());
        }
        let sent = std::mem::take(&mut self.pending);
        let req = pb::ShareAcknowledgeRequest {
            group: self.coordinator.group().to_string(),
            member_id: self.member_id.clone(),
            acknowledgements: sent.iter().map(|(a, _)| a.clone()).collect(),
        };
        let answer = self
            .coordinator
            .call_on(self.settings.request_timeout, |mut c: ShareGroupsClient<Channel>| {
                let req = req.clone();
                async move { Ok(c.share_acknowledge(req).await?.into_inner()) }
            })
            .await;
        match answer {
            Ok(a) => Ok(self.note_results(&sent, a.results)),
            Err(e) => {
                let mut kept = sent;
                kept.append(&mut self.pending);
                self.pending = kept;
                Err(e)
            }
        }
    }

    /// Extends the lock on `record` now; returns the new deadline (ms since
    /// the Unix epoch).
    ///
    /// # Errors
    /// `INVALID_RECORD_STATE` if this member no longer holds it; the
    /// coordinator could not be reached.
    pub async fn renew(&mut self, record: &ShareRecord) -> Result<i64> {
        let r = &record.record;
        let req = pb::ShareAcknowledgeRequest {
            group: self.coordinator.group().to_string(),
            member_id: self.member_id.clone(),
            acknowledgements: vec![pb::ShareAcknowledgement {
                topic: r.topic.to_string(),
                partition: r.partition,
                first_offset: r.offset,
                last_offset: r.offset,
                r#type: pb::AcknowledgeType::AcknowledgeRenew as i32,
            }],
        };
        let answer = self
            .coordinator
            .call_on(self.settings.request_timeout, |mut c: ShareGroupsClient<Channel>| {
                let req = req.clone();
                async move { Ok(c.share_acknowledge(req).await?.into_inner()) }
            })
            .await?;
        let Some(result) = answer.results.into_iter().next() else {
            return Err(ClientError::invalid("the coordinator answered no result"));
        };
        if let Some(e) = result.error.as_ref()
            && let Some(err) = ClientError::from_partition_error(e, &r.topic, r.partition, r.offset)
        {
            return Err(err);
        }
        Ok(result.lock_deadline_ms)
    }

    /// Sends the queued acknowledgements and leaves the group, releasing
    /// every record this member still holds (delivered again to others at
    /// once). Returns the refused acknowledgements.
    ///
    /// # Errors
    /// The coordinator could not be reached.
    pub async fn close(mut self) -> Result<Vec<AcknowledgementFailure>> {
        let failed = self.commit().await?;
        let req = pb::ShareLeaveRequest {
            group: self.coordinator.group().to_string(),
            member_id: self.member_id.clone(),
        };
        self.coordinator
            .call_on(self.settings.request_timeout, |mut c: ShareGroupsClient<Channel>| {
                let req = req.clone();
                async move { Ok(c.share_leave(req).await?.into_inner()) }
            })
            .await?;
        Ok(failed)
    }
}
