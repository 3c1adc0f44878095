//! The broker's view of the cluster: its identity, its replication loop, the
//! metadata folded from the controller log, and the partition replicas it
//! hosts.
//!
//! Invariants: metadata changes only by applying committed controller
//! records in log order; the set of hosted replicas follows the applied
//! metadata (reconciled after every apply); a partition directory carries the
//! id of the topic it belongs to, so a re-created topic never inherits an old
//! topic's data.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use strand_cluster::{Ack, ClusterError, GrpcTransport, Inbox, NodeConfig, RaftNode};
use strand_storage::{BatchBuilder, Compression, DecodedRecords, LogConfig, NewRecord, PartitionLog, batches};
use tokio::sync::watch;

use crate::config::BrokerConfig;
use crate::controller::{CONTROLLER_GROUP, Command, MetadataState, TopicState};
use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::registry;
use crate::topic;

/// Directory of the controller log.
const CONTROLLER_DIR: &str = "__controller-0";
/// File in a partition directory naming the topic id it belongs to.
const TOPIC_ID_FILE: &str = "topic-id";

/// Shared state of one broker.
pub struct BrokerState {
    /// Settings.
    pub config: BrokerConfig,
    /// This node.
    pub node_id: u64,
    /// Address advertised for this broker.
    pub advertised_addr: String,
    /// Cluster id (from the peer list).
    pub cluster_id: String,
    /// The brokers the cluster was formed with: node id → address (the
    /// controller group's voters). Brokers that joined later are in the
    /// metadata; [`BrokerState::brokers`] lists both.
    pub peers: BTreeMap<u64, String>,
    transport: Arc<GrpcTransport>,
    /// The replication loop.
    pub node: RaftNode,
    /// Request counters and latency histograms.
    pub metrics: crate::metrics::Metrics,
    /// Consumer groups coordinated here.
    pub groups: crate::group::GroupCoordinator,
    inbox: Arc<dyn Inbox>,
    controller: Arc<Partition>,
    metadata: RwLock<MetadataState>,
    /// Controller-log offset applied so far.
    applied: watch::Sender<u64>,
    partitions: RwLock<HashMap<(String, u32), Arc<Partition>>>,
    /// Serializes metadata proposals from this broker.
    admin: tokio::sync::Mutex<()>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for BrokerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerState").field("node_id", &self.node_id).finish()
    }
}

fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

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

fn blocking_err(e: tokio::task::JoinError) -> BrokerError {
    BrokerError::InvalidRequest {
        reason: format!("background task failed: {e}"),
    }
}

/// Opens the log of a partition replica for `topic_id`, clearing a
/// directory left by an older topic of the same name.
fn open_partition_log(
    dir: &Path,
    topic_id: u64,
    config: LogConfig,
    replicated: bool,
) -> Result<(PartitionLog, Option<u64>)> {
    let marker = dir.join(TOPIC_ID_FILE);
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BrokerError::Metadata { op, path, source }
    };
    match std::fs::read_to_string(&marker) {
        Ok(s) if s.trim() == topic_id.to_string() => {}
        Ok(_) => {
            tracing::warn!(dir = %dir.display(), topic_id, "removing the data of an older topic with this name");
            std::fs::remove_dir_all(dir).map_err(io("remove stale partition", dir))?;
        }
        Err(_) if dir.exists() => {
            tracing::warn!(dir = %dir.display(), "removing a partition directory without a topic id");
            std::fs::remove_dir_all(dir).map_err(io("remove stale partition", dir))?;
        }
        Err(_) => {}
    }
    let (log, recover_to) = open_or_quarantine(dir, config, replicated)?;
    if !marker.exists() {
        std::fs::write(&marker, topic_id.to_string()).map_err(io("write topic id", &marker))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync dir", dir))?;
    }
    Ok((log, recover_to))
}

/// Opens a replica's log. A log that refuses to open because it is damaged
/// is moved aside whole (`<dir>.corrupt-<ms>`, kept for an operator) and
/// replaced by an empty one that keeps the Raft state; the Raft index the
/// replica must re-fetch up to before it may vote again is returned (the
/// higher of its persisted commit index and the last entry it can still find
/// in the damaged files).
///
/// A replica without peers (replication factor 1) has nobody to re-fetch
/// from: its damaged log is an error, never silently emptied.
fn open_or_quarantine(dir: &Path, config: LogConfig, replicated: bool) -> Result<(PartitionLog, Option<u64>)> {
    let err = match PartitionLog::open(dir, config.clone()) {
        Ok(log) => return Ok((log, None)),
        Err(e @ strand_storage::StorageError::Corrupt { .. }) if replicated => e,
        Err(e) => return Err(e.into()),
    };
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BrokerError::Metadata { op, path, source }
    };
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("partition");
    let aside = dir.with_file_name(format!("{name}.corrupt-{}", strand_storage::now_ms()));
    tracing::error!(dir = %dir.display(), moved_to = %aside.display(), error = %err,
        "damaged replica log moved aside; re-fetching it from the other replicas");
    let damaged_last = PartitionLog::open(
        dir,
        LogConfig {
            verify_sealed_on_open: false,
            ..config.clone()
        },
    )
    .ok()
    .and_then(|l| l.last_raft_index().ok().flatten())
    .unwrap_or(0);
    std::fs::rename(dir, &aside).map_err(io("quarantine damaged log", dir))?;
    std::fs::create_dir_all(dir).map_err(io("create dir", dir))?;
    let mut commit = 0;
    for f in ["raft-state.json", TOPIC_ID_FILE] {
        let from = aside.join(f);
        if from.exists() {
            std::fs::copy(&from, dir.join(f)).map_err(io("copy raft state", &from))?;
        }
    }
    if let Ok(bytes) = std::fs::read(dir.join("raft-state.json"))
        && let Ok(state) = serde_json::from_slice::<strand_cluster::PersistedState>(&bytes)
    {
        commit = state.commit;
    }
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("fsync dir", dir))?;
    let log = PartitionLog::open(dir, config)?;
    Ok((log, Some(commit.max(damaged_last))))
}

impl BrokerState {
    /// Validates the config, checks the data directory's identity, starts the
    /// replication loop and the controller replica, applies the committed
    /// metadata and opens every hosted partition.
    pub async fn start(config: BrokerConfig, advertised_addr: String) -> Result<Arc<Self>> {
        config.validate()?;
        let node_id = config.node_id;
        let configured = config.parsed_peers()?;
        let joining = config.join.is_some();
        let configured = match &config.join {
            // A joining broker takes the founders' list as its peers (the
            // controller's voters); the first time, it asks the cluster.
            Some(seeds) => match registry::load(&config.data_dir)? {
                Some(stored) if stored.node_id == node_id => stored.peers,
                Some(stored) => {
                    return Err(BrokerError::DataDir {
                        path: config.data_dir.clone(),
                        reason: format!(
                            "it belongs to node {} but this broker is node {node_id}",
                            stored.node_id
                        ),
                    });
                }
                None => join_cluster(seeds, node_id, &advertised_addr, &config).await?,
            },
            None => configured,
        };
        let identity = {
            // A broker of one stores no addresses: it may move freely.
            let (dir, peers) = (config.data_dir.clone(), configured.clone());
            tokio::task::spawn_blocking(move || registry::load_or_init(&dir, node_id, &peers))
                .await
                .map_err(blocking_err)??
        };
        let mut peers = configured;
        if peers.is_empty() && !joining {
            peers.insert(node_id, advertised_addr.clone());
        }
        let others: HashMap<u64, String> = peers
            .iter()
            .filter(|(i, _)| **i != node_id)
            .map(|(i, a)| (*i, a.clone()))
            .collect();
        let transport = GrpcTransport::new(
            identity.cluster_id.clone(),
            others,
            tokio::runtime::Handle::current(),
            config.limits.max_message_bytes,
        );
        let raft_transport: Arc<dyn strand_cluster::Transport> = transport.clone();
        let node = RaftNode::start(
            node_id,
            NodeConfig {
                tick: Duration::from_millis(config.raft_tick_ms),
                ..NodeConfig::default()
            },
            raft_transport,
        );
        let voters: Vec<u64> = peers.keys().copied().collect();
        let controller_log = {
            let dir = config.data_dir.join(CONTROLLER_DIR);
            let replicated = voters.len() > 1;
            let (log, recover_to) =
                tokio::task::spawn_blocking(move || open_or_quarantine(&dir, controller_log_config(), replicated))
                    .await
                    .map_err(blocking_err)??;
            (Arc::new(RwLock::new(log)), recover_to)
        };
        let (controller_log, controller_recover) = controller_log;
        let handle = match controller_recover {
            Some(to) => {
                node.add_recovering_group(CONTROLLER_GROUP, Arc::clone(&controller_log), voters.clone(), to)
                    .await
            }
            None => {
                node.add_group(CONTROLLER_GROUP, Arc::clone(&controller_log), voters.clone())
                    .await
            }
        }
        .map_err(cluster_error)?;
        if voters == [node_id] {
            // Alone in the cluster: no need to wait for an election timeout.
            let _ = node.campaign(CONTROLLER_GROUP);
        }
        let controller = Arc::new(Partition::new(
            Arc::from("__controller"),
            0,
            CONTROLLER_GROUP,
            voters,
            controller_log,
            handle,
        ));
        let state = Arc::new(BrokerState {
            inbox: node.inbox(),
            metrics: crate::metrics::Metrics::default(),
            groups: crate::group::GroupCoordinator::new(config.groups.clone()),
            config,
            node_id,
            advertised_addr,
            cluster_id: identity.cluster_id,
            peers,
            transport,
            node,
            controller,
            metadata: RwLock::new(MetadataState::default()),
            applied: watch::Sender::new(0),
            partitions: RwLock::new(HashMap::new()),
            admin: tokio::sync::Mutex::new(()),
            shutdown: watch::Sender::new(false),
        });
        if state.peers.len() == 1 {
            // Alone: the election is immediate; wait for it so the first
            // request already finds a controller.
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while state.controller_leader().is_none() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        state.apply_committed_metadata().await?;
        tokio::spawn(Arc::clone(&state).follow_controller());
        Ok(state)
    }

    /// Where peers' Raft messages are delivered.
    pub fn inbox(&self) -> &Arc<dyn Inbox> {
        &self.inbox
    }

    /// A copy of the applied metadata.
    pub fn metadata(&self) -> MetadataState {
        self.metadata
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The topic as the cluster knows it, or `UNKNOWN_TOPIC` — but only once
    /// this broker has caught up with the cluster metadata: a broker that
    /// just started answers `NOT_LEADER` (retriable) instead of denying a
    /// topic it has not learned about yet.
    pub fn topic(&self, name: &str) -> Result<TopicState> {
        let found = self
            .metadata
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .topics
            .get(name)
            .cloned();
        match found {
            Some(t) => Ok(t),
            None if !self.metadata_caught_up() => Err(BrokerError::NotLeader {
                topic: name.into(),
                partition: 0,
                leader_addr: None,
            }),
            None => Err(BrokerError::UnknownTopic { topic: name.into() }),
        }
    }

    /// Whether the committed cluster metadata is applied here.
    pub fn metadata_caught_up(&self) -> bool {
        self.controller_leader().is_some() && *self.applied.borrow() >= self.controller.high_watermark()
    }

    /// The hosted replica of a partition; `UNKNOWN_TOPIC`,
    /// `UNKNOWN_PARTITION`, or `NOT_LEADER` (naming a replica that hosts it)
    /// when this broker has none.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let t = self.topic(topic)?;
        let Some(replicas) = t.assignment.get(partition as usize) else {
            return Err(BrokerError::UnknownPartition {
                topic: topic.into(),
                partition,
                partitions: t.meta.partitions,
            });
        };
        if let Some(p) = self
            .partitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&(topic.to_string(), partition))
        {
            return Ok(Arc::clone(p));
        }
        Err(BrokerError::NotLeader {
            topic: topic.into(),
            partition,
            leader_addr: replicas.first().and_then(|r| self.addr_of(*r)),
        })
    }

    /// Hosted replicas of a topic's partitions (`None` where not hosted).
    pub fn hosted(&self, topic: &TopicState) -> Vec<Option<Arc<Partition>>> {
        let parts = self
            .partitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        (0..topic.meta.partitions)
            .map(|p| parts.get(&(topic.meta.name.clone(), p)).cloned())
            .collect()
    }

    /// Every hosted replica.
    pub fn all_partitions(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// The hosted replica (or the controller) of a Raft group.
    pub fn replica_of_group(&self, group: u64) -> Option<Arc<Partition>> {
        if group == CONTROLLER_GROUP {
            return Some(Arc::clone(&self.controller));
        }
        self.all_partitions().into_iter().find(|p| p.group() == group)
    }

    /// Address of a node, if it is a broker of the cluster.
    pub fn addr_of(&self, node: u64) -> Option<String> {
        if node == self.node_id {
            return Some(self.advertised_addr.clone());
        }
        self.peers.get(&node).cloned().or_else(|| {
            self.metadata
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .joined
                .get(&node)
                .cloned()
        })
    }

    /// Every broker of the cluster (formed with or joined since): node id →
    /// address.
    pub fn brokers(&self) -> BTreeMap<u64, String> {
        let mut all = self.peers.clone();
        for (id, addr) in &self
            .metadata
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .joined
        {
            all.entry(*id).or_insert_with(|| addr.clone());
        }
        all.insert(self.node_id, self.advertised_addr.clone());
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
            other => cluster_error(other),
        }
    }

    /// Reads committed controller records past what was applied, applies
    /// them in order and reconciles the hosted replicas.
    async fn apply_committed_metadata(self: &Arc<Self>) -> Result<()> {
        let mut changed = false;
        loop {
            let from = *self.applied.borrow();
            let bytes = match self.controller.read(from, 1 << 20) {
                Ok(b) => b,
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the controller log");
                    return Err(e);
                }
            };
            if bytes.is_empty() {
                break;
            }
            let mut next = from;
            for b in batches(&bytes) {
                let b = b.map_err(|source| strand_storage::StorageError::InvalidBatch { source })?;
                let records =
                    DecodedRecords::new(&b).map_err(|source| strand_storage::StorageError::InvalidBatch { source })?;
                for r in records.iter() {
                    let r = r.map_err(|source| strand_storage::StorageError::InvalidBatch { source })?;
                    if r.offset >= from {
                        match r.value.map(serde_json::from_slice::<Command>) {
                            Some(Ok(cmd)) => {
                                let mut m = self.metadata.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                                changed |= m.apply(&cmd);
                            }
                            Some(Err(e)) => {
                                tracing::error!(offset = r.offset, error = %e, "skipping an undecodable controller record")
                            }
                            None => {}
                        }
                    }
                }
                next = b.next_offset();
            }
            if std::mem::take(&mut changed) {
                let joined = self.metadata().joined;
                for (id, addr) in joined {
                    if id != self.node_id && !self.peers.contains_key(&id) {
                        self.transport.set_peer_if_new(id, addr);
                    }
                }
                self.reconcile().await?;
            }
            // Published after reconciling, so a waiter sees the replicas too.
            self.applied.send_replace(next);
        }
        Ok(())
    }

    /// Applies controller records as they commit, until shutdown.
    async fn follow_controller(self: Arc<Self>) {
        let mut hw = self.controller.watch_high_watermark();
        let mut stop = self.shutdown.subscribe();
        loop {
            if let Err(e) = self.apply_committed_metadata().await {
                tracing::error!(error = %e, "applying cluster metadata failed; retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
            tokio::select! {
                r = hw.changed() => if r.is_err() { return },
                _ = stop.wait_for(|s| *s) => return,
            }
        }
    }

    /// Starts replicas this node should host and stops those of deleted
    /// topics.
    async fn reconcile(self: &Arc<Self>) -> Result<()> {
        let meta = self.metadata();
        let mut wanted: HashMap<(String, u32), (&TopicState, u64, Vec<u64>)> = HashMap::new();
        for t in meta.topics.values() {
            for p in 0..t.assignment.len() as u32 {
                let hosts = t.hosts_of(p);
                if hosts.contains(&self.node_id) {
                    wanted.insert((t.meta.name.clone(), p), (t, t.group(p), hosts));
                }
            }
        }
        let hosted: Vec<(String, u32)> = self
            .partitions
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .keys()
            .cloned()
            .collect();
        for key in hosted {
            let stale = match (
                wanted.get(&key),
                self.partitions
                    .read()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get(&key),
            ) {
                (Some((_, group, _)), Some(p)) => p.group() != *group,
                (None, Some(_)) => true,
                _ => false,
            };
            if stale {
                self.stop_partition(&key).await?;
            }
        }
        for (key, (t, group, replicas)) in wanted {
            let exists = self
                .partitions
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .contains_key(&key);
            if !exists {
                // One damaged partition must not take the others down: it
                // stays offline (and says why) while the rest are served.
                if let Err(e) = self.start_partition(t, key.1, group, replicas).await {
                    tracing::error!(topic = %key.0, partition = key.1, error = %e, "partition replica offline");
                }
            }
        }
        Ok(())
    }

    async fn start_partition(&self, t: &TopicState, p: u32, group: u64, replicas: Vec<u64>) -> Result<()> {
        let log_config = topic::log_config(&self.config.log, &t.meta.configs)?;
        let dir = partition_dir(&self.config.data_dir, &t.meta.name, p);
        let topic_id = t.id;
        let replicated = replicas.len() > 1;
        let (log, recover_to) =
            tokio::task::spawn_blocking(move || open_partition_log(&dir, topic_id, log_config, replicated))
                .await
                .map_err(blocking_err)??;
        let fresh = recover_to.is_none() && log.latest() == 0 && log.last_raft_index().ok().flatten().is_none();
        let log = Arc::new(RwLock::new(log));
        let recover_to = match recover_to {
            Some(to) => refetch(self, group, &replicas, &log, to).await,
            None => None,
        };
        let handle = match recover_to {
            Some(to) => {
                self.node
                    .add_recovering_group(group, Arc::clone(&log), t.origin_of(p), to)
                    .await
            }
            // A new group starts with the configuration it was created with;
            // its log's membership changes (if it moved) follow from there.
            None => self.node.add_group(group, Arc::clone(&log), t.origin_of(p)).await,
        }
        .map_err(cluster_error)?;
        let never_moved = t.origin.is_empty();
        if never_moved && ((fresh && replicas.first() == Some(&self.node_id)) || replicas == [self.node_id]) {
            // The preferred leader of a new partition stands at once, so
            // leaders spread as placed and a new topic is usable quickly; a
            // sole replica need not wait out an election timeout either.
            let _ = self.node.campaign(group);
        }
        let name: Arc<str> = Arc::from(t.meta.name.as_str());
        let partition = Arc::new(Partition::new(name, p, group, replicas, log, handle));
        self.partitions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert((t.meta.name.clone(), p), partition);
        tracing::info!(topic = %t.meta.name, partition = p, group, "hosting partition replica");
        Ok(())
    }

    async fn stop_partition(&self, key: &(String, u32)) -> Result<()> {
        let removed = self
            .partitions
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
        let Some(p) = removed else {
            return Ok(());
        };
        self.node.remove_group(p.group()).await.map_err(cluster_error)?;
        let dir = p
            .log()
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .dir()
            .to_path_buf();
        tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&dir))
            .await
            .map_err(blocking_err)?
            .map_err(|source| BrokerError::Metadata {
                op: "delete partition",
                path: partition_dir(&self.config.data_dir, &key.0, key.1),
                source,
            })?;
        tracing::info!(topic = %key.0, partition = key.1, "stopped hosting partition replica");
        Ok(())
    }

    /// Proposes a metadata command through the controller and waits until
    /// this broker applied it. Not the controller leader: the request is
    /// forwarded to it by the caller (see `service::admin`).
    pub async fn propose_metadata(&self, cmd: &Command) -> Result<()> {
        let value = serde_json::to_vec(cmd).map_err(|e| BrokerError::InvalidRequest {
            reason: format!("cannot encode command: {e}"),
        })?;
        let mut b = BatchBuilder::new(Compression::None);
        b.push(&NewRecord {
            timestamp_ms: strand_storage::now_ms(),
            key: None,
            value: Some(&value),
            headers: &[],
        });
        let batch = b
            .build()
            .map_err(|source| strand_storage::StorageError::InvalidBatch { source })?;
        let info = self
            .node
            .propose(CONTROLLER_GROUP, batch.into(), Ack::All)
            .await
            .map_err(|e| self.not_leader("__controller", 0, e))?;
        self.wait_applied(info.last_offset + 1).await
    }

    /// Waits until the controller log is applied up to `offset`.
    pub async fn wait_applied(&self, offset: u64) -> Result<()> {
        let mut rx = self.applied.subscribe();
        let timeout = self.config.request_timeout();
        match tokio::time::timeout(timeout, rx.wait_for(|&a| a >= offset)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(BrokerError::ShuttingDown),
            Err(_) => Err(BrokerError::Timeout {
                what: "cluster metadata to be applied",
                waited_ms: timeout.as_millis() as u64,
            }),
        }
    }

    /// The controller group's status as this broker sees it.
    pub fn controller_status(&self) -> strand_cluster::GroupStatus {
        self.controller.status()
    }

    /// The controller group's leader, if known.
    pub fn controller_leader(&self) -> Option<u64> {
        self.controller.status().leader
    }

    /// Serializes this broker's metadata proposals.
    pub async fn admin_lock(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.admin.lock().await
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
        let waiting: Vec<String> = self
            .all_partitions()
            .iter()
            .filter(|p| p.status().leader.is_none())
            .map(|p| format!("{}-{}", p.topic(), p.id()))
            .collect();
        if !waiting.is_empty() {
            return Err(format!(
                "{} partitions without a leader (first: {})",
                waiting.len(),
                waiting[0]
            ));
        }
        Ok(())
    }

    /// Becomes `true` when the broker starts shutting down.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells long-lived requests to end.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Stops replication and syncs every log (graceful shutdown).
    pub fn shutdown(&self) {
        self.node.shutdown();
        for p in self.all_partitions().iter().chain(std::iter::once(&self.controller)) {
            if let Err(e) = p.flush() {
                tracing::error!(topic = %p.topic(), partition = p.id(), error = %e, "flush at shutdown failed");
            }
        }
    }
}

/// Re-fetches the committed entries of `group` from the other replicas into
/// an emptied log, before the replica joins its group. Returns the index the
/// replica must still reach before it may vote (`None`: it is whole again).
async fn refetch(
    state: &BrokerState,
    group: u64,
    replicas: &[u64],
    log: &Arc<RwLock<PartitionLog>>,
    target: u64,
) -> Option<u64> {
    use strand_proto::v1::{ReadLogRequest, peer_client::PeerClient};
    let peers: Vec<String> = replicas
        .iter()
        .filter(|&&r| r != state.node_id)
        .filter_map(|r| state.addr_of(*r))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let max = state.config.limits.max_message_bytes;
    let mut next = log
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .last_raft_index()
        .ok()
        .flatten()
        .map_or(1, |i| i + 1);
    'peers: while tokio::time::Instant::now() < deadline {
        for addr in &peers {
            let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
                continue;
            };
            let Ok(channel) = endpoint
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
            else {
                continue;
            };
            let mut client = PeerClient::new(channel)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            while tokio::time::Instant::now() < deadline {
                let req = ReadLogRequest {
                    cluster_id: state.cluster_id.clone(),
                    group,
                    from_index: next,
                    max_bytes: (max / 2) as u32,
                };
                let Ok(resp) = client.read_log(req).await else { break };
                let resp = resp.into_inner();
                if resp.batches.is_empty() {
                    if next > resp.commit.min(target) || next > target {
                        break 'peers;
                    }
                    break;
                }
                let mut l = log.write().unwrap_or_else(std::sync::PoisonError::into_inner);
                for b in strand_storage::batches(&resp.batches) {
                    let appended = b
                        .ok()
                        .filter(|b| b.raft_index() == next)
                        .map(|b| l.append_replicated(b.as_bytes()));
                    match appended {
                        Some(Ok(_)) => next += 1,
                        other => {
                            tracing::warn!(group, peer = %addr, ?other, "re-fetch got an unexpected entry; trying elsewhere");
                            break;
                        }
                    }
                }
                if let Err(e) = l.flush() {
                    tracing::error!(group, error = %e, "cannot sync the re-fetched log");
                    return Some(target);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let have = next.saturating_sub(1);
    tracing::info!(
        group,
        re_fetched_up_to = have,
        target,
        "re-fetched a damaged log from the other replicas"
    );
    (have < target).then_some(target)
}

/// Asks a running cluster (through any of `seeds`) to admit this broker;
/// returns the brokers the cluster was formed with.
async fn join_cluster(seeds: &str, node_id: u64, addr: &str, config: &BrokerConfig) -> Result<BTreeMap<u64, String>> {
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
                node_id,
                addr: addr.to_string(),
            };
            match AdminClient::new(channel).join_cluster(req).await {
                Ok(resp) => {
                    let r = resp.into_inner();
                    tracing::info!(node = node_id, via = %seed, cluster = %r.cluster_id, "joined the cluster");
                    return Ok(r.founders.into_iter().map(|b| (b.node_id, b.addr)).collect());
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
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A replication failure as a broker error.
pub fn cluster_error(e: ClusterError) -> BrokerError {
    match e {
        ClusterError::Storage(s) => BrokerError::Storage(s),
        ClusterError::NotLeader { .. } => BrokerError::NotLeader {
            topic: String::new(),
            partition: 0,
            leader_addr: None,
        },
        other => BrokerError::Replication { source: other },
    }
}
