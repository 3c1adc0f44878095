//! The group coordinator: consumer-group membership, assignment and
//! durable offsets.
//!
//! A group's coordinator is the leader of the `__consumer_offsets`
//! partition its id hashes to ([`store::partition_for`]); the topic is
//! created (replicated like any topic) on first use. The coordinator keeps
//! the groups of each partition it leads in memory, writes every committed
//! offset (and each new group epoch) to that partition through Raft with
//! `acks=all` before answering, and rebuilds the groups from the partition
//! when it becomes leader.
//!
//! Invariants:
//! - only the partition's leader in its current term serves a group; state
//!   loaded in an older term is dropped, and loading waits until everything
//!   written in earlier terms is committed;
//! - writes of one offsets partition are serialized, checked before they are
//!   proposed, and applied to memory only once committed, so memory never
//!   shows an offset that a failover could lose;
//! - after a failover no partition is assigned until the old members'
//!   sessions have run out (they either learn they are fenced or stop on
//!   their own), so two live members never hold one partition.

pub mod assignor;
pub mod membership;
pub mod store;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strand_cluster::Ack;
use strand_proto::v1 as pb;

use crate::config::GroupConfig;
use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::state::BrokerState;
use assignor::{Assignor, TopicPartition};
use membership::{Group, Heartbeat, MemberError};
pub use store::OFFSETS_TOPIC;
use store::{GroupRecord, StoredGroup};

/// Longest group id accepted.
pub const MAX_GROUP_ID: usize = 249;

/// The groups of one offsets partition, as loaded in one leader term.
struct Shard {
    partition: Arc<Partition>,
    term: u64,
    /// Serializes writes (commits, resets, deletes) to the partition.
    write: tokio::sync::Mutex<()>,
    groups: Mutex<BTreeMap<String, Group>>,
}

impl Shard {
    fn groups(&self) -> MutexGuard<'_, BTreeMap<String, Group>> {
        self.groups.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Still the leader in the term it was loaded in.
    fn current(&self) -> bool {
        let st = self.partition.status();
        st.is_leader && st.term == self.term
    }
}

/// Per-partition group metrics rows.
#[derive(Debug, Clone)]
pub struct GroupPartitionRow {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Committed offset.
    pub committed: u64,
    /// High watermark minus committed, when the partition is hosted here.
    pub lag: Option<u64>,
}

/// The coordinator of every group whose offsets partition this broker leads.
pub struct GroupCoordinator {
    config: GroupConfig,
    shards: Mutex<HashMap<u32, Arc<Shard>>>,
    load: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for GroupCoordinator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCoordinator").finish_non_exhaustive()
    }
}

fn not_coordinator(group: &str, addr: Option<String>) -> BrokerError {
    BrokerError::NotCoordinator {
        group: group.into(),
        coordinator_addr: addr,
    }
}

fn member_error(e: MemberError) -> BrokerError {
    match e {
        MemberError::Fenced(reason) => BrokerError::Fenced { reason },
        MemberError::StaleEpoch { sent, current } => BrokerError::RebalanceInProgress { sent, current },
    }
}

fn validate_group(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > MAX_GROUP_ID || group.chars().any(char::is_control) {
        return Err(BrokerError::InvalidRequest {
            reason: format!("group id must be 1..={MAX_GROUP_ID} printable characters, got {group:?}"),
        });
    }
    Ok(())
}

fn to_topic_partitions(set: &BTreeSet<TopicPartition>) -> Vec<pb::TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in set {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| pb::TopicPartitions {
            topic: t.to_string(),
            partitions: ps,
        })
        .collect()
}

fn from_topic_partitions(list: &[pb::TopicPartitions]) -> BTreeSet<TopicPartition> {
    list.iter()
        .flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p)))
        .collect()
}

/// Partition counts of every topic (what assignments are computed over).
fn partition_counts(state: &BrokerState) -> BTreeMap<String, u32> {
    state
        .metadata()
        .topics
        .into_iter()
        .map(|(name, t)| (name, t.meta.partitions))
        .collect()
}

impl GroupCoordinator {
    /// A coordinator with nothing loaded.
    pub fn new(config: GroupConfig) -> Self {
        GroupCoordinator {
            config,
            shards: Mutex::new(HashMap::new()),
            load: tokio::sync::Mutex::new(()),
        }
    }

    fn shards(&self) -> MutexGuard<'_, HashMap<u32, Arc<Shard>>> {
        self.shards.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The offsets topic's partition count, creating the topic on first use.
    async fn offsets_partitions(&self, state: &Arc<BrokerState>, group: &str) -> Result<u32> {
        match state.topic(OFFSETS_TOPIC) {
            Ok(t) => Ok(t.meta.partitions),
            Err(BrokerError::UnknownTopic { .. }) => {
                let rf = self
                    .config
                    .offsets_replication_factor
                    .min(state.brokers().len() as u32)
                    .max(1);
                let req = pb::CreateTopicRequest {
                    name: OFFSETS_TOPIC.into(),
                    partitions: self.config.offsets_partitions,
                    replication_factor: rf,
                    configs: [
                        ("retention.ms".to_string(), "-1".to_string()),
                        ("retention.bytes".to_string(), "-1".to_string()),
                    ]
                    .into(),
                };
                match crate::service::admin::create_topic(state, req, false).await {
                    Ok(_) | Err(BrokerError::TopicExists { .. }) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "could not create {OFFSETS_TOPIC}");
                        return Err(not_coordinator(group, None));
                    }
                }
                tracing::info!(
                    partitions = self.config.offsets_partitions,
                    rf,
                    "created {OFFSETS_TOPIC}"
                );
                Ok(state.topic(OFFSETS_TOPIC)?.meta.partitions)
            }
            Err(BrokerError::NotLeader { .. }) => Err(not_coordinator(group, None)),
            Err(e) => Err(e),
        }
    }

    /// The coordinator's node and address for a group (as this broker
    /// knows it: the live leader of a hosted replica, else its preferred
    /// replica as a hint).
    pub async fn find(&self, state: &Arc<BrokerState>, group: &str) -> Result<(u64, String)> {
        validate_group(group)?;
        let n = self.offsets_partitions(state, group).await?;
        let k = store::partition_for(group, n);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            let leader = match state.partition(OFFSETS_TOPIC, k) {
                Ok(p) => p.status().leader,
                Err(BrokerError::NotLeader { .. }) => state
                    .topic(OFFSETS_TOPIC)?
                    .assignment
                    .get(k as usize)
                    .and_then(|r| r.first().copied()),
                Err(e) => return Err(e),
            };
            if let Some(l) = leader {
                let addr = if l == state.node_id {
                    Some(state.advertised_addr.clone())
                } else {
                    state.addr_of(l)
                };
                if let Some(addr) = addr {
                    return Ok((l, addr));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(not_coordinator(group, None));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The loaded shard that owns `group`, loading it if this broker just
    /// became the leader of its partition.
    async fn shard(&self, state: &Arc<BrokerState>, group: &str) -> Result<Arc<Shard>> {
        validate_group(group)?;
        let n = self.offsets_partitions(state, group).await?;
        let k = store::partition_for(group, n);
        let partition = match state.partition(OFFSETS_TOPIC, k) {
            Ok(p) => p,
            Err(BrokerError::NotLeader { leader_addr, .. }) => return Err(not_coordinator(group, leader_addr)),
            Err(e) => return Err(e),
        };
        self.shard_of(state, k, partition).await.map_err(|e| match e {
            BrokerError::NotLeader { leader_addr, .. } => not_coordinator(group, leader_addr),
            other => other,
        })
    }

    async fn shard_of(&self, state: &BrokerState, k: u32, partition: Arc<Partition>) -> Result<Arc<Shard>> {
        let not_leader = |st: &strand_cluster::GroupStatus| BrokerError::NotLeader {
            topic: OFFSETS_TOPIC.into(),
            partition: k,
            leader_addr: st.leader.and_then(|l| state.addr_of(l)),
        };
        let st = partition.status();
        if !st.is_leader {
            return Err(not_leader(&st));
        }
        if let Some(s) = self.shards().get(&k)
            && s.term == st.term
        {
            return Ok(Arc::clone(s));
        }
        let _loading = self.load.lock().await;
        if let Some(s) = self.shards().get(&k)
            && s.term == st.term
        {
            return Ok(Arc::clone(s));
        }
        // Everything of earlier terms is committed once the entry the new
        // leader appended is: wait for that, then read up to it.
        let want = st.last_index;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let now = partition.status();
            if !now.is_leader || now.term != st.term {
                return Err(not_leader(&now));
            }
            if now.commit >= want {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BrokerError::NotLeader {
                    topic: OFFSETS_TOPIC.into(),
                    partition: k,
                    leader_addr: None,
                });
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let stored = {
            let p = Arc::clone(&partition);
            tokio::task::spawn_blocking(move || read_groups(&p))
                .await
                .map_err(|e| BrokerError::InvalidRequest {
                    reason: format!("loading groups failed: {e}"),
                })??
        };
        let now = Instant::now();
        let groups: BTreeMap<String, Group> = stored
            .into_iter()
            .map(|(name, s)| {
                let mut g = Group::new(name.clone());
                g.epoch = s.epoch;
                g.offsets = s.offsets;
                if s.members > 0 {
                    // Old members may still think they hold partitions until
                    // their sessions run out.
                    g.hold_until = Some(now + Duration::from_millis(s.session_timeout_ms));
                }
                (name, g)
            })
            .collect();
        tracing::info!(
            topic = OFFSETS_TOPIC,
            partition = k,
            term = st.term,
            groups = groups.len(),
            "loaded consumer groups"
        );
        let shard = Arc::new(Shard {
            partition,
            term: st.term,
            write: tokio::sync::Mutex::new(()),
            groups: Mutex::new(groups),
        });
        self.shards().insert(k, Arc::clone(&shard));
        Ok(shard)
    }

    /// Writes records to the shard's partition and waits for a majority.
    async fn write(&self, state: &BrokerState, shard: &Shard, group: &str, records: &[GroupRecord]) -> Result<()> {
        let batch = store::encode(records)?;
        match state
            .node
            .propose(shard.partition.group(), batch.into(), Ack::All)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(match state.not_leader(OFFSETS_TOPIC, shard.partition.id(), e) {
                BrokerError::NotLeader { leader_addr, .. } => not_coordinator(group, leader_addr),
                other => other,
            }),
        }
    }

    fn epoch_record(g: &Group) -> GroupRecord {
        GroupRecord::Epoch {
            group: g.name.clone(),
            epoch: g.epoch,
            session_timeout_ms: g.max_session_timeout().as_millis() as u64,
            members: g.members.len() as u32,
        }
    }

    /// Records a new group epoch in the background: it only lets a future
    /// coordinator wait out the members' sessions, so the answer does not
    /// wait for it.
    fn persist_epoch(state: &Arc<BrokerState>, shard: &Arc<Shard>, record: GroupRecord) {
        let (state, shard) = (Arc::clone(state), Arc::clone(shard));
        tokio::spawn(async move {
            let Ok(batch) = store::encode(std::slice::from_ref(&record)) else {
                return;
            };
            if let Err(e) = state
                .node
                .propose(shard.partition.group(), batch.into(), Ack::All)
                .await
            {
                tracing::debug!(group = record.group(), error = %e, "group epoch not recorded");
            }
        });
    }

    /// Join, heartbeat or leave.
    pub async fn heartbeat(
        &self,
        state: &Arc<BrokerState>,
        req: pb::GroupHeartbeatRequest,
    ) -> Result<pb::GroupHeartbeatResponse> {
        let assignor: Assignor = req
            .assignor
            .parse()
            .map_err(|reason| BrokerError::InvalidRequest { reason })?;
        let c = &self.config;
        let session = u64::from(req.session_timeout_ms);
        if req.member_epoch >= 0 && !(c.min_session_timeout_ms..=c.max_session_timeout_ms).contains(&session) {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "session timeout {session} ms is outside the broker's {}..={} ms",
                    c.min_session_timeout_ms, c.max_session_timeout_ms
                ),
            });
        }
        if req.member_epoch == 0 && req.topics.is_empty() {
            return Err(BrokerError::InvalidRequest {
                reason: "a member must subscribe to at least one topic".into(),
            });
        }
        let shard = self.shard(state, &req.group).await?;
        let counts = partition_counts(state);
        let now = Instant::now();
        let heartbeat_ms = c.heartbeat_interval_ms.min(session / 3).max(100) as u32;
        let mut groups = shard.groups();
        if req.member_epoch < 0 {
            if let Some(g) = groups.get_mut(&req.group) {
                let before = g.epoch;
                g.leave(now, &req.member_id, req.member_epoch == -2, &counts);
                if g.epoch != before {
                    Self::persist_epoch(state, &shard, Self::epoch_record(g));
                }
            }
            return Ok(pb::GroupHeartbeatResponse {
                member_id: req.member_id,
                member_epoch: req.member_epoch,
                heartbeat_interval_ms: heartbeat_ms,
                assignment: Vec::new(),
            });
        }
        let g = match groups.get_mut(&req.group) {
            Some(g) => g,
            None if req.member_epoch == 0 => groups
                .entry(req.group.clone())
                .or_insert_with(|| Group::new(req.group.clone())),
            None => {
                return Err(BrokerError::Fenced {
                    reason: format!("group {:?} has no member {}", req.group, req.member_id),
                });
            }
        };
        if g.members.is_empty() {
            g.assignor = assignor;
        } else if req.member_epoch == 0 && g.assignor != assignor {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "group {:?} uses the {} assignor; this member asked for {assignor}",
                    req.group, g.assignor
                ),
            });
        }
        let before = g.epoch;
        let hb = Heartbeat {
            member_id: req.member_id,
            instance_id: Some(req.instance_id).filter(|s| !s.is_empty()),
            client_id: req.client_id,
            epoch: req.member_epoch,
            topics: req.topics.into_iter().collect(),
            session_timeout: Duration::from_millis(session),
            owned: from_topic_partitions(&req.owned),
        };
        let answer = g
            .heartbeat(
                now,
                hb,
                || uuid_like(state.node_id),
                Duration::from_millis(c.initial_rebalance_delay_ms),
                &counts,
            )
            .map_err(member_error)?;
        if g.epoch != before {
            tracing::info!(group = %g.name, epoch = g.epoch, members = g.members.len(), "group epoch moved");
            Self::persist_epoch(state, &shard, Self::epoch_record(g));
        }
        Ok(pb::GroupHeartbeatResponse {
            member_id: answer.member_id,
            member_epoch: answer.epoch,
            heartbeat_interval_ms: heartbeat_ms,
            assignment: to_topic_partitions(&answer.assignment),
        })
    }

    /// Commits offsets of a member (or, with an empty member id and epoch
    /// -1, of a consumer outside any membership while the group has none).
    pub async fn commit(
        &self,
        state: &Arc<BrokerState>,
        req: pb::CommitOffsetsRequest,
    ) -> Result<pb::CommitOffsetsResponse> {
        let shard = self.shard(state, &req.group).await?;
        let _write = shard.write.lock().await;
        let tps: Vec<TopicPartition> = req.offsets.iter().map(|o| (o.topic.clone(), o.partition)).collect();
        let changed: Vec<GroupRecord> = {
            let groups = shard.groups();
            let group = groups.get(&req.group);
            if req.member_id.is_empty() && req.member_epoch < 0 {
                if let Some(g) = group
                    && !g.members.is_empty()
                {
                    return Err(BrokerError::Fenced {
                        reason: format!(
                            "group {:?} has {} active member(s): only they may commit",
                            req.group,
                            g.members.len()
                        ),
                    });
                }
            } else {
                match group {
                    Some(g) => g
                        .check_commit(&req.member_id, req.member_epoch, &tps)
                        .map_err(member_error)?,
                    None => {
                        return Err(BrokerError::Fenced {
                            reason: format!("group {:?} has no member {}", req.group, req.member_id),
                        });
                    }
                }
            }
            req.offsets
                .iter()
                .filter(|o| group.and_then(|g| g.offsets.get(&(o.topic.clone(), o.partition))) < Some(&o.offset))
                .map(|o| GroupRecord::Offset {
                    group: req.group.clone(),
                    topic: o.topic.clone(),
                    partition: o.partition,
                    offset: o.offset,
                    reset: false,
                })
                .collect()
        };
        if !changed.is_empty() {
            self.write(state, &shard, &req.group, &changed).await?;
        }
        let mut groups = shard.groups();
        let g = groups
            .entry(req.group.clone())
            .or_insert_with(|| Group::new(req.group.clone()));
        for r in changed {
            if let GroupRecord::Offset {
                topic,
                partition,
                offset,
                ..
            } = r
            {
                g.offsets.insert((topic, partition), offset);
            }
        }
        Ok(pb::CommitOffsetsResponse {
            committed: tps
                .iter()
                .filter_map(|tp| {
                    g.offsets.get(tp).map(|o| pb::OffsetCommit {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        offset: *o,
                        metadata: String::new(),
                    })
                })
                .collect(),
        })
    }

    /// Committed offsets of a group.
    pub async fn fetch_offsets(
        &self,
        state: &Arc<BrokerState>,
        req: pb::FetchOffsetsRequest,
    ) -> Result<pb::FetchOffsetsResponse> {
        let shard = self.shard(state, &req.group).await?;
        let wanted = from_topic_partitions(&req.partitions);
        let groups = shard.groups();
        let offsets = groups
            .get(&req.group)
            .map(|g| {
                g.offsets
                    .iter()
                    .filter(|(tp, _)| wanted.is_empty() || wanted.contains(*tp))
                    .map(|(tp, o)| pb::OffsetCommit {
                        topic: tp.0.clone(),
                        partition: tp.1,
                        offset: *o,
                        metadata: String::new(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(pb::FetchOffsetsResponse { offsets })
    }

    /// Groups of every offsets partition this broker leads.
    pub async fn list(&self, state: &Arc<BrokerState>) -> Result<pb::ListGroupsResponse> {
        let Ok(topic) = state.topic(OFFSETS_TOPIC) else {
            return Ok(pb::ListGroupsResponse::default());
        };
        let now = Instant::now();
        let mut out = Vec::new();
        for (k, p) in state.hosted(&topic).into_iter().enumerate() {
            let Some(p) = p else { continue };
            if !p.status().is_leader {
                continue;
            }
            let Ok(shard) = self.shard_of(state, k as u32, p).await else {
                continue;
            };
            for g in shard.groups().values() {
                out.push(pb::GroupSummary {
                    group: g.name.clone(),
                    state: g.state_name(now).into(),
                    members: g.members.len() as u32,
                    coordinator: state.node_id,
                });
            }
        }
        Ok(pb::ListGroupsResponse { groups: out })
    }

    /// State, members, offsets and lag of a group.
    pub async fn describe(&self, state: &Arc<BrokerState>, group: &str) -> Result<pb::GroupDescription> {
        let shard = self.shard(state, group).await?;
        let now = Instant::now();
        let groups = shard.groups();
        let Some(g) = groups.get(group) else {
            return Err(BrokerError::UnknownGroup { group: group.into() });
        };
        let mut holder: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
        for m in g.members.values() {
            for tp in m.held() {
                holder.insert(tp, &m.id);
            }
        }
        let mut partitions: BTreeSet<TopicPartition> = g.offsets.keys().cloned().collect();
        let counts = partition_counts(state);
        for t in g.subscribed_topics() {
            for p in 0..counts.get(&t).copied().unwrap_or(0) {
                partitions.insert((t.clone(), p));
            }
        }
        let offsets = partitions
            .iter()
            .map(|tp| {
                let committed = g.offsets.get(tp).map_or(-1, |o| *o as i64);
                let end = state
                    .partition(&tp.0, tp.1)
                    .map_or(-1, |p| p.state().high_watermark as i64);
                pb::GroupPartitionOffset {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    committed,
                    log_end_offset: end,
                    lag: if end >= 0 && committed >= 0 {
                        (end - committed).max(0)
                    } else {
                        -1
                    },
                    member_id: holder.get(tp).map(|s| s.to_string()).unwrap_or_default(),
                }
            })
            .collect();
        Ok(pb::GroupDescription {
            group: g.name.clone(),
            state: g.state_name(now).into(),
            epoch: g.epoch,
            assignor: g.assignor.name().into(),
            coordinator: state.node_id,
            members: g
                .members
                .values()
                .map(|m| pb::GroupMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone().unwrap_or_default(),
                    client_id: m.client_id.clone(),
                    member_epoch: m.epoch,
                    topics: m.topics.iter().cloned().collect(),
                    assignment: to_topic_partitions(&m.granted),
                })
                .collect(),
            offsets,
        })
    }

    /// Sets offsets (an operator's rewind or skip). Refused while the group
    /// has members unless `force`, which fences them.
    pub async fn reset(
        &self,
        state: &Arc<BrokerState>,
        req: pb::ResetOffsetsRequest,
    ) -> Result<pb::ResetOffsetsResponse> {
        let shard = self.shard(state, &req.group).await?;
        let _write = shard.write.lock().await;
        let mut epoch_record = None;
        {
            let mut groups = shard.groups();
            if let Some(g) = groups.get_mut(&req.group)
                && !g.members.is_empty()
            {
                if !req.force {
                    return Err(BrokerError::GroupNotEmpty {
                        group: req.group.clone(),
                        members: g.members.len(),
                    });
                }
                g.fence_all();
                tracing::warn!(group = %req.group, "offsets reset with --force: members fenced");
                epoch_record = Some(Self::epoch_record(g));
            }
        }
        let mut records: Vec<GroupRecord> = epoch_record.into_iter().collect();
        records.extend(req.offsets.iter().map(|o| GroupRecord::Offset {
            group: req.group.clone(),
            topic: o.topic.clone(),
            partition: o.partition,
            offset: o.offset,
            reset: true,
        }));
        self.write(state, &shard, &req.group, &records).await?;
        let mut groups = shard.groups();
        let g = groups
            .entry(req.group.clone())
            .or_insert_with(|| Group::new(req.group.clone()));
        for o in &req.offsets {
            g.offsets.insert((o.topic.clone(), o.partition), o.offset);
        }
        tracing::info!(group = %req.group, partitions = req.offsets.len(), "offsets reset");
        Ok(pb::ResetOffsetsResponse { offsets: req.offsets })
    }

    /// Deletes a group with no members.
    pub async fn delete(&self, state: &Arc<BrokerState>, group: &str) -> Result<()> {
        let shard = self.shard(state, group).await?;
        let _write = shard.write.lock().await;
        {
            let groups = shard.groups();
            match groups.get(group) {
                None => return Err(BrokerError::UnknownGroup { group: group.into() }),
                Some(g) if !g.members.is_empty() => {
                    return Err(BrokerError::GroupNotEmpty {
                        group: group.into(),
                        members: g.members.len(),
                    });
                }
                Some(_) => {}
            }
        }
        self.write(state, &shard, group, &[GroupRecord::Deleted { group: group.into() }])
            .await?;
        shard.groups().remove(group);
        tracing::info!(group, "group deleted");
        Ok(())
    }

    /// Periodic upkeep: expires silent members, ends rebalance delays,
    /// notices new partitions, and drops state of partitions no longer led.
    pub fn tick(&self, state: &Arc<BrokerState>) {
        let shards: Vec<(u32, Arc<Shard>)> = self.shards().iter().map(|(k, s)| (*k, Arc::clone(s))).collect();
        let counts = partition_counts(state);
        let now = Instant::now();
        for (k, shard) in shards {
            if !shard.current() {
                let mut all = self.shards();
                if all.get(&k).is_some_and(|s| Arc::ptr_eq(s, &shard)) {
                    all.remove(&k);
                    tracing::info!(
                        topic = OFFSETS_TOPIC,
                        partition = k,
                        "no longer coordinating these groups"
                    );
                }
                continue;
            }
            let mut groups = shard.groups();
            for g in groups.values_mut() {
                let before = g.epoch;
                for id in g.expire(now, &counts) {
                    tracing::info!(group = %g.name, member = %id, "member session expired");
                }
                if g.epoch != before {
                    Self::persist_epoch(state, &shard, Self::epoch_record(g));
                }
            }
            groups.retain(|_, g| !g.members.is_empty() || !g.offsets.is_empty() || g.epoch > 0);
        }
    }

    /// Committed offsets and lag of the groups coordinated here (metrics).
    pub fn metrics_rows(&self, state: &BrokerState) -> (Vec<(String, usize)>, Vec<GroupPartitionRow>) {
        let shards: Vec<Arc<Shard>> = self.shards().values().cloned().collect();
        let (mut members, mut rows) = (Vec::new(), Vec::new());
        for shard in shards.iter().filter(|s| s.current()) {
            for g in shard.groups().values() {
                members.push((g.name.clone(), g.members.len()));
                for ((topic, partition), committed) in &g.offsets {
                    let lag = state
                        .partition(topic, *partition)
                        .ok()
                        .map(|p| p.state().high_watermark.saturating_sub(*committed));
                    rows.push(GroupPartitionRow {
                        group: g.name.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        committed: *committed,
                        lag,
                    });
                }
            }
        }
        (members, rows)
    }
}

/// Reads every committed group record of an offsets partition.
fn read_groups(p: &Partition) -> Result<BTreeMap<String, StoredGroup>> {
    let mut groups = BTreeMap::new();
    let st = p.state();
    let mut at = st.log_start_offset;
    while at < st.high_watermark {
        let buf = p.read(at, 1 << 20)?;
        if buf.is_empty() {
            break;
        }
        let next = store::fold_batches(&mut groups, &buf)?;
        if next <= at {
            break;
        }
        at = next;
    }
    Ok(groups)
}

/// A member id unique across brokers and restarts: node, time, counter.
fn uuid_like(node: u64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("m-{node}-{nanos:x}-{n}")
}
