//! Starting a node: check the data directory's identity (or join a running
//! cluster the first time), start the replication loop and the controller
//! replica, apply the committed metadata and host the assigned replicas.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use strand_cluster::{GrpcTransport, NewReplica, NodeConfig, NodeId, RaftNode};
use strand_storage::{LogConfig, Offset};
use tokio::sync::watch;

use super::Node;
use super::identity::{self, NodeIdentity};
use super::recovery::open_or_quarantine;
use crate::blocking::run_blocking;
use crate::config::BrokerConfig;
use crate::controller::{CONTROLLER_GROUP, MetadataState};
use crate::error::{BrokerError, Result};
use crate::partition::Partition;

/// Directory of the controller log.
const CONTROLLER_DIR: &str = "__controller-0";

fn controller_log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 << 20,
        preallocate_bytes: 1 << 20,
        index_max_bytes: 1 << 20,
        retention_ms: None,
        retention_bytes: None,
        fsync: strand_storage::FsyncPolicy::Never,
        ..LogConfig::default()
    }
}

impl Node {
    /// Validates the config, checks the data directory's identity, starts the
    /// replication loop and the controller replica, applies the committed
    /// metadata and opens every hosted partition.
    pub async fn start(config: BrokerConfig, advertised_addr: String) -> Result<Arc<Self>> {
        config.validate()?;
        let node_id = config.node();
        let (founders, given_id) = match &config.join {
            // A joining broker takes the founders' list as its peers (the
            // controller's voters); the first time, it asks the cluster,
            // which also gives it the cluster id.
            Some(seeds) => match identity::load(&config.data_dir)? {
                Some(stored) if stored.node_id == node_id => (stored.peers, None),
                Some(stored) => {
                    return Err(BrokerError::DataDir {
                        path: config.data_dir.clone(),
                        reason: format!(
                            "it belongs to node {} but this broker is node {node_id}",
                            stored.node_id
                        ),
                    });
                }
                None => {
                    let (founders, cluster_id) = join_cluster(seeds, node_id, &advertised_addr, &config).await?;
                    (founders, Some(cluster_id))
                }
            },
            None => (config.parsed_peers()?, None),
        };
        let stored = {
            // A broker of one stores no addresses: it may move freely.
            let (dir, peers) = (config.data_dir.clone(), founders.clone());
            let found = run_blocking("check the data directory", move || {
                identity::load_checked(&dir, node_id, &peers)
            })
            .await?;
            match found {
                Some(stored) => stored,
                None => {
                    let cluster_id = match given_id {
                        Some(id) => id,
                        None => founding_cluster_id(node_id, &founders, &config).await?,
                    };
                    let created = NodeIdentity {
                        node_id,
                        peers: founders.clone(),
                        cluster_id,
                    };
                    let dir = config.data_dir.clone();
                    run_blocking("create the data directory's identity", move || {
                        identity::create(&dir, &created).map(|()| created)
                    })
                    .await?
                }
            }
        };
        let mut founders = founders;
        if founders.is_empty() && config.join.is_none() {
            founders.insert(node_id, advertised_addr.clone());
        }
        let others: HashMap<NodeId, String> = founders
            .iter()
            .filter(|(i, _)| **i != node_id)
            .map(|(i, a)| (*i, a.clone()))
            .collect();
        let transport = GrpcTransport::new(
            stored.cluster_id.clone(),
            others,
            tokio::runtime::Handle::current(),
            config.limits.max_message_bytes,
        );
        let raft = RaftNode::start(
            node_id,
            NodeConfig {
                tick: Duration::from_millis(config.raft_tick_ms),
                ..NodeConfig::default()
            },
            transport.clone(),
        );
        let voters: Vec<NodeId> = founders.keys().copied().collect();
        let (controller_log, recover_to) = {
            let dir = config.data_dir.join(CONTROLLER_DIR);
            let replicated = voters.len() > 1;
            run_blocking("open the controller log", move || {
                open_or_quarantine(&dir, controller_log_config(), replicated)
            })
            .await?
        };
        let controller_log = Arc::new(RwLock::new(controller_log));
        let handle = raft
            .host(NewReplica {
                group: CONTROLLER_GROUP,
                log: Arc::clone(&controller_log),
                voters: voters.clone(),
                recover_to,
                span: tracing::info_span!("replica", node = %node_id, topic = "__controller", partition = 0),
            })
            .await?;
        if voters == [node_id] {
            // Alone in the cluster: no need to wait for an election timeout.
            let _ = raft.campaign(CONTROLLER_GROUP);
        }
        let controller = Arc::new(Partition::new(
            Arc::from("__controller"),
            0,
            voters,
            controller_log,
            handle,
        ));
        let node = Arc::new(Node {
            inbox: raft.inbox(),
            id: node_id,
            advertised_addr,
            cluster_id: stored.cluster_id,
            founders,
            transport,
            raft,
            controller,
            metadata: RwLock::new(MetadataState::default()),
            applied: watch::Sender::new(Offset::ZERO),
            replicas: RwLock::new(HashMap::new()),
            proposals: tokio::sync::Mutex::new(()),
            shutdown: watch::Sender::new(false),
            config,
        });
        if node.founders.len() == 1 {
            // Alone: the election is immediate; wait for it so the first
            // request already finds a controller.
            let mut status = node.watch_controller();
            let _ = tokio::time::timeout(Duration::from_secs(10), status.wait_for(|s| s.leader.is_some())).await;
        }
        node.apply_committed_metadata().await?;
        tokio::spawn(Arc::clone(&node).follow_controller());
        Ok(node)
    }
}

/// How long a founder creating its data directory waits for the founder
/// that makes the cluster id to answer (brokers of a new cluster start in
/// any order).
const FOUNDING_WAIT: Duration = Duration::from_secs(300);

/// The id of the cluster being created: generated here when this broker is
/// alone or the lowest-numbered founder, else asked of that founder over
/// `Peer/Identity` (it may still be starting).
async fn founding_cluster_id(
    node_id: NodeId,
    founders: &BTreeMap<NodeId, String>,
    config: &BrokerConfig,
) -> Result<String> {
    use strand_proto::v1::{IdentityRequest, peer_client::PeerClient};
    let maker = match identity::id_maker(founders) {
        Some(maker) if maker != node_id => maker,
        _ => {
            let id = identity::new_cluster_id();
            tracing::info!(node = %node_id, cluster = %id, "created the cluster id");
            return Ok(id);
        }
    };
    let addr = founders.get(&maker).cloned().unwrap_or_default();
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| BrokerError::InvalidConfig {
            key: "peers".into(),
            reason: format!("bad address {addr:?} of node {maker}: {e}"),
        })?
        .connect_timeout(Duration::from_secs(2))
        .timeout(config.request_timeout());
    let deadline = tokio::time::Instant::now() + FOUNDING_WAIT;
    let mut waiting_logged = false;
    loop {
        let last = match endpoint.connect().await {
            Ok(channel) => {
                let req = IdentityRequest { from: node_id.get() };
                match PeerClient::new(channel).identity(req).await {
                    Ok(resp) => {
                        let id = resp.into_inner().cluster_id;
                        tracing::info!(node = %node_id, cluster = %id, from = %maker, "learned the cluster id");
                        return Ok(id);
                    }
                    Err(status) if status.code() == tonic::Code::PermissionDenied => {
                        return Err(BrokerError::DataDir {
                            path: config.data_dir.clone(),
                            reason: format!(
                                "node {maker} at {addr} refused to tell its cluster id: {}",
                                status.message()
                            ),
                        });
                    }
                    Err(status) => status.to_string(),
                }
            }
            Err(e) => e.to_string(),
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::DataDir {
                path: config.data_dir.clone(),
                reason: format!(
                    "node {maker} at {addr}, which creates the cluster id, did not answer within {} s: {last}",
                    FOUNDING_WAIT.as_secs()
                ),
            });
        }
        if !waiting_logged {
            tracing::info!(node = %node_id, founder = %maker, addr = %addr, "waiting for the lowest-numbered founder to create the cluster id");
            waiting_logged = true;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Asks a running cluster (through any of `seeds`) to admit this broker;
/// returns the brokers the cluster was formed with, and its id.
async fn join_cluster(
    seeds: &str,
    node_id: NodeId,
    addr: &str,
    config: &BrokerConfig,
) -> Result<(BTreeMap<NodeId, String>, String)> {
    use strand_proto::v1::{JoinClusterRequest, admin_client::AdminClient};
    let seeds: Vec<&str> = seeds.split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let deadline = tokio::time::Instant::now() + config.request_timeout();
    let mut last = String::from("no seed broker given");
    loop {
        for seed in &seeds {
            let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{seed}")) {
                Ok(e) => e
                    .connect_timeout(Duration::from_secs(2))
                    .timeout(config.request_timeout()),
                Err(e) => {
                    return Err(BrokerError::InvalidConfig {
                        key: "join".into(),
                        reason: format!("bad seed address {seed:?}: {e}"),
                    });
                }
            };
            let channel = match endpoint.connect().await {
                Ok(c) => c,
                Err(e) => {
                    last = format!("{seed}: {e}");
                    continue;
                }
            };
            let req = JoinClusterRequest {
                node_id: node_id.get(),
                addr: addr.to_string(),
            };
            match AdminClient::new(channel).join_cluster(req).await {
                Ok(resp) => {
                    let r = resp.into_inner();
                    tracing::info!(node = %node_id, via = %seed, cluster = %r.cluster_id, "joined the cluster");
                    let founders = r.founders.into_iter().map(|b| (NodeId(b.node_id), b.addr)).collect();
                    return Ok((founders, r.cluster_id));
                }
                Err(status) => {
                    let e = BrokerError::from(status);
                    if e.code() == strand_proto::v1::ErrorCode::InvalidRequest {
                        // Refused (e.g. the node id is taken): retrying cannot help.
                        return Err(e);
                    }
                    last = format!("{seed}: {e}");
                }
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(BrokerError::DataDir {
                path: config.data_dir.clone(),
                reason: format!("could not join the cluster through {seeds:?}: {last}"),
            });
        }
        // The seeds may still be starting: try again shortly.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
