//! The broker's node: its identity, its replication loop, the cluster
//! metadata folded from the controller log, and the partition replicas it
//! hosts. Everything above (admin, groups, the data path, services) reaches
//! partitions and metadata through a [`Node`].
//!
//! - [`startup`]: checking the data directory's identity, joining a running
//!   cluster, starting the loop and the controller replica;
//! - [`metadata`]: applying committed controller records in log order and
//!   proposing new ones on the local controller replica;
//! - [`replicas`]: hosting the replicas the metadata assigns here, and
//!   handing leadership back to preferred replicas;
//! - [`recovery`]: opening a replica's log and quarantining a damaged one
//!   (it then recovers through Raft, voting only once whole again);
//! - [`identity`]: the `node.json` file;
//! - [`discovery`]: how a broker with an empty data directory learns its
//!   cluster (and whether the cluster knew it before: a lost disk).
//!
//! Invariants: metadata changes only by applying committed controller
//! records in log order; the set of hosted replicas follows the applied
//! metadata (reconciled after every apply); a partition directory carries the
//! id of the topic it belongs to, so a re-created topic never inherits an old
//! topic's data.

mod discovery;
pub mod identity;
mod metadata;
mod recovery;
mod replicas;
mod startup;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::RwLock;
use strand_cluster::{ClusterError, GrpcTransport, Inbox, NodeId, RaftGroupId, RaftNode, ReplicaStatus};
use strand_storage::Offset;
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::controller::{CONTROLLER_GROUP, MetadataState, TopicState};
use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::topic::TopicUuid;

/// A hosted replica's key: topic name and partition.
pub type ReplicaKey = (String, u32);

/// Threads that sync partition logs at a graceful shutdown.
const SHUTDOWN_SYNC_THREADS: usize = 16;

/// One broker's node.
pub struct Node {
    config: BrokerConfig,
    id: NodeId,
    advertised_addr: String,
    cluster_id: String,
    /// This data directory's incarnation (see `identity`).
    incarnation: String,
    /// The brokers the cluster was formed with (the controller group's
    /// voters). Brokers that joined later are in the metadata;
    /// [`Node::brokers`] lists both.
    founders: BTreeMap<NodeId, String>,
    transport: Arc<GrpcTransport>,
    raft: RaftNode,
    inbox: Arc<dyn Inbox>,
    controller: Arc<Partition>,
    metadata: RwLock<MetadataState>,
    /// Controller-log offset applied so far.
    applied: watch::Sender<Offset>,
    replicas: RwLock<HashMap<ReplicaKey, Arc<Partition>>>,
    /// Serializes this node's metadata proposals.
    proposals: tokio::sync::Mutex<()>,
    /// Whether the data directory was swept of deleted topics' partitions
    /// (once, at the first reconcile after registration).
    swept: std::sync::atomic::AtomicBool,
    /// The producer ids this broker may hand out: the rest of the block the
    /// controller granted it (see [`ProducerIdBlock`]).
    producer_ids: parking_lot::Mutex<ProducerIdBlock>,
    shutdown: watch::Sender<bool>,
    /// TLS and how this node dials its peers.
    security: Arc<crate::security::Security>,
}

/// The rest of a block of producer ids granted to this broker.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ProducerIdBlock {
    /// The next id to hand out.
    next: i64,
    /// One past the last id of the block.
    end: i64,
    /// The first id of the newest block taken.
    granted: i64,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish()
    }
}

impl Node {
    /// TLS, principals and how this node dials its peers.
    pub fn security(&self) -> &Arc<crate::security::Security> {
        &self.security
    }

    /// Refuses `op` on resource `name` of kind `kind` unless an ACL allows
    /// it to `who` (see `Security::authorize`).
    ///
    /// # Errors
    /// `AuthorizationFailed`.
    pub fn authorize(
        &self,
        who: &strand_security::Principal,
        op: crate::controller::acl::AclOperation,
        kind: crate::controller::acl::ResourceType,
        name: &str,
    ) -> Result<()> {
        if !self.security.authorization_enabled() {
            return Ok(());
        }
        self.security.authorize(&self.metadata.read().acls, who, op, kind, name)
    }

    /// Whether `who` may do `op` on `name` (for filtering listings).
    pub fn permits(
        &self,
        who: &strand_security::Principal,
        op: crate::controller::acl::AclOperation,
        kind: crate::controller::acl::ResourceType,
        name: &str,
    ) -> bool {
        !self.security.authorization_enabled() || self.security.permits(&self.metadata.read().acls, who, op, kind, name)
    }

    /// How long the answer to a request of `who` that did `amount` of
    /// `kind` waits, under the quotas of the metadata (zero without one,
    /// and for brokers and super users).
    pub fn quota_delay(
        &self,
        who: &strand_security::Principal,
        kind: crate::security::quota::QuotaKind,
        amount: u64,
    ) -> std::time::Duration {
        use crate::security::quota::QuotaKind;
        let rate = {
            let meta = self.metadata.read();
            if meta.quotas.is_empty() {
                return std::time::Duration::ZERO;
            }
            let limits = meta.quotas.for_principal(&who.to_string());
            match kind {
                QuotaKind::Produce => limits.produce_bytes_per_sec,
                QuotaKind::Fetch => limits.fetch_bytes_per_sec,
                QuotaKind::Requests => limits.requests_per_sec,
            }
        };
        match rate {
            Some(rate) if !self.security.is_super_user(who) => {
                self.security.throttle().charge(&who.to_string(), kind, amount, rate)
            }
            _ => std::time::Duration::ZERO,
        }
    }

    /// The user a password token names, if the token verifies with the
    /// cluster's key, has not expired and its user still exists.
    pub fn verify_token(&self, token: &str) -> Option<String> {
        let meta = self.metadata.read();
        let key = meta.users.token_key()?;
        let (user, _) = strand_security::scram::verify_token(key, token, strand_storage::now_ms())?;
        meta.users.contains(&user).then_some(user)
    }

    /// Whether `who` is allowed `op` on some resource of kind `kind`.
    pub fn permits_any(
        &self,
        who: &strand_security::Principal,
        op: crate::controller::acl::AclOperation,
        kind: crate::controller::acl::ResourceType,
    ) -> bool {
        !self.security.authorization_enabled()
            || self.security.is_super_user(who)
            || self.metadata.read().acls.allows_any(&who.to_string(), op, kind)
    }

    /// The next producer id of this broker's granted block, if one is left.
    pub(crate) fn take_producer_id(&self) -> Option<i64> {
        let mut ids = self.producer_ids.lock();
        if ids.next >= ids.end {
            return None;
        }
        ids.next += 1;
        Some(ids.next - 1)
    }

    /// Takes a block the controller granted, unless it is one taken before
    /// (two requests that each asked for a block may both read the newer
    /// one: it must be handed out once).
    pub(crate) fn grant_producer_ids(&self, first: i64, count: u32) {
        let mut ids = self.producer_ids.lock();
        if first > ids.granted {
            *ids = ProducerIdBlock {
                next: first,
                end: first + i64::from(count),
                granted: first,
            };
        }
    }

    /// Settings.
    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address clients and peers use for this broker.
    pub fn advertised_addr(&self) -> &str {
        &self.advertised_addr
    }

    /// The cluster's id.
    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// This data directory's incarnation.
    pub fn incarnation(&self) -> &str {
        &self.incarnation
    }

    /// Whether the applied metadata has this data directory registered.
    pub fn is_registered(&self) -> bool {
        self.metadata.read().registered_as(self.id, &self.incarnation)
    }

    /// The brokers the cluster was formed with.
    pub fn founders(&self) -> &BTreeMap<NodeId, String> {
        &self.founders
    }

    /// The replication loop.
    pub fn raft(&self) -> &RaftNode {
        &self.raft
    }

    /// Where peers' Raft messages are delivered.
    pub fn inbox(&self) -> &Arc<dyn Inbox> {
        &self.inbox
    }

    /// A copy of the applied metadata.
    pub fn metadata(&self) -> MetadataState {
        self.metadata.read().clone()
    }

    /// Runs `f` on the applied metadata without copying it (for per-request
    /// checks; `f` must not block).
    pub fn with_metadata<R>(&self, f: impl FnOnce(&MetadataState) -> R) -> R {
        f(&self.metadata.read())
    }

    /// A topic by name. Until this broker has caught up with the cluster
    /// metadata an unknown topic is `NOT_LEADER` (retriable), not
    /// `UNKNOWN_TOPIC`: a broker that just started must not deny a topic it
    /// has not learned about yet.
    pub fn topic(&self, name: &str) -> Result<TopicState> {
        let found = self.metadata.read().topics.get(name).cloned();
        found.ok_or_else(|| self.missing_topic(name))
    }

    /// `f` of the topic named `name`, under the metadata lock (no copy of
    /// the topic, whose assignment may list thousands of partitions).
    pub fn with_topic<R>(&self, name: &str, f: impl FnOnce(&TopicState) -> R) -> Result<R> {
        let found = self.metadata.read().topics.get(name).map(f);
        found.ok_or_else(|| self.missing_topic(name))
    }

    /// The answer for a topic the metadata does not hold: unknown, or not
    /// known *yet* (retriable) while this broker's metadata is behind.
    fn missing_topic(&self, name: &str) -> BrokerError {
        if self.metadata_caught_up() {
            BrokerError::UnknownTopic { topic: name.into() }
        } else {
            BrokerError::NotLeader {
                topic: name.into(),
                partition: 0,
                leader_addr: None,
            }
        }
    }

    /// The hosted replica of a partition; `UNKNOWN_TOPIC`,
    /// `UNKNOWN_PARTITION`, or `NOT_LEADER` (naming a replica that hosts it)
    /// when this broker has none.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        // Looked up under the lock without copying the topic: a topic of
        // thousands of partitions is read once per partition of a fetch.
        let found = self.with_metadata(|m| {
            m.topics.get(topic).map(|t| match t.assignment.get(partition as usize) {
                Some(replicas) => Ok(replicas.first().copied()),
                None => Err(t.meta.partitions),
            })
        });
        let first = match found {
            Some(Ok(first)) => first,
            Some(Err(partitions)) => {
                return Err(BrokerError::UnknownPartition {
                    topic: topic.into(),
                    partition,
                    partitions,
                });
            }
            None => return Err(self.missing_topic(topic)),
        };
        if let Some(p) = self.replicas.read().get(&(topic.to_string(), partition)) {
            return Ok(Arc::clone(p));
        }
        Err(BrokerError::NotLeader {
            topic: topic.into(),
            partition,
            leader_addr: first.and_then(|r| self.addr_of(r)),
        })
    }

    /// The topic named `name`, checked against the id the client knows it
    /// by (if it sent one): `UNKNOWN_TOPIC_ID` when that is not its id.
    pub fn topic_as(&self, name: &str, id: Option<TopicUuid>) -> Result<TopicState> {
        let t = self.topic(name)?;
        match id {
            Some(id) if id != t.uuid() => Err(BrokerError::UnknownTopicId {
                topic: name.into(),
                topic_id: id.to_string(),
            }),
            _ => Ok(t),
        }
    }

    /// [`Node::partition`] of the topic with the id the client knows it by
    /// (if it sent one).
    pub fn partition_as(&self, topic: &str, id: Option<TopicUuid>, partition: u32) -> Result<Arc<Partition>> {
        let Some(id) = id else {
            return self.partition(topic, partition);
        };
        let unknown = || BrokerError::UnknownTopicId {
            topic: topic.into(),
            topic_id: id.to_string(),
        };
        // Checked under the lock, without copying the topic (hot path).
        let group = self.with_metadata(|m| {
            m.topics
                .get(topic)
                .map(|t| (t.uuid() == id).then(|| t.raft_group(partition)))
        });
        let group = match group {
            Some(Some(g)) => g,
            Some(None) => return Err(unknown()),
            // No such topic: the same answer as without an id.
            None => return self.partition(topic, partition),
        };
        let p = self.partition(topic, partition)?;
        // The replica hosted under the name may still be an older topic's
        // (reconciling is under way): it is not the one asked for.
        if p.raft_group() != group {
            return Err(unknown());
        }
        Ok(p)
    }

    /// Hosted replicas of a topic's partitions (`None` where not hosted).
    pub fn hosted(&self, topic: &TopicState) -> Vec<Option<Arc<Partition>>> {
        let replicas = self.replicas.read();
        (0..topic.meta.partitions)
            .map(|p| replicas.get(&(topic.meta.name.clone(), p)).cloned())
            .collect()
    }

    /// Every hosted replica.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.replicas.read().values().cloned().collect()
    }

    /// The hosted partition replicas for which `wanted` holds (chosen under
    /// the lock, so only those are copied out).
    pub fn partitions_where(&self, wanted: impl Fn(&Partition) -> bool) -> Vec<Arc<Partition>> {
        self.replicas.read().values().filter(|p| wanted(p)).cloned().collect()
    }

    /// The hosted replica (or the controller) of a Raft group.
    pub fn replica_of_group(&self, group: RaftGroupId) -> Option<Arc<Partition>> {
        if group == CONTROLLER_GROUP {
            return Some(Arc::clone(&self.controller));
        }
        self.replicas.read().values().find(|p| p.raft_group() == group).cloned()
    }

    /// Address of a node, if it is a broker of the cluster.
    pub fn addr_of(&self, node: NodeId) -> Option<String> {
        if node == self.id {
            return Some(self.advertised_addr.clone());
        }
        self.founders
            .get(&node)
            .cloned()
            .or_else(|| self.metadata.read().joined.get(&node).cloned())
    }

    /// Every broker of the cluster (formed with or joined since): node id →
    /// address.
    pub fn brokers(&self) -> BTreeMap<NodeId, String> {
        let mut all = self.founders.clone();
        for (id, addr) in &self.metadata.read().joined {
            all.entry(*id).or_insert_with(|| addr.clone());
        }
        all.insert(self.id, self.advertised_addr.clone());
        all
    }

    /// Maps a replication error to the wire: `NOT_LEADER` names the leader's
    /// address when it is known.
    pub fn not_leader(&self, topic: &str, partition: u32, e: ClusterError) -> BrokerError {
        match e {
            ClusterError::NotLeader { leader, .. } => BrokerError::NotLeader {
                topic: topic.into(),
                partition,
                leader_addr: leader.and_then(|l| self.addr_of(l)),
            },
            other => other.into(),
        }
    }

    /// The controller group's status as this broker sees it.
    pub fn controller_status(&self) -> ReplicaStatus {
        self.controller.status()
    }

    /// The controller log's high watermark (committed records end there).
    pub fn controller_high_watermark(&self) -> Offset {
        self.controller.high_watermark()
    }

    /// The controller group's leader, if known.
    pub fn controller_leader(&self) -> Option<NodeId> {
        self.controller.status().leader
    }

    /// A receiver that changes with the controller group's status.
    pub fn watch_controller(&self) -> watch::Receiver<ReplicaStatus> {
        self.controller.watch_status()
    }

    /// Ready to serve: the controller has a leader, the committed metadata is
    /// applied, and every hosted partition knows its leader.
    pub fn readiness(&self) -> std::result::Result<(), String> {
        if *self.shutdown.borrow() {
            return Err("shutting down".into());
        }
        if !self.metadata_caught_up() {
            return Err("cluster metadata not caught up yet".into());
        }
        // Checked five times a second: counted under the lock, nothing copied.
        let replicas = self.replicas.read();
        let mut waiting = replicas.values().filter(|p| p.leader().is_none());
        if let Some(first) = waiting.next() {
            return Err(format!(
                "{} partitions without a leader (first: {}-{})",
                1 + waiting.count(),
                first.topic(),
                first.id()
            ));
        }
        Ok(())
    }

    /// Becomes `true` when the broker starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells long-lived requests and background tasks to end.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Stops replication and syncs every log (graceful shutdown). Blocks.
    pub fn shutdown(&self) {
        self.raft.shutdown();
        let mut all = self.all_partitions();
        all.push(Arc::clone(&self.controller));
        // In parallel: one after another, a broker of 10,000 partitions
        // took many seconds to sync them (the file system also groups
        // concurrent syncs into fewer journal commits).
        let chunk = all.len().div_ceil(SHUTDOWN_SYNC_THREADS).max(1);
        std::thread::scope(|scope| {
            for part in all.chunks(chunk) {
                scope.spawn(move || {
                    for p in part {
                        if let Err(e) = p.flush() {
                            tracing::error!(topic = %p.topic(), partition = p.id(), error = %e, "flush at shutdown failed");
                        }
                    }
                });
            }
        });
    }
}
