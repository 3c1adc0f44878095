//! Admin requests and Metadata. Topic changes go through the controller
//! group: the broker that leads it proposes the command; any other broker
//! forwards the request to it once, then waits until it applied the result
//! itself, so a `describe` right after a `create` on the same broker works.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use strand_proto::v1::{
    BrokerInfo, CreatePartitionsRequest, CreateTopicRequest, DeleteTopicRequest, JoinClusterRequest,
    JoinClusterResponse, ListTopicsResponse, MetadataRequest, MetadataResponse, PartitionDescription,
    PartitionMetadata, ReassignPartitionRequest, TopicDescription, TopicMetadata, TopicSummary,
    admin_client::AdminClient,
};

use crate::controller::{Command, TopicState, place};
use crate::error::{BrokerError, Result};
use crate::state::BrokerState;
use crate::topic::{self, TopicMeta};

/// Metadata key marking a request another broker forwarded (never forwarded
/// again, so a leader change cannot bounce it around).
pub const FORWARDED_KEY: &str = "strand-forwarded";

/// Describes a topic with live offsets of the replicas hosted here.
pub fn describe(state: &BrokerState, topic: &TopicState) -> TopicDescription {
    let hosted = state.hosted(topic);
    TopicDescription {
        name: topic.meta.name.clone(),
        replication_factor: topic.meta.replication_factor,
        configs: topic.meta.configs.clone().into_iter().collect(),
        partitions: topic
            .assignment
            .iter()
            .zip(hosted)
            .enumerate()
            .map(|(p, (replicas, local))| {
                let mut d = PartitionDescription {
                    partition: p as u32,
                    replicas: replicas.clone(),
                    moving_to: topic.moving.get(&(p as u32)).cloned().unwrap_or_default(),
                    ..Default::default()
                };
                if let Some(local) = local {
                    let st = local.state();
                    d.leader = local.status().leader.unwrap_or(0);
                    d.log_start_offset = st.log_start_offset;
                    d.high_watermark = st.high_watermark;
                    d.log_end_offset = st.log_end_offset;
                    d.size_bytes = st.size_bytes;
                    d.segments = st.segments;
                }
                d
            })
            .collect(),
    }
}

fn validate(state: &BrokerState, meta: &TopicMeta) -> Result<()> {
    // The one internal topic created through this path, by the group
    // coordinator.
    if meta.name != crate::group::OFFSETS_TOPIC {
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
    let brokers = state.brokers().len() as u32;
    if meta.replication_factor > brokers {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "replication factor {} is larger than the {brokers} broker{} available",
                meta.replication_factor,
                if brokers == 1 { "" } else { "s" }
            ),
        });
    }
    topic::log_config(&state.config.log, &meta.configs)?;
    Ok(())
}

enum Route {
    Local,
    Forward(String),
}

/// Where a metadata change must be proposed; waits briefly for an election.
async fn route(state: &BrokerState, forwarded: bool) -> Result<Route> {
    let deadline = tokio::time::Instant::now() + state.config.request_timeout() / 2;
    loop {
        match state.controller_leader() {
            Some(l) if l == state.node_id => return Ok(Route::Local),
            Some(l) if !forwarded => {
                if let Some(addr) = state.addr_of(l) {
                    return Ok(Route::Forward(addr));
                }
            }
            _ => {}
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::NotLeader {
                topic: "__controller".into(),
                partition: 0,
                leader_addr: state.controller_leader().and_then(|l| state.addr_of(l)),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn admin_client(state: &BrokerState, addr: &str) -> Result<AdminClient<tonic::transport::Channel>> {
    let max = state.config.limits.max_message_bytes;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| BrokerError::InvalidRequest {
            reason: format!("bad peer address {addr}: {e}"),
        })?
        .connect_timeout(Duration::from_secs(2))
        .timeout(state.config.request_timeout())
        .connect()
        .await
        .map_err(|_| BrokerError::NotLeader {
            topic: "__controller".into(),
            partition: 0,
            leader_addr: Some(addr.to_string()),
        })?;
    Ok(AdminClient::new(channel)
        .max_decoding_message_size(max)
        .max_encoding_message_size(max))
}

fn forwarded<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.metadata_mut()
        .insert(FORWARDED_KEY, tonic::metadata::MetadataValue::from_static("1"));
    r
}

/// Waits until this broker applied metadata in which `done` holds.
async fn wait_until(state: &BrokerState, done: impl Fn(&BrokerState) -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + state.config.request_timeout();
    while !done(state) {
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::Timeout {
                what: "cluster metadata to reach this broker",
                waited_ms: state.config.request_timeout().as_millis() as u64,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// Creates a topic.
pub async fn create_topic(
    state: &Arc<BrokerState>,
    req: CreateTopicRequest,
    is_forwarded: bool,
) -> Result<TopicDescription> {
    let meta = TopicMeta {
        name: req.name.clone(),
        partitions: req.partitions,
        replication_factor: req.replication_factor.max(1),
        configs: req.configs.clone().into_iter().collect::<BTreeMap<_, _>>(),
    };
    validate(state, &meta)?;
    loop {
        match route(state, is_forwarded).await? {
            Route::Forward(addr) => {
                admin_client(state, &addr)
                    .await?
                    .create_topic(forwarded(req.clone()))
                    .await?;
                let name = meta.name.clone();
                wait_until(state, move |s| s.topic(&name).is_ok()).await?;
                return Ok(describe(state, &state.topic(&meta.name)?));
            }
            Route::Local => {
                let _guard = state.admin_lock().await;
                if state.topic(&meta.name).is_ok() {
                    return Err(BrokerError::TopicExists { topic: meta.name });
                }
                let current = state.metadata();
                let id = current.allocate_topic_id();
                let brokers: Vec<u64> = state.brokers().keys().copied().collect();
                let assignment = place(&brokers, meta.partitions, meta.replication_factor, id);
                let topic = TopicState {
                    meta: meta.clone(),
                    id,
                    assignment,
                    origin: Vec::new(),
                    moving: BTreeMap::new(),
                };
                match state.propose_metadata(&Command::CreateTopic { topic }).await {
                    Err(BrokerError::NotLeader { .. }) => continue,
                    other => other?,
                }
                let created = state.topic(&meta.name)?;
                if created.id != id {
                    return Err(BrokerError::TopicExists { topic: meta.name });
                }
                tracing::info!(topic = %meta.name, id, partitions = meta.partitions, "created topic");
                wait_for_leaders(state, &created).await;
                return Ok(describe(state, &created));
            }
        }
    }
}

/// Grows a topic to `total` partitions.
pub async fn create_partitions(
    state: &Arc<BrokerState>,
    name: String,
    total: u32,
    is_forwarded: bool,
) -> Result<TopicDescription> {
    if name.starts_with("__") {
        return Err(BrokerError::InvalidTopic {
            name,
            reason: "internal topics cannot be changed",
        });
    }
    loop {
        let topic = state.topic(&name)?;
        if total <= topic.meta.partitions || total > topic::MAX_PARTITIONS {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "topic {name:?} has {} partitions; the new count must be larger (and at most {})",
                    topic.meta.partitions,
                    topic::MAX_PARTITIONS
                ),
            });
        }
        match route(state, is_forwarded).await? {
            Route::Forward(addr) => {
                admin_client(state, &addr)
                    .await?
                    .create_partitions(forwarded(CreatePartitionsRequest {
                        name: name.clone(),
                        partitions: total,
                    }))
                    .await?;
                let n = name.clone();
                wait_until(state, move |s| s.topic(&n).is_ok_and(|t| t.meta.partitions >= total)).await?;
                return Ok(describe(state, &state.topic(&name)?));
            }
            Route::Local => {
                let _guard = state.admin_lock().await;
                let current = state.topic(&name)?;
                if total <= current.meta.partitions {
                    return Err(BrokerError::InvalidRequest {
                        reason: format!("topic {name:?} already has {} partitions", current.meta.partitions),
                    });
                }
                let brokers: Vec<u64> = state.brokers().keys().copied().collect();
                let placed = place(&brokers, total, current.meta.replication_factor, current.id);
                let added = placed[current.meta.partitions as usize..].to_vec();
                let cmd = Command::AddPartitions {
                    name: name.clone(),
                    id: current.id,
                    from: current.meta.partitions,
                    added,
                };
                match state.propose_metadata(&cmd).await {
                    Err(BrokerError::NotLeader { .. }) => continue,
                    other => other?,
                }
                let grown = state.topic(&name)?;
                tracing::info!(topic = %name, from = current.meta.partitions, to = grown.meta.partitions, "added partitions");
                wait_for_leaders(state, &grown).await;
                return Ok(describe(state, &grown));
            }
        }
    }
}

/// Starts moving a partition's replicas (`finish`: the partition's leader
/// reports the move done).
pub async fn reassign(
    state: &Arc<BrokerState>,
    topic: String,
    partition: u32,
    replicas: Vec<u64>,
    finish: bool,
    is_forwarded: bool,
) -> Result<()> {
    if topic == "__controller" {
        return Err(BrokerError::InvalidTopic {
            name: topic,
            reason: "the controller's replicas are the brokers the cluster was formed with",
        });
    }
    crate::reassign::validate_replicas(state, &replicas)?;
    loop {
        let t = state.topic(&topic)?;
        if partition >= t.meta.partitions {
            return Err(BrokerError::UnknownPartition {
                topic,
                partition,
                partitions: t.meta.partitions,
            });
        }
        match route(state, is_forwarded).await? {
            Route::Forward(addr) => {
                admin_client(state, &addr)
                    .await?
                    .reassign_partition(forwarded(ReassignPartitionRequest {
                        topic: topic.clone(),
                        partition,
                        replicas: replicas.clone(),
                        finish,
                    }))
                    .await?;
                return Ok(());
            }
            Route::Local => {
                let _guard = state.admin_lock().await;
                let t = state.topic(&topic)?;
                let cmd = if finish {
                    Command::FinishReassign {
                        name: topic.clone(),
                        id: t.id,
                        partition,
                        replicas: replicas.clone(),
                    }
                } else {
                    Command::Reassign {
                        name: topic.clone(),
                        id: t.id,
                        partition,
                        replicas: replicas.clone(),
                    }
                };
                match state.propose_metadata(&cmd).await {
                    Err(BrokerError::NotLeader { .. }) => continue,
                    other => other?,
                }
                tracing::info!(topic = %topic, partition, ?replicas, finish, "partition replicas moving");
                return Ok(());
            }
        }
    }
}

/// Admits a broker with an empty data directory: records it in the
/// metadata and makes it a learner of the controller group.
pub async fn join(
    state: &Arc<BrokerState>,
    req: JoinClusterRequest,
    is_forwarded: bool,
) -> Result<JoinClusterResponse> {
    if req.node_id == 0 || !req.addr.contains(':') {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "a joining broker needs a node id > 0 and a host:port address, got {} at {:?}",
                req.node_id, req.addr
            ),
        });
    }
    if state.peers.contains_key(&req.node_id) {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "node id {} belongs to a broker the cluster was formed with",
                req.node_id
            ),
        });
    }
    if let Some(a) = state.metadata().joined.get(&req.node_id)
        && *a != req.addr
    {
        return Err(BrokerError::InvalidRequest {
            reason: format!("node id {} already joined from {a}", req.node_id),
        });
    }
    loop {
        match route(state, is_forwarded).await? {
            Route::Forward(addr) => {
                return Ok(admin_client(state, &addr)
                    .await?
                    .join_cluster(forwarded(req.clone()))
                    .await?
                    .into_inner());
            }
            Route::Local => {
                let _guard = state.admin_lock().await;
                match state
                    .propose_metadata(&crate::reassign::add_broker(req.node_id, req.addr.clone()))
                    .await
                {
                    Err(BrokerError::NotLeader { .. }) => continue,
                    other => other?,
                }
                crate::reassign::add_controller_learner(state, req.node_id).await?;
                tracing::info!(node = req.node_id, addr = %req.addr, "broker joined the cluster");
                return Ok(JoinClusterResponse {
                    cluster_id: state.cluster_id.clone(),
                    founders: state
                        .peers
                        .iter()
                        .map(|(&node_id, addr)| BrokerInfo {
                            node_id,
                            addr: addr.clone(),
                        })
                        .collect(),
                });
            }
        }
    }
}

/// Gives the new partitions hosted here a moment to elect leaders, so a
/// producer started right after `create` finds them (bounded; a partition
/// still electing is answered with `NOT_LEADER` and retried by clients).
async fn wait_for_leaders(state: &BrokerState, topic: &TopicState) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if state
            .hosted(topic)
            .iter()
            .flatten()
            .all(|p| p.status().leader.is_some())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Deletes a topic.
pub async fn delete_topic(state: &Arc<BrokerState>, name: String, is_forwarded: bool) -> Result<()> {
    if name.starts_with("__") {
        return Err(BrokerError::InvalidTopic {
            name,
            reason: "internal topics cannot be deleted",
        });
    }
    loop {
        let topic = state.topic(&name)?;
        match route(state, is_forwarded).await? {
            Route::Forward(addr) => {
                admin_client(state, &addr)
                    .await?
                    .delete_topic(forwarded(DeleteTopicRequest { name: name.clone() }))
                    .await?;
                let n = name.clone();
                return wait_until(state, move |s| s.topic(&n).map_or(true, |t| t.id != topic.id)).await;
            }
            Route::Local => {
                let _guard = state.admin_lock().await;
                let topic = state.topic(&name)?;
                match state
                    .propose_metadata(&Command::DeleteTopic {
                        name: name.clone(),
                        id: topic.id,
                    })
                    .await
                {
                    Err(BrokerError::NotLeader { .. }) => continue,
                    other => other?,
                }
                tracing::info!(topic = %name, "deleted topic");
                return Ok(());
            }
        }
    }
}

/// Lists topics.
pub fn list_topics(state: &BrokerState) -> ListTopicsResponse {
    ListTopicsResponse {
        topics: state
            .metadata()
            .topics
            .values()
            .map(|t| TopicSummary {
                name: t.meta.name.clone(),
                partitions: t.meta.partitions,
                replication_factor: t.meta.replication_factor,
            })
            .collect(),
    }
}

/// Brokers, and topics with their partition leaders (as this broker knows
/// them: the live leader of a hosted replica, else the preferred replica as a
/// hint that answers `NOT_LEADER` with the leader if it is wrong).
pub fn metadata(state: &BrokerState, req: MetadataRequest) -> MetadataResponse {
    let topic_meta = |t: &TopicState| TopicMetadata {
        name: t.meta.name.clone(),
        partitions: t
            .assignment
            .iter()
            .zip(state.hosted(t))
            .enumerate()
            .map(|(p, (replicas, local))| PartitionMetadata {
                partition: p as u32,
                leader: match local {
                    Some(l) => l.status().leader.unwrap_or(0),
                    None => replicas.first().copied().unwrap_or(0),
                },
                replicas: replicas.clone(),
            })
            .collect(),
        error: None,
    };
    let meta = state.metadata();
    let topics = if req.topics.is_empty() {
        meta.topics.values().map(topic_meta).collect()
    } else {
        req.topics
            .iter()
            .map(|name| match meta.topics.get(name) {
                Some(t) => topic_meta(t),
                None => TopicMetadata {
                    name: name.clone(),
                    partitions: Vec::new(),
                    error: Some(BrokerError::UnknownTopic { topic: name.clone() }.to_proto()),
                },
            })
            .collect()
    };
    MetadataResponse {
        brokers: state
            .brokers()
            .iter()
            .map(|(&node_id, addr)| BrokerInfo {
                node_id,
                addr: if node_id == state.node_id {
                    state.advertised_addr.clone()
                } else {
                    addr.clone()
                },
            })
            .collect(),
        topics,
        cluster_id: state.cluster_id.clone(),
        controller_id: state.controller_leader().unwrap_or(0),
    }
}
