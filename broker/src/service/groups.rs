//! The `Groups` service: consumer-group coordination and offsets. Protobuf
//! in, `groups` calls, protobuf out.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use strand_proto::v1 as pb;
use strand_storage::Offset;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::access::{self, caller};
use crate::controller::acl::{AclOperation as Op, ResourceType};
use crate::error::{BrokerError, Result};
use crate::groups::GroupCoordinator;
use crate::groups::assignor::{Assignor, TopicPartition};
use crate::groups::heartbeat::HeartbeatRequest;
use crate::groups::offsets::CommitRequest;
use crate::groups::store::{Committed, MAX_COMMIT_METADATA};
use crate::metrics::Metrics;
use crate::topic::requested_topic_id;

/// The `Groups` service.
#[derive(Clone, Debug)]
pub struct GroupsService {
    groups: Arc<GroupCoordinator>,
    metrics: Arc<Metrics>,
}

impl GroupsService {
    /// A service over `groups`.
    pub fn new(groups: Arc<GroupCoordinator>, metrics: Arc<Metrics>) -> Self {
        GroupsService { groups, metrics }
    }
}

fn to_topic_partitions(set: &BTreeSet<TopicPartition>) -> Vec<pb::TopicPartitions> {
    to_topic_partitions_with(set, |_| String::new())
}

/// Partitions grouped by topic, each topic with the id `id_of` gives it.
fn to_topic_partitions_with(
    set: &BTreeSet<TopicPartition>,
    id_of: impl Fn(&str) -> String,
) -> Vec<pb::TopicPartitions> {
    let mut by_topic: BTreeMap<&str, Vec<u32>> = BTreeMap::new();
    for (t, p) in set {
        by_topic.entry(t).or_default().push(*p);
    }
    by_topic
        .into_iter()
        .map(|(t, ps)| pb::TopicPartitions {
            topic: t.to_string(),
            partitions: ps,
            topic_id: id_of(t),
        })
        .collect()
}

fn from_topic_partitions(list: &[pb::TopicPartitions]) -> BTreeSet<TopicPartition> {
    list.iter()
        .flat_map(|tp| tp.partitions.iter().map(move |p| (tp.topic.clone(), *p)))
        .collect()
}

/// Most offsets one commit or reset may carry: the coordinator writes them
/// as one batch to `__consumer_offsets`, which must stay well inside a
/// replication message.
const MAX_OFFSETS_PER_REQUEST: usize = 20_000;
/// Most metadata, in all, one commit or reset may carry.
const MAX_METADATA_PER_REQUEST: usize = 256 << 10;

fn from_offset_commits(list: Vec<pb::OffsetCommit>) -> Result<Vec<(TopicPartition, Committed)>> {
    let metadata: usize = list.iter().map(|o| o.metadata.len()).sum();
    if list.len() > MAX_OFFSETS_PER_REQUEST || metadata > MAX_METADATA_PER_REQUEST {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "{} offsets with {metadata} bytes of metadata in one request: at most \
                 {MAX_OFFSETS_PER_REQUEST} offsets and {MAX_METADATA_PER_REQUEST} bytes; split it",
                list.len()
            ),
        });
    }
    list.into_iter()
        .map(|o| {
            if o.metadata.len() > MAX_COMMIT_METADATA {
                return Err(BrokerError::InvalidRequest {
                    reason: format!(
                        "offset metadata of {} bytes is larger than {MAX_COMMIT_METADATA}",
                        o.metadata.len()
                    ),
                });
            }
            Ok((
                (o.topic.clone(), o.partition),
                Committed {
                    offset: Offset(o.offset),
                    topic_id: requested_topic_id(&o.topic, &o.topic_id)?,
                    metadata: o.metadata,
                },
            ))
        })
        .collect()
}

fn to_offset_commits(offsets: impl IntoIterator<Item = (TopicPartition, Committed)>) -> Vec<pb::OffsetCommit> {
    offsets
        .into_iter()
        .map(|((topic, partition), c)| pb::OffsetCommit {
            topic,
            partition,
            offset: c.offset.get(),
            metadata: c.metadata,
            topic_id: c.topic_id.map(|id| id.to_string()).unwrap_or_default(),
        })
        .collect()
}

fn span(rpc: &'static str, group: &str) -> tracing::Span {
    tracing::debug_span!("request", rpc, group)
}

impl GroupsService {
    async fn heartbeat(&self, req: pb::GroupHeartbeatRequest) -> Result<pb::GroupHeartbeatResponse> {
        let assignor: Assignor = req
            .assignor
            .parse()
            .map_err(|reason| BrokerError::InvalidRequest { reason })?;
        let a = self
            .groups
            .heartbeat(HeartbeatRequest {
                group: req.group,
                member_id: req.member_id,
                instance_id: Some(req.instance_id).filter(|s| !s.is_empty()),
                client_id: req.client_id,
                member_epoch: req.member_epoch,
                topics: req.topics.into_iter().collect(),
                session_timeout: Duration::from_millis(u64::from(req.session_timeout_ms)),
                owned: from_topic_partitions(&req.owned),
                assignor,
            })
            .await?;
        Ok(pb::GroupHeartbeatResponse {
            member_id: a.answer.member_id,
            member_epoch: a.answer.epoch,
            heartbeat_interval_ms: a.heartbeat_interval.as_millis() as u32,
            assignment: to_topic_partitions_with(&a.answer.assignment, |t| {
                self.groups.topic_id(t).map(|id| id.to_string()).unwrap_or_default()
            }),
        })
    }

    async fn describe(&self, group: &str) -> Result<pb::GroupDescription> {
        let v = self.groups.describe(group).await?;
        Ok(pb::GroupDescription {
            group: v.group,
            state: v.state.into(),
            epoch: v.epoch,
            assignor: v.assignor.into(),
            coordinator: v.coordinator.get(),
            members: v
                .members
                .into_iter()
                .map(|m| pb::GroupMember {
                    member_id: m.member_id,
                    instance_id: m.instance_id.unwrap_or_default(),
                    client_id: m.client_id,
                    member_epoch: m.member_epoch,
                    topics: m.topics.into_iter().collect(),
                    assignment: to_topic_partitions(&m.assignment),
                })
                .collect(),
            offsets: v
                .offsets
                .into_iter()
                .map(|o| pb::GroupPartitionOffset {
                    lag: o.lag().map_or(-1, |l| l as i64),
                    out_of_range: o.out_of_range(),
                    topic: o.partition.0,
                    partition: o.partition.1,
                    committed: o.committed.map_or(-1, |c| c.get() as i64),
                    log_end_offset: o.high_watermark.map_or(-1, |e| e.get() as i64),
                    member_id: o.member_id.unwrap_or_default(),
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl pb::groups_server::Groups for GroupsService {
    async fn find_coordinator(
        &self,
        req: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        let who = caller(&req);
        let group = req.into_inner().group;
        access::group(self.groups.node(), &who, Op::Describe, &group)?;
        let (node, addr) = self
            .groups
            .find(&group)
            .instrument(span("find_coordinator", &group))
            .await?;
        Ok(Response::new(pb::FindCoordinatorResponse {
            node_id: node.get(),
            addr,
        }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::GroupHeartbeatRequest>,
    ) -> Result<Response<pb::GroupHeartbeatResponse>, Status> {
        let _t = self.metrics.time("group_heartbeat");
        let who = caller(&req);
        let req = req.into_inner();
        // Joining (and staying) needs `read` on the group and on every
        // topic subscribed to.
        let node = self.groups.node();
        access::group(node, &who, Op::Read, &req.group)?;
        access::topics(node, &who, Op::Read, req.topics.iter().map(String::as_str))?;
        let span = span("heartbeat", &req.group);
        Ok(Response::new(self.heartbeat(req).instrument(span).await?))
    }

    async fn commit_offsets(
        &self,
        req: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        let _t = self.metrics.time("commit_offsets");
        let who = caller(&req);
        let r = req.into_inner();
        let node = self.groups.node();
        access::group(node, &who, Op::Read, &r.group)?;
        access::topics(node, &who, Op::Read, r.offsets.iter().map(|o| o.topic.as_str()))?;
        let span = span("commit_offsets", &r.group);
        let committed = self
            .groups
            .commit(CommitRequest {
                offsets: from_offset_commits(r.offsets)?,
                group: r.group,
                member_id: r.member_id,
                member_epoch: r.member_epoch,
            })
            .instrument(span)
            .await?;
        Ok(Response::new(pb::CommitOffsetsResponse {
            committed: to_offset_commits(committed),
        }))
    }

    async fn fetch_offsets(
        &self,
        req: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        access::group(self.groups.node(), &who, Op::Describe, &r.group)?;
        let offsets = self
            .groups
            .fetch_offsets(&r.group, &from_topic_partitions(&r.partitions))
            .instrument(span("fetch_offsets", &r.group))
            .await?;
        Ok(Response::new(pb::FetchOffsetsResponse {
            offsets: to_offset_commits(offsets),
        }))
    }

    async fn list_groups(
        &self,
        req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let who = caller(&req);
        let groups = self.groups.list().await?;
        let node = self.groups.node();
        Ok(Response::new(pb::ListGroupsResponse {
            // Only the groups the caller may describe.
            groups: groups
                .into_iter()
                .filter(|g| node.permits(&who, Op::Describe, ResourceType::Group, &g.group))
                .map(|g| pb::GroupSummary {
                    group: g.group,
                    state: g.state.into(),
                    members: g.members as u32,
                    coordinator: g.coordinator.get(),
                })
                .collect(),
        }))
    }

    async fn describe_group(
        &self,
        req: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::GroupDescription>, Status> {
        let who = caller(&req);
        let group = req.into_inner().group;
        access::group(self.groups.node(), &who, Op::Describe, &group)?;
        Ok(Response::new(
            self.describe(&group).instrument(span("describe_group", &group)).await?,
        ))
    }

    async fn reset_offsets(
        &self,
        req: Request<pb::ResetOffsetsRequest>,
    ) -> Result<Response<pb::ResetOffsetsResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        let node = self.groups.node();
        access::group(node, &who, Op::Read, &r.group)?;
        access::topics(node, &who, Op::Read, r.offsets.iter().map(|o| o.topic.as_str()))?;
        self.groups
            .reset(&r.group, r.force, &from_offset_commits(r.offsets.clone())?)
            .instrument(span("reset_offsets", &r.group))
            .await?;
        Ok(Response::new(pb::ResetOffsetsResponse { offsets: r.offsets }))
    }

    async fn delete_group(
        &self,
        req: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        let who = caller(&req);
        let group = req.into_inner().group;
        access::group(self.groups.node(), &who, Op::Delete, &group)?;
        self.groups
            .delete(&group)
            .instrument(span("delete_group", &group))
            .await?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }
}
