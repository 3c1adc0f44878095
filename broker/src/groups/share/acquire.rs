//! Share fetches: acknowledge what the member sent, then acquire records
//! for it — redeliveries first, then records never read — and long-poll
//! when there are none.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use strand_proto::headers;
use strand_proto::v1 as pb;

use super::source::Read;
use super::state::{AckEntry, Outcome, ShareOp, SharePartition, ranges};
use super::{AckResult, Acquired, ShareFetch, ShareMember, ShareReset, now_ms};
use crate::error::{BrokerError, Result};
use crate::groups::GroupCoordinator;
use crate::groups::shard::Shard;
use crate::groups::store::{GroupRecord, StoredShare};
use crate::topic::TopicUuid;

/// Most records one fetch acquires when the member does not say.
pub const DEFAULT_MAX_RECORDS: usize = 500;

/// How often a long-polling fetch looks again (records of other brokers'
/// partitions cannot wake it).
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Bytes read from a partition per read, at most.
const READ_BYTES: u32 = 1 << 20;

/// Most record bytes one poll takes from one partition.
const POLL_BYTES: usize = 4 << 20;

/// Roughly a record's size.
fn record_bytes(r: &pb::Record) -> usize {
    let headers: usize = r
        .headers
        .iter()
        .map(|h| h.key.len() + h.value.as_ref().map_or(0, bytes::Bytes::len))
        .sum();
    r.key.as_ref().map_or(0, bytes::Bytes::len) + r.value.as_ref().map_or(0, bytes::Bytes::len) + headers + 16
}

/// A read's size for about `records` records: what is read beyond them is
/// decoded, sent and dropped (reading 1 MiB of 100-byte records for a
/// fetch of 500 cost the coordinator most of its time).
fn read_budget(records: usize) -> u32 {
    u32::try_from(records.saturating_mul(512))
        .unwrap_or(READ_BYTES)
        .clamp(64 << 10, READ_BYTES)
}

/// One partition a fetch reads: topic, its id, partition.
pub(crate) type SharedPartition = (String, TopicUuid, u32);

/// The record's delivery time, if it has one.
pub(crate) fn deliver_at(r: &pb::Record) -> Option<i64> {
    headers::deliver_at(r.headers.iter().map(|h| (h.key.as_str(), h.value.as_deref())))
}

impl GroupCoordinator {
    /// Serves a share fetch: its acknowledgements, then up to `max_records`
    /// records, waiting up to `max_wait` for any.
    ///
    /// # Errors
    /// `NOT_COORDINATOR`, `INVALID_REQUEST`, `REQUEST_TIMED_OUT` (no
    /// majority to store the change).
    pub async fn share_fetch(&self, f: ShareFetch) -> Result<(Vec<Acquired>, Vec<AckResult>)> {
        super::super::validate_group(&f.group)?;
        if f.member.is_empty() || f.member.len() > super::super::MAX_GROUP_ID {
            return Err(BrokerError::InvalidRequest {
                reason: "a share fetch needs a member id of 1..=249 bytes".into(),
            });
        }
        let shard = self.shard(&f.group).await?;
        let member = self.touch_member(&shard, &f);
        let acks = if f.acks.is_empty() {
            Vec::new()
        } else {
            self.share_acknowledge_in(&shard, &f.group, &f.member, &f.acks, member.lock)
                .await?
        };
        let max = if f.max_records == 0 {
            DEFAULT_MAX_RECORDS
        } else {
            f.max_records
        };
        let deadline = Instant::now() + f.max_wait;
        loop {
            let got = self.acquire(&shard, &f, max, member.lock).await?;
            let now = Instant::now();
            if !got.is_empty() || now >= deadline || !shard.current() {
                return Ok((got, acks));
            }
            tokio::time::sleep(POLL_EVERY.min(deadline - now)).await;
        }
    }

    /// Records the member as alive; returns it.
    fn touch_member(&self, shard: &Shard, f: &ShareFetch) -> ShareMember {
        let cfg = &self.config;
        let lock = f
            .lock
            .unwrap_or(Duration::from_millis(cfg.share_record_lock_duration_ms))
            .clamp(
                Duration::from_millis(100),
                Duration::from_millis(cfg.share_max_record_lock_duration_ms),
            );
        let session = f
            .session_timeout
            .unwrap_or(Duration::from_millis(cfg.share_session_timeout_ms))
            .clamp(
                Duration::from_millis(cfg.min_session_timeout_ms),
                Duration::from_millis(cfg.max_session_timeout_ms),
            );
        let m = ShareMember {
            topics: f.topics.clone(),
            last_seen: Instant::now(),
            session_timeout: session,
            lock,
        };
        let mut shares = shard.shares();
        let g = shares.entry(f.group.clone()).or_default();
        if !g.members.contains_key(&f.member) {
            tracing::info!(group = %f.group, member = %f.member, "share-group member joined");
        }
        g.members.insert(f.member.clone(), m.clone());
        m
    }

    /// The partitions of `topics` that exist, in an order that rotates
    /// from call to call (so one busy partition does not starve the rest).
    fn shared_partitions(&self, topics: &[String]) -> Vec<SharedPartition> {
        let mut parts: Vec<SharedPartition> = self.node.with_metadata(|m| {
            topics
                .iter()
                .filter_map(|t| m.topics.get(t).map(|s| (t, s)))
                .flat_map(|(t, s)| (0..s.meta.partitions).map(move |p| (t.clone(), s.uuid(), p)))
                .collect()
        });
        if !parts.is_empty() {
            let n = parts.len();
            parts.rotate_left(self.share_rotation.fetch_add(1, Ordering::Relaxed) % n);
        }
        parts
    }

    /// One round of acquisition for `f.member` (under the shard's write
    /// lock: read state, read records, store the change, apply it). A
    /// partition that cannot be read now (its leader is down or moving) is
    /// skipped: the others still serve the member.
    async fn acquire(&self, shard: &Arc<Shard>, f: &ShareFetch, max: usize, lock: Duration) -> Result<Vec<Acquired>> {
        let _write = shard.write.lock().await;
        let mut want = max;
        let mut out = Vec::new();
        let mut changes: Vec<(SharedPartition, ShareOp)> = Vec::new();
        for (topic, id, p) in self.shared_partitions(&f.topics) {
            if want == 0 {
                break;
            }
            if !self.share_state_exists(shard, &f.group, &topic, id, p) {
                let start = match self.share_start(&topic, id, p, f.reset).await {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::debug!(group = %f.group, topic, partition = p, error = %e, "partition not readable now; skipped");
                        continue;
                    }
                };
                self.store_share_ops(shard, &f.group, vec![((topic.clone(), id, p), ShareOp::Init { start })])
                    .await?;
            }
            let tp = (topic, id, p);
            match self.acquire_from(shard, f, &tp, want, lock).await {
                Ok((got, ops)) => {
                    want = want.saturating_sub(got.len());
                    out.extend(got);
                    changes.extend(ops.into_iter().map(|op| (tp.clone(), op)));
                }
                Err(e) => {
                    tracing::debug!(group = %f.group, topic = tp.0, partition = p, error = %e, "partition not readable now; skipped");
                }
            }
        }
        if !changes.is_empty() {
            self.store_share_ops(shard, &f.group, changes).await?;
        }
        Ok(out)
    }

    /// What `f.member` acquires of one partition, and the changes that
    /// record it (not stored yet): redeliveries first (they are the
    /// oldest), then records never read, up to `want`.
    async fn acquire_from(
        &self,
        shard: &Shard,
        f: &ShareFetch,
        (topic, id, p): &SharedPartition,
        want: usize,
        lock: Duration,
    ) -> Result<(Vec<Acquired>, Vec<ShareOp>)> {
        let (topic, id, p) = (topic.as_str(), *id, *p);
        let limit = self.config.share_delivery_count_limit;
        let window = self.config.share_partition_max_record_locks;
        let now = now_ms();
        let deadline_ms = now + lock.as_millis() as i64;
        let (again, end, room, counts) = self.with_share_state(shard, &f.group, topic, p, |s| {
            s.release_due(now);
            let again = s.acquirable(now, limit, want);
            let counts: BTreeMap<u64, u32> = again
                .iter()
                .map(|o| (*o, s.records.get(o).map_or(0, |r| r.delivery_count)))
                .collect();
            (again, s.end, s.room(window), counts)
        });
        let mut out = Vec::new();
        let mut ops = Vec::new();
        let mut acquired: Vec<u64> = Vec::new();
        if !again.is_empty() {
            let (found, gone) = self.read_offsets(topic, id, p, &again).await?;
            for r in found {
                acquired.push(r.offset);
                out.push(Acquired {
                    topic: topic.to_string(),
                    partition: p,
                    delivery_count: counts.get(&r.offset).copied().unwrap_or(0) + 1,
                    deadline_ms,
                    record: r,
                });
            }
            if !gone.is_empty() {
                // Retention deleted them: nothing left to deliver.
                ops.push(ShareOp::Ack {
                    member: String::new(),
                    entries: ranges(&gone)
                        .into_iter()
                        .map(|(first, last)| AckEntry {
                            first,
                            last,
                            outcome: Outcome::Accepted,
                        })
                        .collect(),
                });
            }
        }
        let mut delayed = Vec::new();
        let mut new_end = end;
        let left = want.saturating_sub(acquired.len());
        let (mut taken, mut bytes, mut from) = (0usize, 0usize, end);
        // Several reads when records are larger than the first read's
        // estimate, up to a poll's worth of bytes.
        while taken < left && new_end - end < room && bytes < POLL_BYTES {
            let records = match self.source.read(topic, id, p, from, read_budget(left - taken)).await? {
                Read::OutOfRange { earliest, .. } if earliest > from && from == end => {
                    // Retention deleted records the group never read (and so
                    // everything before them too).
                    tracing::warn!(group = %f.group, topic, partition = p, from = end, to = earliest, "records deleted before the share group read them");
                    return Ok((Vec::new(), vec![ShareOp::Init { start: earliest }]));
                }
                Read::OutOfRange { .. } => break,
                Read::Records {
                    records, next_offset, ..
                } => {
                    if records.is_empty() || next_offset <= from {
                        break;
                    }
                    from = next_offset;
                    records
                }
            };
            for r in records {
                if r.offset < new_end {
                    continue;
                }
                if taken >= left || new_end - end >= room {
                    break;
                }
                new_end = r.offset + 1;
                bytes += record_bytes(&r);
                match deliver_at(&r) {
                    Some(at) if at > now => delayed.push((r.offset, at)),
                    _ => {
                        taken += 1;
                        acquired.push(r.offset);
                        out.push(Acquired {
                            topic: topic.to_string(),
                            partition: p,
                            delivery_count: 1,
                            deadline_ms,
                            record: r,
                        });
                    }
                }
            }
            // Stopped inside the read (limits): read no further.
            if new_end < from {
                break;
            }
        }
        if !acquired.is_empty() || !delayed.is_empty() || new_end != end {
            acquired.sort_unstable();
            ops.push(ShareOp::Acquire {
                member: f.member.clone(),
                deadline_ms,
                ranges: ranges(&acquired),
                delayed,
                end: new_end,
            });
        }
        Ok((out, ops))
    }

    /// Where a never-read partition starts.
    async fn share_start(&self, topic: &str, id: TopicUuid, p: u32, reset: ShareReset) -> Result<u64> {
        let (earliest, latest) = match self.source.read(topic, id, p, 0, 1).await? {
            Read::OutOfRange { earliest, latest } => (earliest, latest),
            Read::Records {
                high_watermark,
                log_start,
                ..
            } => (log_start, high_watermark),
        };
        Ok(match reset {
            ShareReset::Earliest => earliest,
            ShareReset::Latest => latest,
        })
    }

    /// The records at `offsets` (ascending), and the offsets the leader no
    /// longer stores (below its first offset: deleted by retention). An
    /// offset the leader does not show now (above its high watermark for a
    /// moment after an election) is in neither: it stays available.
    pub(crate) async fn read_offsets(
        &self,
        topic: &str,
        id: TopicUuid,
        p: u32,
        offsets: &[u64],
    ) -> Result<(Vec<pb::Record>, Vec<u64>)> {
        let wanted: std::collections::BTreeSet<u64> = offsets.iter().copied().collect();
        let mut found = Vec::new();
        let mut gone = Vec::new();
        for (first, last) in ranges(offsets) {
            let mut at = first;
            while at <= last {
                let budget = read_budget(usize::try_from(last - at + 1).unwrap_or(usize::MAX));
                match self.source.read(topic, id, p, at, budget).await? {
                    Read::OutOfRange { earliest, .. } if earliest > at => {
                        let to = earliest.min(last + 1);
                        gone.extend((at..to).filter(|o| wanted.contains(o)));
                        at = to;
                    }
                    // Past the leader's log end: not visible now.
                    Read::OutOfRange { .. } => break,
                    Read::Records {
                        records, next_offset, ..
                    } => {
                        let before = at;
                        for r in records {
                            if r.offset > last {
                                break;
                            }
                            if r.offset >= at {
                                at = r.offset + 1;
                                if wanted.contains(&r.offset) {
                                    found.push(r);
                                }
                            }
                        }
                        at = at.max(next_offset);
                        if at == before {
                            // Nothing visible from here now.
                            break;
                        }
                    }
                }
            }
        }
        Ok((found, gone))
    }

    /// Whether the group has state for the partition of topic id `id`.
    fn share_state_exists(&self, shard: &Shard, group: &str, topic: &str, id: TopicUuid, p: u32) -> bool {
        shard
            .shares()
            .get(group)
            .and_then(|g| g.partitions.get(&(topic.to_string(), p)))
            .is_some_and(|s| s.topic_id == id)
    }

    /// Runs `f` on the group's state of a partition (default state if none).
    pub(crate) fn with_share_state<R>(
        &self,
        shard: &Shard,
        group: &str,
        topic: &str,
        p: u32,
        f: impl FnOnce(&mut SharePartition) -> R,
    ) -> R {
        let mut shares = shard.shares();
        let g = shares.entry(group.to_string()).or_default();
        match g.partitions.get_mut(&(topic.to_string(), p)) {
            Some(s) => f(&mut s.state),
            None => f(&mut SharePartition::default()),
        }
    }

    /// Stores changes through Raft, then applies them to memory.
    pub(crate) async fn store_share_ops(
        &self,
        shard: &Shard,
        group: &str,
        changes: Vec<(SharedPartition, ShareOp)>,
    ) -> Result<()> {
        let records: Vec<GroupRecord> = changes
            .iter()
            .map(|((topic, id, p), op)| GroupRecord::Share {
                group: group.to_string(),
                topic: topic.clone(),
                topic_id: *id,
                partition: *p,
                op: op.clone(),
            })
            .collect();
        self.write(shard, group, &records).await?;
        let mut shares = shard.shares();
        let g = shares.entry(group.to_string()).or_default();
        for ((topic, id, p), op) in changes {
            let s = g.partitions.entry((topic, p)).or_insert_with(|| StoredShare {
                topic_id: id,
                state: SharePartition::default(),
            });
            if s.topic_id != id {
                *s = StoredShare {
                    topic_id: id,
                    state: SharePartition::default(),
                };
            }
            s.state.apply(&op);
        }
        Ok(())
    }
}
