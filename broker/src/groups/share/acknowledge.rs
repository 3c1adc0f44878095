//! Acknowledgements, leaving, and the upkeep that releases the records of
//! silent members and archives records out of deliveries (copying them to
//! the dead-letter topic first, so a failure leaves them to be tried
//! again, never lost).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use strand_proto::headers;
use strand_proto::v1 as pb;

use super::acquire::SharedPartition;
use super::state::{AckEntry, AckKind, Outcome, ShareOp, ranges};
use super::{AckResult, MAX_ACK_RANGE, ShareAck, now_ms};
use crate::error::{BrokerError, Result};
use crate::groups::GroupCoordinator;
use crate::groups::shard::Shard;
use crate::topic::TopicMeta;

/// Whether a failed dead-letter copy may succeed if tried again.
fn retriable(e: &BrokerError) -> bool {
    matches!(
        e.code(),
        pb::ErrorCode::NotLeader
            | pb::ErrorCode::NotCoordinator
            | pb::ErrorCode::RequestTimedOut
            | pb::ErrorCode::ShuttingDown
            | pb::ErrorCode::StorageFailed
            | pb::ErrorCode::UnknownTopic
    )
}

/// How long a dead letter waits for a new dead-letter topic's leader.
const DLQ_WAIT: Duration = Duration::from_secs(5);

impl GroupCoordinator {
    /// Acknowledges records `member` holds; one result per acknowledgement.
    ///
    /// # Errors
    /// `NOT_COORDINATOR`, `REQUEST_TIMED_OUT`.
    pub async fn share_acknowledge(&self, group: &str, member: &str, acks: &[ShareAck]) -> Result<Vec<AckResult>> {
        let shard = self.shard(group).await?;
        let lock = {
            let mut shares = shard.shares();
            let m = shares.get_mut(group).and_then(|g| g.members.get_mut(member)).map(|m| {
                m.last_seen = Instant::now();
                m.lock
            });
            m.unwrap_or(Duration::from_millis(self.config.share_record_lock_duration_ms))
        };
        self.share_acknowledge_in(&shard, group, member, acks, lock).await
    }

    /// [`GroupCoordinator::share_acknowledge`] on a loaded shard.
    pub(crate) async fn share_acknowledge_in(
        &self,
        shard: &Arc<Shard>,
        group: &str,
        member: &str,
        acks: &[ShareAck],
        lock: Duration,
    ) -> Result<Vec<AckResult>> {
        let _write = shard.write.lock().await;
        let now = now_ms();
        let renewed = now + lock.as_millis() as i64;
        let ids: BTreeMap<String, crate::topic::TopicUuid> = self.node.with_metadata(|m| {
            acks.iter()
                .filter_map(|a| m.topics.get(&a.topic).map(|t| (a.topic.clone(), t.uuid())))
                .collect()
        });
        let mut results: Vec<AckResult> = Vec::with_capacity(acks.len());
        let mut changes: Vec<(SharedPartition, ShareOp)> = Vec::new();
        for a in acks {
            let refused = || BrokerError::InvalidRecordState {
                member: member.to_string(),
                topic: a.topic.clone(),
                partition: a.partition,
                first: a.first,
                last: a.last,
            };
            if a.last < a.first || a.last - a.first >= MAX_ACK_RANGE {
                results.push(Err(BrokerError::InvalidRequest {
                    reason: format!("an acknowledgement covers 1..={MAX_ACK_RANGE} offsets (first <= last)"),
                }));
                continue;
            }
            let Some(id) = ids.get(&a.topic).copied() else {
                results.push(Err(refused()));
                continue;
            };
            // The records of the range this member holds; `None` when one
            // is neither held nor (for an accept or reject) already done.
            let held: Option<Vec<u64>> = {
                let shares = shard.shares();
                let state = shares
                    .get(group)
                    .and_then(|g| g.partitions.get(&(a.topic.clone(), a.partition)))
                    .filter(|s| s.topic_id == id)
                    .map(|s| &s.state);
                state.and_then(|s| {
                    let mut held = Vec::new();
                    for o in a.first..=a.last {
                        if s.records.get(&o).is_some_and(|r| r.held_by(member, now)) {
                            held.push(o);
                        } else if !(matches!(a.kind, AckKind::Accept | AckKind::Reject) && s.is_done(o)) {
                            return None;
                        }
                    }
                    Some(held)
                })
            };
            let Some(held) = held else {
                results.push(Err(refused()));
                continue;
            };
            let outcome = match a.kind {
                AckKind::Accept => Outcome::Accepted,
                AckKind::Release => Outcome::Released,
                AckKind::Renew => Outcome::Renewed { deadline_ms: renewed },
                AckKind::Reject => {
                    if !held.is_empty() {
                        let copied = self
                            .dead_letter(
                                shard,
                                group,
                                (&a.topic, id, a.partition),
                                &held,
                                &format!("rejected by share-group member {member}"),
                            )
                            .await;
                        match copied {
                            Ok(handled) if handled == held => {}
                            Ok(_) => {
                                // Not all readable now: nothing changes; the
                                // member may reject again.
                                results.push(Err(BrokerError::NotLeader {
                                    topic: a.topic.clone(),
                                    partition: a.partition,
                                    leader_addr: None,
                                }));
                                continue;
                            }
                            Err(e) => {
                                results.push(Err(e));
                                continue;
                            }
                        }
                    }
                    Outcome::Archived
                }
            };
            results.push(Ok(matches!(a.kind, AckKind::Renew).then_some(renewed)));
            if held.is_empty() {
                // Already done (a resend of an acknowledgement whose answer
                // was lost): nothing to change.
                continue;
            }
            changes.push((
                (a.topic.clone(), id, a.partition),
                ShareOp::Ack {
                    member: member.to_string(),
                    entries: ranges(&held)
                        .into_iter()
                        .map(|(first, last)| AckEntry { first, last, outcome })
                        .collect(),
                },
            ));
        }
        if !changes.is_empty() {
            self.store_share_ops(shard, group, changes).await?;
        }
        Ok(results)
    }

    /// `member` leaves: every record it holds is released. Returns how many.
    ///
    /// # Errors
    /// `NOT_COORDINATOR`, `REQUEST_TIMED_OUT`.
    pub async fn share_leave(&self, group: &str, member: &str) -> Result<u64> {
        let shard = self.shard(group).await?;
        let _write = shard.write.lock().await;
        let released = self.release_held(&shard, group, member).await?;
        if let Some(g) = shard.shares().get_mut(group) {
            g.members.remove(member);
        }
        tracing::info!(group, member, released, "share-group member left");
        Ok(released)
    }

    /// Stores the release of everything `member` holds (write lock held).
    async fn release_held(&self, shard: &Shard, group: &str, member: &str) -> Result<u64> {
        let now = now_ms();
        let held: Vec<(SharedPartition, Vec<u64>)> = shard
            .shares()
            .get(group)
            .map(|g| {
                g.partitions
                    .iter()
                    .map(|((t, p), s)| ((t.clone(), s.topic_id, *p), s.state.held_by(member, now)))
                    .filter(|(_, o)| !o.is_empty())
                    .collect()
            })
            .unwrap_or_default();
        let n = held.iter().map(|(_, o)| o.len() as u64).sum();
        let changes: Vec<(SharedPartition, ShareOp)> = held
            .into_iter()
            .map(|(tp, offsets)| {
                let entries = ranges(&offsets)
                    .into_iter()
                    .map(|(first, last)| AckEntry {
                        first,
                        last,
                        outcome: Outcome::Released,
                    })
                    .collect();
                (
                    tp,
                    ShareOp::Ack {
                        member: member.to_string(),
                        entries,
                    },
                )
            })
            .collect();
        if !changes.is_empty() {
            self.store_share_ops(shard, group, changes).await?;
        }
        Ok(n)
    }

    /// Upkeep of every share group coordinated here: members silent for
    /// their session timeout leave (their records are released), and
    /// records out of deliveries are archived to the dead-letter topic.
    pub async fn share_upkeep(&self) {
        for shard in self.current_shards() {
            if let Err(e) = self.share_upkeep_of(&shard).await {
                tracing::debug!(error = %e, "share-group upkeep failed; retrying");
            }
        }
    }

    async fn share_upkeep_of(&self, shard: &Arc<Shard>) -> Result<()> {
        if shard.shares().is_empty() {
            return Ok(());
        }
        let _write = shard.write.lock().await;
        let now = Instant::now();
        let silent: Vec<(String, String)> = shard
            .shares()
            .iter()
            .flat_map(|(g, sg)| {
                sg.members
                    .iter()
                    .filter(|(_, m)| now.duration_since(m.last_seen) > m.session_timeout)
                    .map(|(id, _)| (g.clone(), id.clone()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (group, member) in silent {
            let released = self.release_held(shard, &group, &member).await?;
            if let Some(g) = shard.shares().get_mut(&group) {
                g.members.remove(&member);
            }
            tracing::info!(group, member, released, "share-group member session expired");
        }
        let limit = self.config.share_delivery_count_limit;
        let at = now_ms();
        let exhausted: Vec<(String, SharedPartition, Vec<u64>)> = shard
            .shares()
            .iter()
            .flat_map(|(g, sg)| {
                sg.partitions
                    .iter()
                    .map(|((t, p), s)| (g.clone(), (t.clone(), s.topic_id, *p), s.state.exhausted(at, limit)))
                    .filter(|(_, _, o)| !o.is_empty())
                    .collect::<Vec<_>>()
            })
            .collect();
        for (group, (topic, id, p), offsets) in exhausted {
            let copied = self
                .dead_letter(
                    shard,
                    &group,
                    (&topic, id, p),
                    &offsets,
                    &format!("delivered {limit} times without being accepted (share.delivery.count.limit)"),
                )
                .await;
            let offsets = match copied {
                Ok(handled) => handled,
                // The dead-letter topic cannot take them (its name would be
                // too long, the records are larger than it allows): keeping
                // them would stall the group, so they are archived
                // without a copy, loudly.
                Err(e) if !retriable(&e) => {
                    tracing::error!(
                        group, topic, partition = p, records = offsets.len(), error = %e,
                        "records out of deliveries archived WITHOUT a dead-letter copy"
                    );
                    offsets
                }
                Err(e) => return Err(e),
            };
            if offsets.is_empty() {
                continue;
            }
            let entries = ranges(&offsets)
                .into_iter()
                .map(|(first, last)| AckEntry {
                    first,
                    last,
                    outcome: Outcome::Archived,
                })
                .collect();
            tracing::warn!(
                group,
                topic,
                partition = p,
                records = offsets.len(),
                "records archived to the dead-letter topic: out of deliveries"
            );
            self.store_share_ops(
                shard,
                &group,
                vec![(
                    (topic, id, p),
                    ShareOp::Ack {
                        member: String::new(),
                        entries,
                    },
                )],
            )
            .await?;
        }
        Ok(())
    }

    /// Copies the records at `offsets` of a partition to `<topic>.dlq` (the
    /// same partition number, modulo its partitions), creating that topic
    /// like the source if needed, with the `strand.dlq.*` headers. Returns
    /// the offsets dealt with: copied, or deleted by retention (nothing to
    /// copy); an offset the leader does not show now is not among them.
    async fn dead_letter(
        &self,
        shard: &Shard,
        group: &str,
        (topic, id, p): (&str, crate::topic::TopicUuid, u32),
        offsets: &[u64],
        reason: &str,
    ) -> Result<Vec<u64>> {
        let (records, gone) = self.read_offsets(topic, id, p, offsets).await?;
        let mut handled: Vec<u64> = records.iter().map(|r| r.offset).chain(gone).collect();
        handled.sort_unstable();
        if records.is_empty() {
            return Ok(handled);
        }
        let counts: BTreeMap<u64, u32> = shard
            .shares()
            .get(group)
            .and_then(|g| g.partitions.get(&(topic.to_string(), p)))
            .map(|s| {
                offsets
                    .iter()
                    .map(|o| (*o, s.state.records.get(o).map_or(0, |r| r.delivery_count)))
                    .collect()
            })
            .unwrap_or_default();
        let dlq = format!("{topic}.dlq");
        let partitions = self.dlq_partitions(topic, &dlq).await?;
        let letters: Vec<pb::Record> = records
            .into_iter()
            .map(|mut r| {
                let header = |k: &str, v: String| pb::RecordHeader {
                    key: k.to_string(),
                    value: Some(Bytes::from(v)),
                };
                r.headers.retain(|h| !h.key.starts_with("strand.dlq."));
                r.headers.extend([
                    header(headers::DLQ_ERROR, reason.to_string()),
                    header(
                        headers::DLQ_ATTEMPTS,
                        counts.get(&r.offset).copied().unwrap_or(0).to_string(),
                    ),
                    header(headers::DLQ_TOPIC, topic.to_string()),
                    header(headers::DLQ_PARTITION, p.to_string()),
                    header(headers::DLQ_OFFSET, r.offset.to_string()),
                    header(headers::DLQ_TIMESTAMP, r.timestamp_ms.to_string()),
                ]);
                r
            })
            .collect();
        let target = p % partitions.max(1);
        let deadline = Instant::now() + DLQ_WAIT;
        loop {
            match self.source.produce(&dlq, target, letters.clone()).await {
                Ok(()) => return Ok(handled),
                // A new topic's partition elects its first leader.
                Err(e) if e.code() == pb::ErrorCode::NotLeader && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The dead-letter topic's partition count, creating it (with the
    /// source's partitions, replication factor and configs, so that any
    /// record of the source fits) if it does not exist.
    async fn dlq_partitions(&self, source: &str, dlq: &str) -> Result<u32> {
        if let Ok(t) = self.node.topic(dlq) {
            return Ok(t.meta.partitions);
        }
        let s = self.node.topic(source)?;
        let meta = TopicMeta {
            name: dlq.to_string(),
            partitions: s.meta.partitions,
            replication_factor: s.meta.replication_factor,
            configs: s.meta.configs.clone(),
        };
        match self.admin.create_topic(meta, None).await {
            Ok(_) | Err(BrokerError::TopicExists { .. }) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(topic = dlq, "created the dead-letter topic");
        Ok(self.node.topic(dlq).map_or(s.meta.partitions, |t| t.meta.partitions))
    }
}
