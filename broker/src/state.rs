//! The broker's topics and partitions, loaded from the data directory and
//! changed by admin requests.
//!
//! Invariant: a topic is in `topics` only after its metadata is durable and
//! all its partition logs are open; on deletion it leaves the map and the
//! metadata file before its files are removed, so a crash in between leaves
//! orphan directories (removed at the next start), never a topic without logs.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use strand_storage::{LogConfig, PartitionLog};

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::registry::{Metadata, MetadataStore};
use crate::topic::{self, TopicMeta};

/// A topic being served.
#[derive(Debug)]
pub struct Topic {
    /// Its stored description.
    pub meta: TopicMeta,
    /// Its log settings (broker defaults + topic overrides).
    pub log_config: LogConfig,
    /// Partitions, indexed by partition number.
    pub partitions: Vec<Arc<Partition>>,
}

/// Shared state of one broker.
pub struct BrokerState {
    /// Settings.
    pub config: BrokerConfig,
    /// Address advertised to clients.
    pub advertised_addr: String,
    /// Cluster id from the data directory.
    pub cluster_id: String,
    store: MetadataStore,
    /// Serializes metadata changes (create/delete) so the file and the map
    /// change together.
    admin: Mutex<()>,
    topics: RwLock<HashMap<String, Arc<Topic>>>,
    shutdown: tokio::sync::watch::Sender<bool>,
}

impl std::fmt::Debug for BrokerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerState")
            .field("node_id", &self.config.node_id)
            .finish()
    }
}

fn partition_dir(data_dir: &std::path::Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

impl BrokerState {
    /// Opens every topic in the data directory (recovering each partition
    /// log) and removes directories of topics that no longer exist.
    pub fn open(config: BrokerConfig, advertised_addr: String) -> Result<Self> {
        config.validate()?;
        let store = MetadataStore::new(&config.data_dir)?;
        let meta = store.load_or_init(config.node_id)?;
        let min_fsync = Duration::from_millis(config.min_fsync_interval_ms);
        let mut topics = HashMap::new();
        for t in meta.topics.values() {
            let log_config = topic::log_config(&config.log, &t.configs)?;
            let mut partitions = Vec::with_capacity(t.partitions as usize);
            for p in 0..t.partitions {
                let dir = partition_dir(&config.data_dir, &t.name, p);
                let log = PartitionLog::open(&dir, log_config.clone())?;
                let report = log.recovery_report();
                if report.truncated.is_some() || !report.rebuilt_indexes.is_empty() {
                    tracing::warn!(topic = %t.name, partition = p, ?report, "partition recovered");
                }
                partitions.push(Partition::start(Arc::from(t.name.as_str()), p, log, min_fsync));
            }
            tracing::info!(topic = %t.name, partitions = t.partitions, "opened topic");
            topics.insert(
                t.name.clone(),
                Arc::new(Topic {
                    meta: t.clone(),
                    log_config,
                    partitions,
                }),
            );
        }
        remove_orphans(&config.data_dir, &meta);
        Ok(BrokerState {
            cluster_id: meta.cluster_id.clone(),
            advertised_addr,
            config,
            store,
            admin: Mutex::new(()),
            topics: RwLock::new(topics),
            shutdown: tokio::sync::watch::Sender::new(false),
        })
    }

    /// The topic, or `UNKNOWN_TOPIC`.
    pub fn topic(&self, name: &str) -> Result<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownTopic { topic: name.into() })
    }

    /// The partition, or `UNKNOWN_TOPIC` / `UNKNOWN_PARTITION`.
    pub fn partition(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        let t = self.topic(topic)?;
        t.partitions
            .get(partition as usize)
            .cloned()
            .ok_or_else(|| BrokerError::UnknownPartition {
                topic: topic.into(),
                partition,
                partitions: t.meta.partitions,
            })
    }

    /// Every topic, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let mut v: Vec<_> = self
            .topics
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect();
        v.sort_by(|a, b| a.meta.name.cmp(&b.meta.name));
        v
    }

    fn snapshot(&self) -> Metadata {
        let topics = self
            .topics()
            .iter()
            .map(|t| (t.meta.name.clone(), t.meta.clone()))
            .collect::<BTreeMap<_, _>>();
        Metadata {
            cluster_id: self.cluster_id.clone(),
            node_id: self.config.node_id,
            topics,
        }
    }

    /// Creates a topic: validates it, opens its partition logs, then makes
    /// the metadata durable. Blocking (file creation); call off the runtime's
    /// hot path.
    pub fn create_topic(&self, meta: TopicMeta) -> Result<Arc<Topic>> {
        topic::validate_name(&meta.name)?;
        if meta.partitions == 0 || meta.partitions > topic::MAX_PARTITIONS {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "partitions must be in 1..={}, got {}",
                    topic::MAX_PARTITIONS,
                    meta.partitions
                ),
            });
        }
        if meta.replication_factor != 1 {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "replication factor {} is larger than the 1 broker available",
                    meta.replication_factor
                ),
            });
        }
        let log_config = topic::log_config(&self.config.log, &meta.configs)?;
        let _guard = self.admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.topic(&meta.name).is_ok() {
            return Err(BrokerError::TopicExists { topic: meta.name });
        }
        let min_fsync = Duration::from_millis(self.config.min_fsync_interval_ms);
        let mut partitions = Vec::with_capacity(meta.partitions as usize);
        for p in 0..meta.partitions {
            let dir = partition_dir(&self.config.data_dir, &meta.name, p);
            // Leftovers of a deletion that crashed half-way must not come back.
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|source| BrokerError::Metadata {
                    op: "remove stale partition dir",
                    path: dir.clone(),
                    source,
                })?;
            }
            let log = PartitionLog::open(&dir, log_config.clone())?;
            partitions.push(Partition::start(Arc::from(meta.name.as_str()), p, log, min_fsync));
        }
        let topic = Arc::new(Topic {
            meta: meta.clone(),
            log_config,
            partitions,
        });
        let mut next = self.snapshot();
        next.topics.insert(meta.name.clone(), meta.clone());
        self.store.store(&next)?;
        self.topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(meta.name.clone(), Arc::clone(&topic));
        tracing::info!(topic = %meta.name, partitions = meta.partitions, "created topic");
        Ok(topic)
    }

    /// Deletes a topic and its data.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        let _guard = self.admin.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let topic = self.topic(name)?;
        let mut next = self.snapshot();
        next.topics.remove(name);
        self.store.store(&next)?;
        self.topics
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name);
        for p in &topic.partitions {
            p.delete()?;
        }
        tracing::info!(topic = %name, "deleted topic");
        Ok(())
    }

    /// Becomes `true` when the broker starts shutting down; long-lived
    /// requests (subscriptions, long polls) end on it.
    pub fn shutdown_signal(&self) -> tokio::sync::watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Tells long-lived requests to end.
    pub fn begin_shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Flushes every partition (graceful shutdown).
    pub fn shutdown(&self) {
        for t in self.topics() {
            for p in &t.partitions {
                if let Err(e) = p.shutdown() {
                    tracing::error!(topic = %t.meta.name, partition = p.id(), error = %e, "flush at shutdown failed");
                }
            }
        }
    }
}

/// Removes `<topic>-<n>` directories of topics the metadata does not list
/// (a deletion interrupted by a crash).
fn remove_orphans(data_dir: &std::path::Path, meta: &Metadata) {
    let Ok(rd) = std::fs::read_dir(data_dir) else {
        return;
    };
    let known: std::collections::HashSet<String> = meta
        .topics
        .values()
        .flat_map(|t| (0..t.partitions).map(move |p| format!("{}-{p}", t.name)))
        .collect();
    for e in rd.flatten() {
        let path = e.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        let looks_like_partition = name
            .rsplit_once('-')
            .is_some_and(|(t, p)| !t.is_empty() && p.parse::<u32>().is_ok());
        if path.is_dir() && looks_like_partition && !known.contains(&name) {
            tracing::warn!(dir = %path.display(), "removing data of a deleted topic");
            if let Err(err) = std::fs::remove_dir_all(&path) {
                tracing::error!(dir = %path.display(), error = %err, "could not remove orphan partition dir");
            }
        }
    }
}
