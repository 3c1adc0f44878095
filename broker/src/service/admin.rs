//! Admin requests and Metadata: translate protobuf to topic operations.

use std::sync::Arc;

use strand_proto::v1::{
    BrokerInfo, CreateTopicRequest, ListTopicsResponse, MetadataRequest, MetadataResponse, PartitionDescription,
    PartitionMetadata, TopicDescription, TopicMetadata, TopicSummary,
};

use crate::error::Result;
use crate::state::{BrokerState, Topic};
use crate::topic::TopicMeta;

/// Describes a topic with live offsets per partition.
pub fn describe(state: &BrokerState, topic: &Topic) -> TopicDescription {
    let node = state.config.node_id;
    TopicDescription {
        name: topic.meta.name.clone(),
        replication_factor: topic.meta.replication_factor,
        configs: topic.meta.configs.clone().into_iter().collect(),
        partitions: topic
            .partitions
            .iter()
            .map(|p| {
                let st = p.state();
                PartitionDescription {
                    partition: p.id(),
                    leader: node,
                    replicas: vec![node],
                    log_start_offset: st.log_start_offset,
                    high_watermark: st.high_watermark,
                    log_end_offset: st.log_end_offset,
                    size_bytes: st.size_bytes,
                    segments: st.segments,
                }
            })
            .collect(),
    }
}

/// Creates a topic (blocking file work runs off the async workers).
pub async fn create_topic(state: &Arc<BrokerState>, req: CreateTopicRequest) -> Result<TopicDescription> {
    let meta = TopicMeta {
        name: req.name,
        partitions: req.partitions,
        replication_factor: req.replication_factor.max(1),
        configs: req.configs.into_iter().collect(),
    };
    let st = Arc::clone(state);
    let topic = blocking(move || st.create_topic(meta)).await?;
    Ok(describe(state, &topic))
}

/// Deletes a topic.
pub async fn delete_topic(state: &Arc<BrokerState>, name: String) -> Result<()> {
    let st = Arc::clone(state);
    blocking(move || st.delete_topic(&name)).await
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| crate::error::BrokerError::InvalidRequest {
            reason: format!("admin task failed: {e}"),
        })?
}

/// Lists topics.
pub fn list_topics(state: &BrokerState) -> ListTopicsResponse {
    ListTopicsResponse {
        topics: state
            .topics()
            .iter()
            .map(|t| TopicSummary {
                name: t.meta.name.clone(),
                partitions: t.meta.partitions,
                replication_factor: t.meta.replication_factor,
            })
            .collect(),
    }
}

/// Brokers, and topics with their partition leaders.
pub fn metadata(state: &BrokerState, req: MetadataRequest) -> MetadataResponse {
    let node = state.config.node_id;
    let topic_meta = |t: &Topic| TopicMetadata {
        name: t.meta.name.clone(),
        partitions: (0..t.meta.partitions)
            .map(|p| PartitionMetadata {
                partition: p,
                leader: node,
                replicas: vec![node],
            })
            .collect(),
        error: None,
    };
    let topics = if req.topics.is_empty() {
        state.topics().iter().map(|t| topic_meta(t)).collect()
    } else {
        req.topics
            .iter()
            .map(|name| match state.topic(name) {
                Ok(t) => topic_meta(&t),
                Err(e) => TopicMetadata {
                    name: name.clone(),
                    partitions: Vec::new(),
                    error: Some(e.to_proto()),
                },
            })
            .collect()
    };
    MetadataResponse {
        brokers: vec![BrokerInfo {
            node_id: node,
            addr: state.advertised_addr.clone(),
        }],
        topics,
        cluster_id: state.cluster_id.clone(),
    }
}
