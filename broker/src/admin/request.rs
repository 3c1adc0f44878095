//! Metadata changes as requests, and how the controller's leader turns one
//! into a [`MetadataCommand`] for the controller log.
//!
//! A request says what the user wants ("create topic t with 3 partitions");
//! [`MetadataRequest::plan`] decides, from the applied metadata, what that
//! means (which topic id, which brokers) or why it cannot be done. Planning
//! is pure, so every rule here is tested without a cluster; it runs only on
//! the controller's leader, under its proposal lock, so two plans never
//! race.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strand_cluster::NodeId;
use strand_storage::LogConfig;

use crate::controller::placement::place;
use crate::controller::{MetadataCommand, MetadataState, TopicState};
use crate::error::{BrokerError, Result};
use crate::groups::OFFSETS_TOPIC;
use crate::topic::{self, TopicMeta, TopicUuid};

/// A change to cluster metadata, as a broker submits it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum MetadataRequest {
    /// Create a topic.
    CreateTopic {
        /// Name, partitions, replication factor, configs.
        meta: TopicMeta,
        /// The id clients will see, made by the broker that took the
        /// request (so planning stays pure); a request from a broker that
        /// did not make one gets one when planned.
        #[serde(default)]
        uuid: Option<TopicUuid>,
    },
    /// Grow a topic to `total` partitions.
    AddPartitions {
        /// Topic.
        name: String,
        /// The new partition count.
        total: u32,
    },
    /// Start moving a partition's replicas.
    Reassign {
        /// Topic.
        name: String,
        /// Partition.
        partition: u32,
        /// Target replicas, preferred leader first.
        replicas: Vec<NodeId>,
    },
    /// A partition's leader reports its group now has exactly the target.
    FinishReassign {
        /// Topic.
        name: String,
        /// Partition.
        partition: u32,
        /// The target it reached.
        replicas: Vec<NodeId>,
    },
    /// Record the data directory a broker started with.
    RegisterBroker {
        /// Its node id.
        id: NodeId,
        /// Its directory's incarnation.
        incarnation: String,
    },
    /// Admit a broker with an empty data directory.
    AddBroker {
        /// Its node id.
        id: NodeId,
        /// Its address.
        addr: String,
    },
    /// Delete a topic.
    DeleteTopic {
        /// Topic.
        name: String,
    },
    /// Grant a broker the next block of producer ids.
    AllocateProducerIds {
        /// The broker.
        broker: NodeId,
    },
    /// Give the producer with a stable key its id and a new epoch.
    InitProducerKey {
        /// Its key.
        key: String,
        /// Tells this request's outcome from a concurrent one's.
        nonce: u64,
        /// The caller's current id and epoch, when it asks for the next
        /// epoch (it must still be the newest).
        #[serde(default)]
        expected: Option<(i64, i16)>,
    },
    /// Add access control entries.
    AddAcls {
        /// The entries.
        bindings: Vec<crate::controller::acl::AclBinding>,
    },
    /// Remove the access control entries a filter matches.
    RemoveAcls {
        /// Which.
        filter: crate::controller::acl::AclFilter,
    },
    /// Create a user or change its password.
    UpsertUser {
        /// Its name.
        name: String,
        /// What the server keeps of its password.
        credential: crate::controller::users::StoredCredential,
        /// A token signing key for the cluster, used if it has none.
        token_key: crate::controller::users::Secret,
    },
    /// Delete a user.
    DeleteUser {
        /// Its name.
        name: String,
    },
    /// Set an entity's quota.
    SetQuota {
        /// `User:<name>`, `ANONYMOUS` or `<default>`.
        entity: String,
        /// The limits (all unlimited removes the entity's quota).
        limits: crate::controller::quota::QuotaLimits,
    },
}

/// What planning needs besides the metadata.
#[derive(Clone, Debug)]
pub struct PlanContext<'a> {
    /// Every broker of the cluster.
    pub brokers: &'a [NodeId],
    /// The brokers the cluster was formed with (they never "join").
    pub founders: &'a [NodeId],
    /// The log settings topic configs override.
    pub log_defaults: &'a LogConfig,
}

fn topic_of<'a>(meta: &'a MetadataState, name: &str) -> Result<&'a TopicState> {
    meta.topics
        .get(name)
        .ok_or_else(|| BrokerError::UnknownTopic { topic: name.into() })
}

fn refuse_internal(name: &str, reason: &'static str) -> Result<()> {
    if name.starts_with("__") {
        return Err(BrokerError::InvalidTopic {
            name: name.into(),
            reason,
        });
    }
    Ok(())
}

/// Checks a replica list against the cluster's brokers.
pub fn validate_replicas(brokers: &[NodeId], replicas: &[NodeId]) -> Result<()> {
    if replicas.is_empty() {
        return Err(BrokerError::InvalidRequest {
            reason: "a partition needs at least one replica".into(),
        });
    }
    let mut seen = std::collections::BTreeSet::new();
    for r in replicas {
        if !brokers.contains(r) {
            return Err(BrokerError::InvalidRequest {
                reason: format!("broker {r} is not in the cluster (brokers: {brokers:?})"),
            });
        }
        if !seen.insert(r) {
            return Err(BrokerError::InvalidRequest {
                reason: format!("broker {r} appears twice"),
            });
        }
    }
    Ok(())
}

fn validate_new_topic(meta: &TopicMeta, ctx: &PlanContext<'_>) -> Result<()> {
    // The one internal topic created through this path, by the group
    // coordinator.
    if meta.name != OFFSETS_TOPIC {
        topic::validate_name(&meta.name)?;
    }
    if meta.partitions == 0 || meta.partitions > topic::MAX_PARTITIONS {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "partitions must be in 1..={}, got {}",
                topic::MAX_PARTITIONS,
                meta.partitions
            ),
        });
    }
    let brokers = ctx.brokers.len() as u32;
    if meta.replication_factor == 0 || meta.replication_factor > brokers {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "replication factor must be in 1..={brokers} (the brokers available), got {}",
                meta.replication_factor
            ),
        });
    }
    topic::log_config(ctx.log_defaults, &meta.configs)?;
    Ok(())
}

impl MetadataRequest {
    /// Checks the parts of a request that do not depend on the metadata, so
    /// a broker can refuse it before forwarding it.
    pub fn check(&self) -> Result<()> {
        match self {
            MetadataRequest::CreateTopic { meta, .. } if meta.name != OFFSETS_TOPIC => topic::validate_name(&meta.name),
            MetadataRequest::AddPartitions { name, .. } => refuse_internal(name, "internal topics cannot be changed"),
            MetadataRequest::DeleteTopic { name } => refuse_internal(name, "internal topics cannot be deleted"),
            MetadataRequest::Reassign { name, .. } | MetadataRequest::FinishReassign { name, .. }
                if name == "__controller" =>
            {
                Err(BrokerError::InvalidTopic {
                    name: name.clone(),
                    reason: "the controller's replicas are the brokers the cluster was formed with",
                })
            }
            MetadataRequest::InitProducerKey { key, .. } if key.is_empty() || key.len() > 256 => {
                Err(BrokerError::InvalidRequest {
                    reason: format!("a producer id key must be 1 to 256 bytes, got {}", key.len()),
                })
            }
            MetadataRequest::AddBroker { id, addr } if id.get() == 0 || !addr.contains(':') => {
                Err(BrokerError::InvalidRequest {
                    reason: format!(
                        "a joining broker needs a node id > 0 and a host:port address, got {id} at {addr:?}"
                    ),
                })
            }
            MetadataRequest::UpsertUser { name, credential, .. } => {
                let valid = !name.is_empty()
                    && name.len() <= 128
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c));
                if !valid {
                    return Err(BrokerError::InvalidRequest {
                        reason: format!("user names are 1 to 128 of letters, digits and -_.@, not {name:?}"),
                    });
                }
                match credential.problem() {
                    Some(p) => Err(BrokerError::InvalidRequest {
                        reason: format!("user {name}: {p}"),
                    }),
                    None => Ok(()),
                }
            }
            MetadataRequest::SetQuota { entity, limits } => {
                let named = entity == crate::controller::quota::DEFAULT_ENTITY
                    || matches!(
                        strand_security::Principal::parse(entity),
                        Some(strand_security::Principal::User(_) | strand_security::Principal::Anonymous)
                    );
                if !named {
                    return Err(BrokerError::InvalidRequest {
                        reason: format!("a quota is for User:<name>, ANONYMOUS or the default, not {entity:?}"),
                    });
                }
                let zero = [
                    limits.produce_bytes_per_sec,
                    limits.fetch_bytes_per_sec,
                    limits.requests_per_sec,
                ]
                .contains(&Some(0));
                if zero {
                    return Err(BrokerError::InvalidRequest {
                        reason: "a quota's rate must be positive (leave it out for no limit)".into(),
                    });
                }
                Ok(())
            }
            MetadataRequest::AddAcls { bindings } => {
                if bindings.is_empty() {
                    return Err(BrokerError::InvalidRequest {
                        reason: "no ACL to add".into(),
                    });
                }
                match bindings.iter().find_map(|b| b.problem().map(|p| (b, p))) {
                    Some((b, problem)) => Err(BrokerError::InvalidRequest {
                        reason: format!("ACL {b}: {problem}"),
                    }),
                    None => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// The command that carries out this request on `meta`, or why it
    /// cannot be carried out.
    pub fn plan(&self, meta: &MetadataState, ctx: &PlanContext<'_>) -> Result<MetadataCommand> {
        self.check()?;
        match self {
            MetadataRequest::CreateTopic { meta: wanted, uuid } => {
                validate_new_topic(wanted, ctx)?;
                if meta.topics.contains_key(&wanted.name) {
                    return Err(BrokerError::TopicExists {
                        topic: wanted.name.clone(),
                    });
                }
                let id = meta.allocate_topic_id();
                let assignment = place(ctx.brokers, wanted.partitions, wanted.replication_factor, id);
                Ok(MetadataCommand::CreateTopic {
                    topic: TopicState {
                        meta: wanted.clone(),
                        id,
                        uuid: Some(uuid.unwrap_or_else(TopicUuid::random)),
                        assignment,
                        origin: Vec::new(),
                        moving: BTreeMap::new(),
                    },
                })
            }
            MetadataRequest::AddPartitions { name, total } => {
                let t = topic_of(meta, name)?;
                if *total <= t.meta.partitions || *total > topic::MAX_PARTITIONS {
                    return Err(BrokerError::InvalidRequest {
                        reason: format!(
                            "topic {name:?} has {} partitions; the new count must be larger (and at most {})",
                            t.meta.partitions,
                            topic::MAX_PARTITIONS
                        ),
                    });
                }
                let placed = place(ctx.brokers, *total, t.meta.replication_factor, t.id);
                Ok(MetadataCommand::AddPartitions {
                    name: name.clone(),
                    id: t.id,
                    from: t.meta.partitions,
                    added: placed[t.meta.partitions as usize..].to_vec(),
                })
            }
            MetadataRequest::Reassign {
                name,
                partition,
                replicas,
            } => {
                validate_replicas(ctx.brokers, replicas)?;
                let t = topic_of(meta, name)?;
                if *partition >= t.meta.partitions {
                    return Err(BrokerError::UnknownPartition {
                        topic: name.clone(),
                        partition: *partition,
                        partitions: t.meta.partitions,
                    });
                }
                Ok(MetadataCommand::Reassign {
                    name: name.clone(),
                    id: t.id,
                    partition: *partition,
                    replicas: replicas.clone(),
                })
            }
            MetadataRequest::FinishReassign {
                name,
                partition,
                replicas,
            } => {
                let t = topic_of(meta, name)?;
                Ok(MetadataCommand::FinishReassign {
                    name: name.clone(),
                    id: t.id,
                    partition: *partition,
                    replicas: replicas.clone(),
                })
            }
            MetadataRequest::RegisterBroker { id, incarnation } => {
                if !ctx.brokers.contains(id) {
                    return Err(BrokerError::InvalidRequest {
                        reason: format!("node {id} is not a broker of this cluster"),
                    });
                }
                if incarnation.is_empty() || incarnation.len() > 64 {
                    return Err(BrokerError::InvalidRequest {
                        reason: "an incarnation is 1 to 64 characters".into(),
                    });
                }
                Ok(MetadataCommand::RegisterBroker {
                    id: *id,
                    incarnation: incarnation.clone(),
                })
            }
            MetadataRequest::AddBroker { id, addr } => {
                if ctx.founders.contains(id) {
                    return Err(BrokerError::InvalidRequest {
                        reason: format!("node id {id} belongs to a broker the cluster was formed with"),
                    });
                }
                if let Some(a) = meta.joined.get(id)
                    && a != addr
                {
                    return Err(BrokerError::InvalidRequest {
                        reason: format!("node id {id} already joined from {a}"),
                    });
                }
                Ok(MetadataCommand::AddBroker {
                    id: *id,
                    addr: addr.clone(),
                })
            }
            MetadataRequest::DeleteTopic { name } => {
                let t = topic_of(meta, name)?;
                Ok(MetadataCommand::DeleteTopic {
                    name: name.clone(),
                    id: t.id,
                })
            }
            MetadataRequest::AllocateProducerIds { broker } => Ok(MetadataCommand::AllocateProducerIds {
                broker: *broker,
                first: meta.producer_ids.next_id(),
                count: crate::controller::producer_ids::BLOCK_SIZE,
            }),
            MetadataRequest::InitProducerKey { key, nonce, expected } => {
                let (id, epoch) =
                    meta.producer_ids
                        .plan_key(key, *expected)
                        .map_err(|f| BrokerError::ProducerFenced {
                            producer_id: f.current.0,
                            epoch: expected.map_or(-1, |e| e.1),
                            current: f.current.1,
                        })?;
                Ok(MetadataCommand::InitProducerKey {
                    key: key.clone(),
                    producer: crate::controller::producer_ids::KeyedProducer {
                        id,
                        epoch,
                        nonce: *nonce,
                    },
                })
            }
            MetadataRequest::AddAcls { bindings } => Ok(MetadataCommand::AddAcls {
                bindings: bindings.clone(),
            }),
            MetadataRequest::RemoveAcls { filter } => Ok(MetadataCommand::RemoveAcls { filter: filter.clone() }),
            MetadataRequest::UpsertUser {
                name,
                credential,
                token_key,
            } => Ok(MetadataCommand::UpsertUser {
                name: name.clone(),
                credential: credential.clone(),
                token_key: meta.users.token_key().is_none().then(|| token_key.clone()),
            }),
            MetadataRequest::DeleteUser { name } => {
                if !meta.users.contains(name) {
                    return Err(BrokerError::InvalidRequest {
                        reason: format!("there is no user {name:?}"),
                    });
                }
                Ok(MetadataCommand::DeleteUser { name: name.clone() })
            }
            MetadataRequest::SetQuota { entity, limits } => Ok(MetadataCommand::SetQuota {
                entity: entity.clone(),
                limits: *limits,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(ids: &[u64]) -> Vec<NodeId> {
        ids.iter().copied().map(NodeId).collect()
    }

    fn create(name: &str, partitions: u32, rf: u32) -> MetadataRequest {
        MetadataRequest::CreateTopic {
            meta: TopicMeta {
                name: name.into(),
                partitions,
                replication_factor: rf,
                configs: BTreeMap::new(),
            },
            uuid: Some(TopicUuid::random()),
        }
    }

    #[test]
    fn planning_decides_ids_and_placement_and_refuses_what_cannot_be() {
        let brokers = ids(&[1, 2, 3]);
        let defaults = LogConfig::default();
        let ctx = PlanContext {
            brokers: &brokers,
            founders: &brokers,
            log_defaults: &defaults,
        };
        let mut meta = MetadataState::default();
        let cmd = create("orders", 3, 3).plan(&meta, &ctx).expect("plannable");
        let MetadataCommand::CreateTopic { topic } = &cmd else {
            panic!("{cmd:?}")
        };
        assert_eq!((topic.id, topic.assignment.len()), (1, 3));
        meta.apply(&cmd);
        let cases: Vec<(MetadataRequest, &str)> = vec![
            (create("orders", 1, 1), "TOPIC_ALREADY_EXISTS"),
            (create("big", 1, 4), "INVALID_REQUEST"),
            (create("none", 0, 1), "INVALID_REQUEST"),
            (create("zero-rf", 1, 0), "INVALID_REQUEST"),
            (create("bad name", 1, 1), "INVALID_TOPIC"),
            (create("__mine", 1, 1), "INVALID_TOPIC"),
            (
                MetadataRequest::AddPartitions {
                    name: "orders".into(),
                    total: 2,
                },
                "INVALID_REQUEST",
            ),
            (
                MetadataRequest::AddPartitions {
                    name: "__consumer_offsets".into(),
                    total: 9,
                },
                "INVALID_TOPIC",
            ),
            (MetadataRequest::DeleteTopic { name: "nope".into() }, "UNKNOWN_TOPIC"),
            (
                MetadataRequest::Reassign {
                    name: "orders".into(),
                    partition: 0,
                    replicas: ids(&[1, 9]),
                },
                "INVALID_REQUEST",
            ),
            (
                MetadataRequest::Reassign {
                    name: "orders".into(),
                    partition: 7,
                    replicas: ids(&[1]),
                },
                "UNKNOWN_PARTITION",
            ),
            (
                MetadataRequest::AddBroker {
                    id: NodeId(2),
                    addr: "h:1".into(),
                },
                "INVALID_REQUEST",
            ),
        ];
        for (i, (req, reason)) in cases.into_iter().enumerate() {
            let got = req.plan(&meta, &ctx).map(|_| ()).map_err(|e| e.code().as_str_name());
            assert_eq!(got, Err(reason), "#{i}: {req:?}");
        }
        let grow = MetadataRequest::AddPartitions {
            name: "orders".into(),
            total: 5,
        }
        .plan(&meta, &ctx)
        .expect("grows");
        assert!(matches!(grow, MetadataCommand::AddPartitions { from: 3, ref added, .. } if added.len() == 2));
    }

    #[test]
    fn requests_round_trip_through_json() {
        let r = MetadataRequest::Reassign {
            name: "t".into(),
            partition: 1,
            replicas: ids(&[3, 1]),
        };
        let bytes = serde_json::to_vec(&r).expect("encode");
        assert_eq!(serde_json::from_slice::<MetadataRequest>(&bytes).expect("decode"), r);
    }
}
