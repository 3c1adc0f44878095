//! Topic operations (create, grow, delete, move a partition, admit a broker)
//! and the views of topics that `describe` answers with.

use std::time::Duration;

use strand_cluster::NodeId;
use strand_proto::v1::ErrorCode;

use super::Admin;
use super::request::MetadataRequest;
use super::status::{ReplicaLag, leaders};
use crate::controller::TopicState;
use crate::error::Result;
use crate::partition::PartitionOffsets;
use crate::topic::{TopicMeta, TopicUuid};

/// How long `create` waits for the new partitions hosted here to elect
/// leaders, so a producer started right after finds them (a partition still
/// electing answers `NOT_LEADER`, which clients retry).
const LEADER_WAIT: Duration = Duration::from_secs(5);

/// A partition as `describe` shows it.
#[derive(Clone, Debug)]
pub struct PartitionView {
    /// Partition.
    pub partition: u32,
    /// Assigned replicas, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// Where it is moving, if it is.
    pub moving_to: Vec<NodeId>,
    /// Its leader, when known.
    pub leader: Option<NodeId>,
    /// Offsets of the replica hosted here, if one is.
    pub offsets: Option<PartitionOffsets>,
    /// Every replica's lag, from the leader's report.
    pub replica_lag: Vec<ReplicaLag>,
}

/// A topic as `describe` shows it.
#[derive(Clone, Debug)]
pub struct TopicView {
    /// The metadata.
    pub topic: TopicState,
    /// Its partitions.
    pub partitions: Vec<PartitionView>,
}

impl Admin {
    /// A topic with the live offsets of the replicas hosted here.
    pub fn describe_local(&self, topic: &TopicState) -> TopicView {
        let hosted = self.node.hosted(topic);
        let partitions = topic
            .assignment
            .iter()
            .zip(hosted)
            .enumerate()
            .map(|(p, (replicas, local))| PartitionView {
                partition: p as u32,
                replicas: replicas.clone(),
                moving_to: topic.moving.get(&(p as u32)).cloned().unwrap_or_default(),
                leader: local.as_ref().and_then(|l| l.leader()),
                offsets: local.map(|l| l.offsets()),
                replica_lag: Vec::new(),
            })
            .collect();
        TopicView {
            topic: topic.clone(),
            partitions,
        }
    }

    /// A topic with live offsets, and each partition's leader and replica
    /// lag as its leader reports them (replica lag is known only there).
    pub async fn describe(&self, name: &str) -> Result<TopicView> {
        let t = self.node.topic(name)?;
        let mut view = self.describe_local(&t);
        let reports = self.gather().await;
        let leaders = leaders(&reports);
        for p in &mut view.partitions {
            if let Some(l) = leaders.get(&(t.meta.name.clone(), p.partition)) {
                p.leader = l.leader;
                p.replica_lag = l.replicas.clone();
            }
        }
        Ok(view)
    }

    /// Creates a topic; answers once this broker hosts its replicas and they
    /// have leaders (or [`LEADER_WAIT`] passed).
    ///
    /// With `id`, the create is safe to retry: if the topic already exists
    /// with that id (an earlier attempt of the same request created it, and
    /// its answer was lost or timed out), the answer is that topic, not
    /// `TopicExists`.
    pub async fn create_topic(&self, meta: TopicMeta, id: Option<TopicUuid>) -> Result<TopicView> {
        let name = meta.name.clone();
        let submitted = self
            .submit(MetadataRequest::CreateTopic {
                meta,
                uuid: Some(id.unwrap_or_else(TopicUuid::random)),
            })
            .await;
        let created = match (submitted, id) {
            (Ok(()), _) => {
                let created = self.node.topic(&name)?;
                tracing::info!(topic = %name, id = %created.uuid(), partitions = created.meta.partitions, "created topic");
                created
            }
            // Here, or forwarded from the controller's leader.
            (Err(exists), Some(id)) if exists.code() == ErrorCode::TopicAlreadyExists => {
                match self.applied_topic(&name).await {
                    Some(t) if t.uuid() == id => {
                        tracing::info!(topic = %name, %id, "create retried: the topic exists with the id asked for");
                        t
                    }
                    _ => return Err(exists),
                }
            }
            (Err(e), _) => return Err(e),
        };
        self.wait_for_leaders(&created).await;
        Ok(self.describe_local(&created))
    }

    /// The topic `name` once this broker's metadata has it (the controller
    /// said it exists, so it is committed and being applied here); `None`
    /// if it does not appear within the request timeout.
    async fn applied_topic(&self, name: &str) -> Option<TopicState> {
        let mut applied = self.node.watch_applied();
        let deadline = tokio::time::Instant::now() + self.node.config().request_timeout();
        loop {
            if let Ok(t) = self.node.topic(name) {
                return Some(t);
            }
            // The topic enters the metadata before the applied offset moves
            // (which waits for this broker to host the new replicas): look
            // again on every change, and at least every 50 ms.
            let changed = tokio::time::timeout(Duration::from_millis(50), applied.changed());
            if tokio::time::Instant::now() >= deadline || matches!(changed.await, Ok(Err(_))) {
                return None;
            }
        }
    }

    /// Grows a topic to `total` partitions.
    pub async fn create_partitions(&self, name: String, total: u32) -> Result<TopicView> {
        self.submit(MetadataRequest::AddPartitions {
            name: name.clone(),
            total,
        })
        .await?;
        let grown = self.node.topic(&name)?;
        self.wait_for_leaders(&grown).await;
        Ok(self.describe_local(&grown))
    }

    /// Deletes a topic.
    pub async fn delete_topic(&self, name: String) -> Result<()> {
        self.submit(MetadataRequest::DeleteTopic { name }).await
    }

    /// Starts moving a partition's replicas to `replicas` (the partition's
    /// leader does the moving; see [`super::reassign`]).
    pub async fn reassign(&self, name: String, partition: u32, replicas: Vec<NodeId>) -> Result<()> {
        self.submit(MetadataRequest::Reassign {
            name,
            partition,
            replicas,
        })
        .await
    }

    /// Waits (bounded) until every replica of `topic` hosted here has a
    /// leader, on the replicas' status channels.
    async fn wait_for_leaders(&self, topic: &TopicState) {
        let waits = self.node.hosted(topic).into_iter().flatten().map(|p| async move {
            let mut status = p.watch_status();
            let _ = status.wait_for(|s| s.leader.is_some()).await;
        });
        let _ = tokio::time::timeout(LEADER_WAIT, futures::future::join_all(waits)).await;
    }
}
