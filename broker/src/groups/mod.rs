//! The group coordinator: consumer-group membership, assignment and
//! durable offsets.
//!
//! A group's coordinator is the leader of the `__consumer_offsets`
//! partition its id hashes to ([`store::partition_for`]); the topic is
//! created (replicated like any topic) on first use. The coordinator keeps
//! the groups of each partition it leads in memory ([`shard`]), writes every
//! committed offset (and each new group epoch) to that partition through
//! Raft with `acks=all` before answering, and rebuilds the groups from the
//! partition when it becomes leader.
//!
//! - [`membership`] and [`assignor`]: one group's state machine and the
//!   assignment strategies (pure);
//! - [`heartbeat`]: joins, heartbeats, leaves and session expiry;
//! - [`offsets`]: commits, fetches, resets, deletes;
//! - [`views`]: list and describe;
//! - [`store`]: the records in `__consumer_offsets`;
//! - [`share`]: share groups (queues), whose state lives in the same
//!   partitions and shards.
//!
//! Invariants:
//! - only the partition's leader in its current term serves a group; state
//!   loaded in an older term is dropped, and loading waits until everything
//!   written in earlier terms is committed;
//! - after a failover no partition is assigned until the old members'
//!   sessions have run out (they either learn they are fenced or stop on
//!   their own), so two live members never hold one partition.

pub mod assignor;
pub mod heartbeat;
pub mod membership;
pub mod offsets;
mod shard;
pub mod share;
pub mod store;
pub mod views;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, MutexGuard};
use strand_cluster::NodeId;

use crate::admin::Admin;
use crate::blocking::run_blocking;
use crate::config::GroupConfig;
use crate::error::{BrokerError, Result};
use crate::node::Node;
use crate::partition::Partition;
use crate::topic::TopicMeta;
use membership::Group;
use shard::{Shard, read_groups};
use store::GroupRecord;
pub use store::OFFSETS_TOPIC;

/// Longest group id accepted.
pub const MAX_GROUP_ID: usize = 249;

/// How long `FindCoordinator` waits for the offsets partition to have a
/// leader (right after the topic is created).
const FIND_WAIT: Duration = Duration::from_secs(5);

/// How long a new leader waits for its earlier terms' entries to commit
/// before loading its groups.
const LOAD_WAIT: Duration = Duration::from_secs(10);

/// How long a commit waits for a majority before answering
/// `REQUEST_TIMED_OUT` (the offsets partition lost its quorum).
const WRITE_WAIT: Duration = Duration::from_secs(10);

/// The coordinator of every group whose offsets partition this broker leads.
pub struct GroupCoordinator {
    config: GroupConfig,
    node: Arc<Node>,
    admin: Admin,
    shards: Mutex<HashMap<u32, Arc<Shard>>>,
    load: tokio::sync::Mutex<()>,
    /// Where share groups read the records they hand out.
    source: share::source::PartitionSource,
    /// Rotates the partition a share fetch looks at first.
    share_rotation: std::sync::atomic::AtomicUsize,
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

/// Checks a group id.
pub fn validate_group(group: &str) -> Result<()> {
    if group.is_empty() || group.len() > MAX_GROUP_ID || group.chars().any(char::is_control) {
        return Err(BrokerError::InvalidRequest {
            reason: format!("group id must be 1..={MAX_GROUP_ID} printable characters, got {group:?}"),
        });
    }
    Ok(())
}

impl GroupCoordinator {
    /// A coordinator with nothing loaded.
    pub fn new(config: GroupConfig, node: Arc<Node>, admin: Admin) -> Self {
        GroupCoordinator {
            config,
            source: share::source::PartitionSource::new(Arc::clone(&node)),
            node,
            admin,
            shards: Mutex::new(HashMap::new()),
            load: tokio::sync::Mutex::new(()),
            share_rotation: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn shards(&self) -> MutexGuard<'_, HashMap<u32, Arc<Shard>>> {
        self.shards.lock()
    }

    /// Partition counts of every topic (what assignments are computed over).
    fn partition_counts(&self) -> BTreeMap<String, u32> {
        // Read in place: a copy of the metadata holds every partition's
        // assignment, and this runs four times a second.
        self.node.with_metadata(|m| {
            m.topics
                .iter()
                .map(|(name, t)| (name.clone(), t.meta.partitions))
                .collect()
        })
    }

    /// The node this coordinator runs on.
    pub fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// This broker's node id.
    pub fn node_id(&self) -> u64 {
        self.node.id().get()
    }

    /// The id of the topic named `topic`, if it exists.
    pub fn topic_id(&self, topic: &str) -> Option<crate::topic::TopicUuid> {
        self.node.with_topic(topic, |t| t.uuid()).ok()
    }

    /// The offsets topic's partition count, creating the topic on first use.
    async fn offsets_partitions(&self, group: &str) -> Result<u32> {
        match self.node.topic(OFFSETS_TOPIC) {
            Ok(t) => Ok(t.meta.partitions),
            Err(BrokerError::UnknownTopic { .. }) => {
                let rf = self
                    .config
                    .offsets_replication_factor
                    .min(self.node.brokers().len() as u32)
                    .max(1);
                let meta = TopicMeta {
                    name: OFFSETS_TOPIC.into(),
                    partitions: self.config.offsets_partitions,
                    replication_factor: rf,
                    configs: [
                        ("retention.ms".to_string(), "-1".to_string()),
                        ("retention.bytes".to_string(), "-1".to_string()),
                    ]
                    .into(),
                };
                match self.admin.create_topic(meta, None).await {
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
                Ok(self.node.topic(OFFSETS_TOPIC)?.meta.partitions)
            }
            Err(BrokerError::NotLeader { .. }) => Err(not_coordinator(group, None)),
            Err(e) => Err(e),
        }
    }

    /// The coordinator's node and address for a group (as this broker
    /// knows it: the live leader of a hosted replica, else its preferred
    /// replica as a hint).
    pub async fn find(&self, group: &str) -> Result<(NodeId, String)> {
        validate_group(group)?;
        let n = self.offsets_partitions(group).await?;
        let k = store::partition_for(group, n);
        let leader = match self.node.partition(OFFSETS_TOPIC, k) {
            Ok(p) => {
                let mut status = p.watch_status();
                let elected = status.wait_for(|s| s.leader.is_some());
                match tokio::time::timeout(FIND_WAIT, elected).await {
                    Ok(Ok(s)) => s.leader,
                    _ => None,
                }
            }
            Err(BrokerError::NotLeader { .. }) => self
                .node
                .topic(OFFSETS_TOPIC)?
                .assignment
                .get(k as usize)
                .and_then(|r| r.first().copied()),
            Err(e) => return Err(e),
        };
        let Some(l) = leader else {
            return Err(not_coordinator(group, None));
        };
        match self.node.addr_of(l) {
            Some(addr) => Ok((l, addr)),
            None => Err(not_coordinator(group, None)),
        }
    }

    /// The loaded shard that owns `group`, loading it if this broker just
    /// became the leader of its partition.
    async fn shard(&self, group: &str) -> Result<Arc<Shard>> {
        validate_group(group)?;
        let n = self.offsets_partitions(group).await?;
        let k = store::partition_for(group, n);
        let partition = match self.node.partition(OFFSETS_TOPIC, k) {
            Ok(p) => p,
            Err(BrokerError::NotLeader { leader_addr, .. }) => return Err(not_coordinator(group, leader_addr)),
            Err(e) => return Err(e),
        };
        self.shard_of(k, partition).await.map_err(|e| match e {
            BrokerError::NotLeader { leader_addr, .. } => not_coordinator(group, leader_addr),
            other => other,
        })
    }

    async fn shard_of(&self, k: u32, partition: Arc<Partition>) -> Result<Arc<Shard>> {
        let not_leader = |st: &strand_cluster::ReplicaStatus| BrokerError::NotLeader {
            topic: OFFSETS_TOPIC.into(),
            partition: k,
            leader_addr: st.leader.and_then(|l| self.node.addr_of(l)),
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
        let mut status = partition.watch_status();
        let committed = status.wait_for(|now| !now.is_leader || now.term != st.term || now.commit >= st.last_index);
        match tokio::time::timeout(LOAD_WAIT, committed).await {
            Ok(Ok(now)) if now.is_leader && now.term == st.term => {}
            Ok(Ok(now)) => return Err(not_leader(&now)),
            Ok(Err(_)) => return Err(BrokerError::ShuttingDown),
            Err(_) => {
                return Err(BrokerError::NotLeader {
                    topic: OFFSETS_TOPIC.into(),
                    partition: k,
                    leader_addr: None,
                });
            }
        }
        let stored = {
            let p = Arc::clone(&partition);
            run_blocking("load consumer groups", move || read_groups(&p)).await?
        };
        let shard = Arc::new(Shard::new(partition, st.term, stored));
        tracing::info!(
            topic = OFFSETS_TOPIC,
            partition = k,
            term = %st.term,
            groups = shard.groups().len(),
            "loaded consumer groups"
        );
        self.shards().insert(k, Arc::clone(&shard));
        Ok(shard)
    }

    /// Writes records for `group` to its shard's partition and waits for a
    /// majority, at most [`WRITE_WAIT`]; a lost leadership is
    /// `NOT_COORDINATOR`. A write that timed out may still commit later (as
    /// a produce that timed out), so a caller retrying it is harmless:
    /// commits are idempotent.
    async fn write(&self, shard: &Shard, group: &str, records: &[GroupRecord]) -> Result<()> {
        match tokio::time::timeout(WRITE_WAIT, shard.write_records(&self.node, records)).await {
            Ok(r) => r.map_err(|e| match e {
                BrokerError::NotLeader { leader_addr, .. } => not_coordinator(group, leader_addr),
                other => other,
            }),
            Err(_) => Err(BrokerError::Timeout {
                what: "a majority to store the group's records",
                waited_ms: WRITE_WAIT.as_millis() as u64,
            }),
        }
    }

    pub(crate) fn epoch_record(g: &Group) -> GroupRecord {
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
    fn persist_epoch(&self, shard: &Arc<Shard>, record: GroupRecord) {
        let (node, shard) = (Arc::clone(&self.node), Arc::clone(shard));
        tokio::spawn(async move {
            if let Err(e) = shard.write_records(&node, std::slice::from_ref(&record)).await {
                tracing::debug!(group = record.group(), error = %e, "group epoch not recorded");
            }
        });
    }

    /// Periodic upkeep: expires silent members, ends rebalance delays,
    /// notices new partitions, and drops state of partitions no longer led.
    pub fn tick(&self) {
        let shards: Vec<(u32, Arc<Shard>)> = self.shards().iter().map(|(k, s)| (*k, Arc::clone(s))).collect();
        let counts = self.partition_counts();
        let now = std::time::Instant::now();
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
                    self.persist_epoch(&shard, Self::epoch_record(g));
                }
            }
            groups.retain(|_, g| !g.members.is_empty() || !g.offsets.is_empty() || g.epoch > 0);
        }
    }

    /// Upkeep after topic deletes: writes the tombstones of deleted topics'
    /// offsets in every shard coordinated here (see
    /// [`GroupCoordinator::forget_deleted_topics`]).
    pub async fn forget_deleted_topics_everywhere(&self) {
        for shard in self.current_shards() {
            if let Err(e) = self.forget_deleted_topics(&shard).await {
                tracing::debug!(error = %e, "deleted topics' offsets not forgotten yet; retrying");
            }
        }
    }

    /// The shards this broker currently coordinates.
    fn current_shards(&self) -> Vec<Arc<Shard>> {
        self.shards().values().filter(|s| s.current()).cloned().collect()
    }
}
