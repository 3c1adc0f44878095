//! Starting a node: check the data directory's identity (or join a running
//! cluster the first time), start the replication loop and the controller
//! replica, apply the committed metadata and host the assigned replicas.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use strand_cluster::{GrpcTransport, NewReplica, NodeConfig, NodeId, RaftNode};
use strand_storage::{LogConfig, Offset};
use tokio::sync::watch;

use super::identity::{self, NodeIdentity};
use super::recovery::open_or_quarantine;
use super::{Node, discovery};
use crate::blocking::run_blocking;
use crate::config::BrokerConfig;
use crate::controller::{CONTROLLER_GROUP, MetadataState};
use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::security::Security;

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
    pub async fn start(config: BrokerConfig, advertised_addr: String, security: Arc<Security>) -> Result<Arc<Self>> {
        config.validate()?;
        let node_id = config.node();
        let (founders, joined) = match &config.join {
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
                    let found =
                        discovery::join_cluster(seeds, node_id, &advertised_addr, &config, security.dialer()).await?;
                    (found.founders.clone(), Some(found))
                }
            },
            None => (config.parsed_peers()?, None),
        };
        let (stored, lost_disk) = {
            // A broker of one stores no addresses: it may move freely.
            let (dir, peers) = (config.data_dir.clone(), founders.clone());
            let found = run_blocking("check the data directory", move || {
                identity::load_checked(&dir, node_id, &peers)
            })
            .await?;
            match found {
                Some(stored) => (stored, false),
                None => {
                    let found = match joined {
                        Some(found) => found,
                        None => discovery::founding(node_id, &founders, &config, security.dialer()).await?,
                    };
                    if found.known {
                        tracing::error!(
                            node = %node_id,
                            data_dir = %config.data_dir.display(),
                            "this data directory is empty, but the cluster knows node {node_id}: its disk was lost or \
                             replaced. Every replica it hosted recovers from the other replicas and takes no part in \
                             elections until a leader has brought it up to date"
                        );
                    }
                    let created = NodeIdentity {
                        node_id,
                        peers: founders.clone(),
                        cluster_id: found.cluster_id,
                        incarnation: identity::new_incarnation(),
                    };
                    let dir = config.data_dir.clone();
                    let created = run_blocking("create the data directory's identity", move || {
                        identity::create(&dir, &created).map(|()| created)
                    })
                    .await?;
                    (created, found.known)
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
            security.dialer().clone(),
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
        let replicated = voters.len() > 1;
        let (controller_log, quarantined) = {
            let dir = config.data_dir.join(CONTROLLER_DIR);
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
                // A lost disk lost the controller log too: it recovers like
                // every other replica (a controller of one has nobody to
                // recover from).
                recovering: replicated && (quarantined || lost_disk),
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
            incarnation: stored.incarnation,
            founders,
            transport,
            raft,
            controller,
            metadata: RwLock::new(MetadataState::default()),
            applied: watch::Sender::new(Offset::ZERO),
            replicas: RwLock::new(HashMap::new()),
            proposals: tokio::sync::Mutex::new(()),
            swept: std::sync::atomic::AtomicBool::new(false),
            producer_ids: parking_lot::Mutex::new(Default::default()),
            shutdown: watch::Sender::new(false),
            security,
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
