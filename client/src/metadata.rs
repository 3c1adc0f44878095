//! The cluster as the client sees it: brokers, topics, partition counts and
//! the address of each partition's leader, refreshed on demand.
//!
//! A refresh asks one broker: the one that answered last, else any known
//! broker, else each bootstrap address in order, until one answers. Callers
//! refresh when a topic is unknown to the cache or when a request failed in a
//! way that suggests the leader moved (`NOT_LEADER`, transport errors).

use foldhash::HashMap;
use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard, RwLockWriteGuard};

use strand_proto::v1::{ErrorCode, MetadataRequest, MetadataResponse};

use crate::connection::{ConnectionConfig, Connections, parse_bootstrap, with_timeout};
use crate::error::{ClientError, Result};

/// What the cache knows about one topic.
#[derive(Debug, Clone, Default)]
struct TopicMeta {
    /// Leader address of each partition, indexed by partition id; `None` when
    /// the partition has no known leader.
    leaders: Vec<Option<Arc<str>>>,
    /// The topic's id (`None` from a broker that does not send one). A topic
    /// deleted and created again under the same name has another.
    id: Option<Arc<str>>,
}

#[derive(Debug, Default)]
struct Snapshot {
    brokers: HashMap<u64, Arc<str>>,
    topics: HashMap<Arc<str>, TopicMeta>,
    /// The broker that answered the last metadata request.
    last_good: Option<Arc<str>>,
}

/// Topics a refresh found missing or in error.
#[derive(Debug, Default)]
pub(crate) struct RefreshReport {
    /// `(topic, error)` for every requested topic the broker refused.
    pub errors: Vec<(String, ClientError)>,
}

impl RefreshReport {
    /// The error reported for `topic`, if any.
    pub(crate) fn error_for(&self, topic: &str) -> Option<&ClientError> {
        self.errors.iter().find(|(t, _)| t == topic).map(|(_, e)| e)
    }
}

/// Shared metadata cache plus the connections it hands out. Thread-safe.
#[derive(Debug)]
pub(crate) struct Metadata {
    bootstrap: Vec<String>,
    conns: Connections,
    state: RwLock<Snapshot>,
    /// Serialises refreshes so a burst of failures causes one request.
    refresh_lock: tokio::sync::Mutex<()>,
}

impl Metadata {
    /// Parses `bootstrap` and loads the metadata of every topic.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] for an empty bootstrap list;
    /// [`ClientError::Connect`] if no address answers.
    pub(crate) async fn connect(bootstrap: &str, config: ConnectionConfig) -> Result<Arc<Metadata>> {
        let md = Arc::new(Metadata {
            bootstrap: parse_bootstrap(bootstrap)?,
            conns: Connections::new(config),
            state: RwLock::new(Snapshot::default()),
            refresh_lock: tokio::sync::Mutex::new(()),
        });
        md.refresh(&[]).await?;
        Ok(md)
    }

    pub(crate) fn conns(&self) -> &Connections {
        &self.conns
    }

    /// Number of partitions of `topic`, if cached.
    pub(crate) fn partition_count(&self, topic: &str) -> Option<u32> {
        self.read().topics.get(topic).map(|t| t.leaders.len() as u32)
    }

    /// The id of `topic`, if cached (and the broker sent one).
    pub(crate) fn topic_id(&self, topic: &str) -> Option<Arc<str>> {
        self.read().topics.get(topic)?.id.clone()
    }

    /// Leader address of `topic`/`partition`, if known.
    pub(crate) fn leader(&self, topic: &str, partition: u32) -> Option<Arc<str>> {
        self.read().topics.get(topic)?.leaders.get(partition as usize)?.clone()
    }

    /// Records a leader hint (from a `NOT_LEADER` answer) until the next refresh.
    pub(crate) fn set_leader(&self, topic: &str, partition: u32, addr: &str) {
        let mut state = self.write();
        if let Some(slot) = state
            .topics
            .get_mut(topic)
            .and_then(|t| t.leaders.get_mut(partition as usize))
        {
            *slot = Some(Arc::from(addr));
        }
    }

    /// Names of the cached topics.
    pub(crate) fn cached_topics(&self) -> Vec<String> {
        self.read().topics.keys().map(|t| t.to_string()).collect()
    }

    /// Partition count of `topic`, refreshing the cache once if it is not there.
    ///
    /// # Errors
    /// The broker's error for the topic (`UNKNOWN_TOPIC`, ...) or the refresh's.
    pub(crate) async fn partitions_of(&self, topic: &str) -> Result<u32> {
        if let Some(n) = self.partition_count(topic) {
            return Ok(n);
        }
        let report = self.refresh(&[topic]).await?;
        if let Some(e) = report.error_for(topic) {
            return Err(e.clone());
        }
        self.partition_count(topic)
            .ok_or_else(|| ClientError::broker(ErrorCode::UnknownTopic, format!("topic {topic:?} does not exist")))
    }

    /// Asks a broker for the metadata of `topics` (all topics when empty) and
    /// updates the cache.
    ///
    /// # Errors
    /// [`ClientError::Connect`] if no broker answers; a non-retriable broker
    /// error for the whole request.
    pub(crate) async fn refresh(&self, topics: &[&str]) -> Result<RefreshReport> {
        let _serial = self.refresh_lock.lock().await;
        let request = MetadataRequest {
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        };
        let timeout = self.conns.config().request_timeout;
        let (addr, response) = self
            .with_any_broker(|addr| {
                let request = request.clone();
                async move {
                    let mut client = self.conns.strand(&addr).await?;
                    let resp = with_timeout(|| format!("metadata request to {addr}"), timeout, async {
                        Ok(client.metadata(request).await?.into_inner())
                    })
                    .await?;
                    Ok((addr, resp))
                }
            })
            .await?;
        Ok(self.apply(addr, topics, response))
    }

    /// Runs `call` against brokers in turn (last good one, known brokers,
    /// then the bootstrap list) until one gives an answer that is not a
    /// retriable failure.
    ///
    /// # Errors
    /// The first non-retriable error; if every broker failed, the last
    /// broker-reported or timeout error, else [`ClientError::Connect`]
    /// naming every address tried.
    pub(crate) async fn with_any_broker<T, F, Fut>(&self, mut call: F) -> Result<T>
    where
        F: FnMut(Arc<str>) -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let candidates = self.candidates();
        let mut last: Option<ClientError> = None;
        for addr in &candidates {
            match call(addr.clone()).await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retriable() => {
                    tracing::debug!(broker = %addr, error = %e, "broker did not answer, trying the next");
                    if e.needs_metadata_refresh() {
                        self.conns.invalidate(addr);
                    }
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        let source: Arc<dyn std::error::Error + Send + Sync> = match last {
            Some(ClientError::Connect { source, .. }) => source,
            Some(e @ ClientError::Transport { .. }) => Arc::new(e),
            // A broker answered (e.g. SHUTTING_DOWN) or timed out: report that as is.
            Some(e) => return Err(e),
            None => Arc::new(ClientError::invalid("no broker address to try")),
        };
        Err(ClientError::Connect {
            addrs: candidates.iter().map(|a| a.to_string()).collect(),
            source,
        })
    }

    /// Addresses to try, best first, without duplicates.
    fn candidates(&self) -> Vec<Arc<str>> {
        let state = self.read();
        let mut out: Vec<Arc<str>> = Vec::with_capacity(1 + state.brokers.len() + self.bootstrap.len());
        let mut push = |a: Arc<str>| {
            if !out.contains(&a) {
                out.push(a);
            }
        };
        if let Some(a) = &state.last_good {
            push(a.clone());
        }
        let mut brokers: Vec<_> = state.brokers.iter().collect();
        brokers.sort_by_key(|(id, _)| **id);
        for (_, a) in brokers {
            push(a.clone());
        }
        for a in &self.bootstrap {
            push(Arc::from(a.as_str()));
        }
        out
    }

    fn apply(&self, answered_by: Arc<str>, requested: &[&str], resp: MetadataResponse) -> RefreshReport {
        let mut report = RefreshReport::default();
        let mut state = self.write();
        // A broker that is behind the cluster's metadata says so per topic
        // (a retriable error): it is not the one to ask first next time.
        let behind = resp.topics.iter().any(|t| {
            t.error
                .as_ref()
                .and_then(|e| ClientError::from_partition_error(e, &t.name, 0, 0))
                .is_some_and(|e| e.is_retriable())
        });
        if behind {
            if state.last_good.as_deref() == Some(&*answered_by) {
                state.last_good = None;
            }
        } else {
            state.last_good = Some(answered_by);
        }
        if !resp.brokers.is_empty() {
            state.brokers = resp
                .brokers
                .into_iter()
                .map(|b| (b.node_id, Arc::from(b.addr)))
                .collect();
        }
        if requested.is_empty() {
            state.topics.clear();
        }
        for t in resp.topics {
            if let Some(err) = t
                .error
                .as_ref()
                .and_then(|e| ClientError::from_partition_error(e, &t.name, 0, 0))
            {
                if !err.is_retriable() {
                    // Only a broker that knows says a topic is gone.
                    state.topics.remove(t.name.as_str());
                }
                report.errors.push((t.name, err));
                continue;
            }
            let n = t.partitions.len();
            let mut leaders = vec![None; n];
            for p in &t.partitions {
                match leaders.get_mut(p.partition as usize) {
                    Some(slot) => *slot = state.brokers.get(&p.leader).cloned(),
                    None => tracing::warn!(
                        topic = %t.name,
                        partition = p.partition,
                        partitions = n,
                        "metadata names a partition beyond the partition count; ignored"
                    ),
                }
            }
            let id = Some(t.topic_id).filter(|id| !id.is_empty()).map(Arc::from);
            state.topics.insert(Arc::from(t.name), TopicMeta { leaders, id });
        }
        for topic in requested {
            if !state.topics.contains_key(*topic) && report.error_for(topic).is_none() {
                report.errors.push((
                    (*topic).to_owned(),
                    ClientError::broker(ErrorCode::UnknownTopic, format!("topic {topic:?} does not exist")),
                ));
            }
        }
        report
    }

    fn read(&self) -> RwLockReadGuard<'_, Snapshot> {
        // Every update replaces whole entries, so a poisoned lock still holds a usable snapshot.
        self.state.read()
    }

    fn write(&self) -> RwLockWriteGuard<'_, Snapshot> {
        self.state.write()
    }
}

#[cfg(test)]
impl Metadata {
    /// A cache with fixed content and no reachable broker, for unit tests.
    pub(crate) fn fixed(topics: &[(&str, u32)], leader: &str) -> Metadata {
        let state = Snapshot {
            brokers: HashMap::from_iter([(1, Arc::from(leader))]),
            topics: topics
                .iter()
                .map(|(t, n)| {
                    let leaders = vec![Some(Arc::from(leader)); *n as usize];
                    (Arc::from(*t), TopicMeta { leaders, id: None })
                })
                .collect(),
            last_good: None,
        };
        Metadata {
            bootstrap: vec![leader.to_owned()],
            conns: Connections::new(ConnectionConfig::default()),
            state: RwLock::new(state),
            refresh_lock: tokio::sync::Mutex::new(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use strand_proto::v1::{BrokerInfo, PartitionMetadata, TopicMetadata};

    use super::*;

    fn response() -> MetadataResponse {
        MetadataResponse {
            brokers: vec![
                BrokerInfo {
                    node_id: 1,
                    addr: "a:1".into(),
                },
                BrokerInfo {
                    node_id: 2,
                    addr: "b:2".into(),
                },
            ],
            topics: vec![
                TopicMetadata {
                    name: "t".into(),
                    partitions: (0..3)
                        .map(|p| PartitionMetadata {
                            partition: p,
                            leader: u64::from(p % 2) + 1,
                            replicas: vec![1, 2],
                        })
                        .collect(),
                    error: None,
                    topic_id: "0b3c1f0e-6a3e-4f4e-9a55-0d1f2e3c4b5a".into(),
                },
                TopicMetadata {
                    name: "gone".into(),
                    topic_id: String::new(),
                    partitions: vec![],
                    error: Some(strand_proto::v1::Error {
                        code: ErrorCode::UnknownTopic as i32,
                        message: "no such topic".into(),
                        ..Default::default()
                    }),
                },
            ],
            cluster_id: "c".into(),
            controller_id: 1,
        }
    }

    #[test]
    fn refresh_answer_fills_leaders_by_address_and_reports_topic_errors() {
        let md = Metadata::fixed(&[("gone", 1)], "z:9");
        let report = md.apply(Arc::from("a:1"), &["t", "gone", "missing"], response());
        assert_eq!(md.partition_count("t"), Some(3));
        assert_eq!(md.leader("t", 0).as_deref(), Some("a:1"));
        assert_eq!(md.leader("t", 1).as_deref(), Some("b:2"));
        assert_eq!(md.leader("t", 3), None);
        assert_eq!(
            md.topic_id("t").as_deref(),
            Some("0b3c1f0e-6a3e-4f4e-9a55-0d1f2e3c4b5a")
        );
        assert_eq!(md.partition_count("gone"), None, "a topic in error leaves the cache");
        assert_eq!(report.error_for("gone").map(ClientError::reason), Some("UNKNOWN_TOPIC"));
        assert_eq!(
            report.error_for("missing").map(ClientError::reason),
            Some("UNKNOWN_TOPIC")
        );
        assert_eq!(md.candidates().first().map(|a| a.to_string()), Some("a:1".to_owned()));
    }

    #[test]
    fn leader_hints_override_the_cache() {
        let md = Metadata::fixed(&[("t", 2)], "a:1");
        md.set_leader("t", 1, "b:2");
        assert_eq!(md.leader("t", 1).as_deref(), Some("b:2"));
        assert_eq!(md.leader("t", 0).as_deref(), Some("a:1"));
    }
}
