//! Cluster metadata as a replicated state machine: the controller group
//! (Raft group 0) stores commands as records of its log; every broker folds
//! the committed records, in order, into the same [`MetadataState`].
//!
//! Invariants: applying is deterministic and idempotent per command (a
//! command that no longer fits the state, such as creating an existing
//! topic, changes nothing), so every broker that applied the same prefix of
//! the log has the same state. Replica placement is decided once, by the
//! proposer ([`placement`]), and travels in the command.
//!
//! This module is pure data: no I/O, no Raft. The broker's node folds the
//! log into it (`node::metadata`); admin operations plan commands from it.

pub mod acl;
pub mod placement;
pub mod producer_ids;
pub mod quota;
pub mod users;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use strand_cluster::{NodeId, RaftGroupId};

use crate::topic::{TopicMeta, TopicUuid};

/// The Raft group that holds cluster metadata.
pub const CONTROLLER_GROUP: RaftGroupId = RaftGroupId(0);

/// A topic as the cluster knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicState {
    /// Name, partitions, replication factor, configs.
    pub meta: TopicMeta,
    /// Cluster-unique id; partition `p` is Raft group `id << 16 | p`.
    pub id: u64,
    /// The id clients see (made at creation; `None` for a topic created
    /// before topics had one: see [`TopicState::uuid`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<TopicUuid>,
    /// Replicas of each partition, preferred leader first.
    pub assignment: Vec<Vec<NodeId>>,
    /// Each partition's replicas when its Raft group was created (recorded
    /// at the first reassignment; empty while nothing moved). A new replica
    /// starts from this configuration and replays the group's membership
    /// changes from there.
    #[serde(default)]
    pub origin: Vec<Vec<NodeId>>,
    /// Partitions whose replicas are moving, to these replicas.
    #[serde(default)]
    pub moving: BTreeMap<u32, Vec<NodeId>>,
}

impl TopicState {
    /// The id clients see.
    pub fn uuid(&self) -> TopicUuid {
        self.uuid.unwrap_or(TopicUuid::legacy(self.id))
    }

    /// Raft group of partition `p`.
    pub fn raft_group(&self, p: u32) -> RaftGroupId {
        raft_group_of(self.id, p)
    }

    /// The configuration partition `p`'s Raft group was created with.
    pub fn origin_of(&self, p: u32) -> Vec<NodeId> {
        self.origin
            .get(p as usize)
            .or_else(|| self.assignment.get(p as usize))
            .cloned()
            .unwrap_or_default()
    }

    /// Brokers that host partition `p`: its replicas, then those it is
    /// moving to.
    pub fn hosts_of(&self, p: u32) -> Vec<NodeId> {
        let mut out = self.assignment.get(p as usize).cloned().unwrap_or_default();
        for n in self.moving.get(&p).into_iter().flatten() {
            if !out.contains(n) {
                out.push(*n);
            }
        }
        out
    }
}

/// Raft group id of a topic's partition.
pub fn raft_group_of(topic_id: u64, partition: u32) -> RaftGroupId {
    RaftGroupId((topic_id << 16) | u64::from(partition))
}

/// A change to cluster metadata, as stored in the controller log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MetadataCommand {
    /// Create a topic with a placement.
    CreateTopic {
        /// The topic.
        topic: TopicState,
    },
    /// Add partitions to a topic.
    AddPartitions {
        /// Its name.
        name: String,
        /// Its id (a re-created topic is not grown by a late command).
        id: u64,
        /// The partition count it grows from.
        from: u32,
        /// Replicas of each new partition, in partition order.
        added: Vec<Vec<NodeId>>,
    },
    /// Start moving a partition's replicas to `replicas` (the partition's
    /// leader adds, promotes and removes replicas one at a time).
    Reassign {
        /// Topic.
        name: String,
        /// Its id.
        id: u64,
        /// Partition.
        partition: u32,
        /// The replicas it moves to, preferred leader first.
        replicas: Vec<NodeId>,
    },
    /// The partition's Raft group now has exactly `replicas`.
    FinishReassign {
        /// Topic.
        name: String,
        /// Its id.
        id: u64,
        /// Partition.
        partition: u32,
        /// Must equal the reassignment's target.
        replicas: Vec<NodeId>,
    },
    /// A broker started with this data directory (its incarnation, a
    /// random id written when the directory was created). Recorded once
    /// per incarnation: a replica a broker hosts for a topic created before
    /// its current incarnation was registered may have acknowledged entries
    /// with a disk it no longer has, so it starts recovering when its
    /// directory is missing.
    RegisterBroker {
        /// Its node id.
        id: NodeId,
        /// Its data directory's incarnation.
        incarnation: String,
    },
    /// A broker joined the running cluster.
    AddBroker {
        /// Its node id.
        id: NodeId,
        /// Its address.
        addr: String,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Its name.
        name: String,
        /// Its id, so a late delete never removes a re-created topic.
        id: u64,
    },
    /// Grant a broker the block of producer ids starting at `first`.
    AllocateProducerIds {
        /// The broker.
        broker: NodeId,
        /// First id (the state's next one when planned).
        first: i64,
        /// How many.
        count: u32,
    },
    /// A producer with a stable key gets this id and epoch.
    InitProducerKey {
        /// Its key.
        key: String,
        /// What it gets.
        producer: producer_ids::KeyedProducer,
    },
    /// Add access control entries.
    AddAcls {
        /// The entries (checked when planned).
        bindings: Vec<acl::AclBinding>,
    },
    /// Remove every access control entry the filter matches.
    RemoveAcls {
        /// Which.
        filter: acl::AclFilter,
    },
    /// Create a user or change its password.
    UpsertUser {
        /// Its name.
        name: String,
        /// What the server keeps of its password.
        credential: users::StoredCredential,
        /// The cluster's token signing key, if it has none yet (made by
        /// the broker that took the request).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token_key: Option<users::Secret>,
    },
    /// Delete a user (its tokens stop working).
    DeleteUser {
        /// Its name.
        name: String,
    },
    /// Set a principal's (or the default) quota; unlimited removes it.
    SetQuota {
        /// `User:<name>`, or `<default>`.
        entity: String,
        /// The limits.
        limits: quota::QuotaLimits,
    },
}

/// The metadata every broker derives from the controller log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetadataState {
    /// Topics by name.
    pub topics: BTreeMap<String, TopicState>,
    /// The next topic id to hand out.
    pub next_topic_id: u64,
    /// Brokers that joined after the cluster was formed (id → address).
    pub joined: BTreeMap<NodeId, String>,
    /// Each broker's registered data directory (see
    /// [`MetadataCommand::RegisterBroker`]).
    pub registered: BTreeMap<NodeId, Registration>,
    /// Ids of deleted topics: what is stored under one of them (committed
    /// offsets) is known to belong to no topic, whatever exists now under
    /// the same name.
    pub deleted: BTreeSet<TopicUuid>,
    /// Producer ids handed out (see [`producer_ids`]).
    pub producer_ids: producer_ids::ProducerIdState,
    /// Access control lists (see [`acl`]).
    pub acls: acl::AclSet,
    /// Client quotas (see [`quota`]).
    pub quotas: quota::QuotaSet,
    /// Users who authenticate with a password (see [`users`]).
    pub users: users::Users,
}

/// A broker's data directory as the cluster recorded it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The directory's incarnation.
    pub incarnation: String,
    /// Replicas of topics with a lower id may have existed on an earlier
    /// disk of this broker (0 for its first directory: none did).
    pub first_topic_id: u64,
}

impl MetadataState {
    /// Applies one committed command; returns whether anything changed.
    pub fn apply(&mut self, c: &MetadataCommand) -> bool {
        match c {
            MetadataCommand::CreateTopic { topic } => {
                self.next_topic_id = self.next_topic_id.max(topic.id + 1);
                if self.topics.contains_key(&topic.meta.name) {
                    return false;
                }
                self.topics.insert(topic.meta.name.clone(), topic.clone());
                true
            }
            MetadataCommand::AddPartitions { name, id, from, added } => match self.topics.get_mut(name) {
                // Only from the count it was computed for, so a replay or a
                // duplicate adds nothing.
                Some(t) if t.id == *id && t.meta.partitions == *from && !added.is_empty() => {
                    if !t.origin.is_empty() {
                        t.origin.extend(added.iter().cloned());
                    }
                    t.assignment.extend(added.iter().cloned());
                    t.meta.partitions = t.assignment.len() as u32;
                    true
                }
                _ => false,
            },
            MetadataCommand::Reassign {
                name,
                id,
                partition,
                replicas,
            } => match self.topics.get_mut(name) {
                Some(t) if t.id == *id && (*partition as usize) < t.assignment.len() => {
                    if t.origin.is_empty() {
                        t.origin = t.assignment.clone();
                    }
                    if t.assignment[*partition as usize] == *replicas {
                        t.moving.remove(partition).is_some()
                    } else {
                        t.moving.insert(*partition, replicas.clone()) != Some(replicas.clone())
                    }
                }
                _ => false,
            },
            MetadataCommand::FinishReassign {
                name,
                id,
                partition,
                replicas,
            } => match self.topics.get_mut(name) {
                Some(t) if t.id == *id && t.moving.get(partition) == Some(replicas) => {
                    t.moving.remove(partition);
                    t.assignment[*partition as usize] = replicas.clone();
                    true
                }
                _ => false,
            },
            MetadataCommand::RegisterBroker { id, incarnation } => {
                if self.registered.get(id).is_some_and(|r| r.incarnation == *incarnation) {
                    return false;
                }
                // A broker's first directory ever: no earlier disk of it held
                // anything (replicas are hosted only once registered), so
                // every topic is new to it. A later one replaces a disk that
                // may have held replicas of every topic created until now.
                let first_topic_id = if self.registered.contains_key(id) {
                    self.allocate_topic_id()
                } else {
                    0
                };
                self.registered.insert(
                    *id,
                    Registration {
                        incarnation: incarnation.clone(),
                        first_topic_id,
                    },
                );
                true
            }
            MetadataCommand::AddBroker { id, addr } => {
                if self.joined.get(id) == Some(addr) {
                    return false;
                }
                self.joined.insert(*id, addr.clone());
                true
            }
            MetadataCommand::DeleteTopic { name, id } => match self.topics.get(name) {
                Some(t) if t.id == *id => {
                    self.deleted.insert(t.uuid());
                    self.topics.remove(name);
                    true
                }
                _ => false,
            },
            MetadataCommand::AllocateProducerIds { broker, first, count } => {
                self.producer_ids.apply_block(*broker, *first, *count)
            }
            MetadataCommand::InitProducerKey { key, producer } => self.producer_ids.apply_key(key, *producer),
            MetadataCommand::AddAcls { bindings } => self.acls.add(bindings),
            MetadataCommand::RemoveAcls { filter } => self.acls.remove(filter),
            MetadataCommand::SetQuota { entity, limits } => self.quotas.set(entity, *limits),
            MetadataCommand::UpsertUser {
                name,
                credential,
                token_key,
            } => self.users.upsert(name, credential, token_key.as_ref()),
            MetadataCommand::DeleteUser { name } => self.users.delete(name),
        }
    }

    /// The id the next created topic gets (ids start at 1; 0 is the
    /// controller).
    pub fn allocate_topic_id(&self) -> u64 {
        self.next_topic_id.max(1)
    }

    /// Whether `node` registered the data directory `incarnation`: a broker
    /// hosts partition replicas only from then on, so every replica a
    /// directory ever held was created after its registration.
    pub fn registered_as(&self, node: NodeId, incarnation: &str) -> bool {
        self.registered.get(&node).is_some_and(|r| r.incarnation == incarnation)
    }

    /// Whether `node`'s replica of topic `topic_id`, if its directory is
    /// missing, can be trusted never to have existed on an earlier disk of
    /// `node`: the topic was created after `node` registered `incarnation`.
    /// Otherwise an earlier disk may have acknowledged entries of it, and
    /// the replica recovers before it votes.
    pub fn replica_is_new(&self, node: NodeId, incarnation: &str, topic_id: u64) -> bool {
        self.registered
            .get(&node)
            .is_some_and(|r| r.incarnation == incarnation && topic_id >= r.first_topic_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    fn topic(name: &str, id: u64) -> TopicState {
        TopicState {
            meta: TopicMeta {
                name: name.into(),
                partitions: 2,
                replication_factor: 1,
                configs: BTreeMap::new(),
            },
            id,
            uuid: Some(TopicUuid::random()),
            assignment: vec![n(&[1]), n(&[1])],
            origin: Vec::new(),
            moving: BTreeMap::new(),
        }
    }

    #[test]
    fn a_replica_is_new_only_for_topics_created_after_its_broker_registered_this_disk() {
        let mut s = MetadataState::default();
        s.apply(&MetadataCommand::CreateTopic { topic: topic("old", 1) });
        let register = |inc: &str| MetadataCommand::RegisterBroker {
            id: NodeId(1),
            incarnation: inc.into(),
        };
        assert!(!s.replica_is_new(NodeId(1), "a", 1), "not registered yet: unknown");
        assert!(s.apply(&register("a")));
        assert!(!s.apply(&register("a")), "the same incarnation again changes nothing");
        s.apply(&MetadataCommand::CreateTopic { topic: topic("new", 2) });
        assert!(
            s.replica_is_new(NodeId(1), "a", 1),
            "its first disk: nothing existed on an earlier one"
        );
        assert!(s.replica_is_new(NodeId(1), "a", 2));
        assert!(!s.replica_is_new(NodeId(2), "a", 2), "another broker");
        // A replaced disk: nothing created before its registration is new.
        assert!(s.apply(&register("b")));
        assert!(!s.replica_is_new(NodeId(1), "b", 2));
        assert!(!s.replica_is_new(NodeId(1), "a", 2), "the old disk is not this one");
    }

    #[test]
    fn a_reassignment_records_the_origin_and_finishes_only_at_its_target() {
        let mut s = MetadataState::default();
        s.apply(&MetadataCommand::CreateTopic { topic: topic("a", 1) });
        let start = MetadataCommand::Reassign {
            name: "a".into(),
            id: 1,
            partition: 0,
            replicas: n(&[2]),
        };
        assert!(s.apply(&start));
        assert!(!s.apply(&start), "idempotent");
        let t = &s.topics["a"];
        assert_eq!(t.origin_of(0), n(&[1]));
        assert_eq!(t.hosts_of(0), n(&[1, 2]));
        let wrong = MetadataCommand::FinishReassign {
            name: "a".into(),
            id: 1,
            partition: 0,
            replicas: n(&[3]),
        };
        assert!(!s.apply(&wrong), "not the target");
        assert!(s.apply(&MetadataCommand::FinishReassign {
            name: "a".into(),
            id: 1,
            partition: 0,
            replicas: n(&[2]),
        }));
        let t = &s.topics["a"];
        assert_eq!(
            (t.assignment[0].clone(), t.hosts_of(0), t.origin_of(0)),
            (n(&[2]), n(&[2]), n(&[1]))
        );
        assert!(t.moving.is_empty());
    }

    #[test]
    fn applying_is_idempotent_and_deletes_only_the_same_topic() {
        let mut s = MetadataState::default();
        assert!(s.apply(&MetadataCommand::CreateTopic { topic: topic("a", 1) }));
        assert!(
            !s.apply(&MetadataCommand::CreateTopic { topic: topic("a", 2) }),
            "name taken"
        );
        assert_eq!(s.allocate_topic_id(), 3, "ids are never reused");
        assert!(
            !s.apply(&MetadataCommand::DeleteTopic {
                name: "a".into(),
                id: 2
            }),
            "wrong id"
        );
        let uuid = s.topics["a"].uuid();
        assert!(s.apply(&MetadataCommand::DeleteTopic {
            name: "a".into(),
            id: 1
        }));
        assert!(s.topics.is_empty());
        assert!(s.deleted.contains(&uuid), "its id is known deleted");
    }

    #[test]
    fn partitions_are_added_once_and_only_to_the_same_topic() {
        let mut s = MetadataState::default();
        let mut t = topic("a", 1);
        t.meta.partitions = 2;
        t.assignment = vec![n(&[1]), n(&[2])];
        s.apply(&MetadataCommand::CreateTopic { topic: t });
        let add = MetadataCommand::AddPartitions {
            name: "a".into(),
            id: 1,
            from: 2,
            added: vec![n(&[3]), n(&[1])],
        };
        assert!(s.apply(&add));
        assert!(!s.apply(&add), "a duplicate adds nothing");
        assert_eq!(s.topics["a"].meta.partitions, 4);
        assert_eq!(s.topics["a"].assignment.len(), 4);
        let other = MetadataCommand::AddPartitions {
            name: "a".into(),
            id: 9,
            from: 4,
            added: vec![n(&[1])],
        };
        assert!(!s.apply(&other), "another topic's id");
    }

    #[test]
    fn commands_round_trip_through_json() {
        let c = MetadataCommand::CreateTopic { topic: topic("t", 4) };
        let bytes = serde_json::to_vec(&c).unwrap();
        assert_eq!(serde_json::from_slice::<MetadataCommand>(&bytes).unwrap(), c);
    }
}
