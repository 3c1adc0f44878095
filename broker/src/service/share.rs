//! The `ShareGroups` service: share groups (queues). Protobuf in,
//! `groups::share` calls, protobuf out.

use std::sync::Arc;
use std::time::Duration;

use strand_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::access::{self, caller};
use crate::controller::acl::{AclOperation as Op, ResourceType};
use crate::error::{BrokerError, Result};
use crate::groups::GroupCoordinator;
use crate::groups::share::{AckKind, AckResult, ShareAck, ShareFetch, ShareReset};
use crate::metrics::Metrics;

/// Most acknowledgements one request may carry.
const MAX_ACKS_PER_REQUEST: usize = 10_000;

/// Most records one share fetch may ask for.
const MAX_RECORDS_PER_FETCH: u32 = 10_000;

/// The `ShareGroups` service.
#[derive(Clone, Debug)]
pub struct ShareGroupsService {
    groups: Arc<GroupCoordinator>,
    metrics: Arc<Metrics>,
    max_wait: Duration,
}

impl ShareGroupsService {
    /// A service over `groups`; long polls last at most `max_wait`.
    pub fn new(groups: Arc<GroupCoordinator>, metrics: Arc<Metrics>, max_wait: Duration) -> Self {
        ShareGroupsService {
            groups,
            metrics,
            max_wait,
        }
    }
}

fn span(rpc: &'static str, group: &str) -> tracing::Span {
    tracing::debug_span!("request", rpc, group)
}

fn from_acks(list: Vec<pb::ShareAcknowledgement>) -> Result<Vec<ShareAck>> {
    if list.len() > MAX_ACKS_PER_REQUEST {
        return Err(BrokerError::InvalidRequest {
            reason: format!(
                "{} acknowledgements in one request: at most {MAX_ACKS_PER_REQUEST}",
                list.len()
            ),
        });
    }
    list.into_iter()
        .map(|a| {
            let kind = match pb::AcknowledgeType::try_from(a.r#type) {
                Ok(pb::AcknowledgeType::AcknowledgeAccept) => AckKind::Accept,
                Ok(pb::AcknowledgeType::AcknowledgeRelease) => AckKind::Release,
                Ok(pb::AcknowledgeType::AcknowledgeReject) => AckKind::Reject,
                Ok(pb::AcknowledgeType::AcknowledgeRenew) => AckKind::Renew,
                Err(_) => {
                    return Err(BrokerError::InvalidRequest {
                        reason: format!("unknown acknowledgement type {}", a.r#type),
                    });
                }
            };
            Ok(ShareAck {
                topic: a.topic,
                partition: a.partition,
                first: a.first_offset,
                last: a.last_offset,
                kind,
            })
        })
        .collect()
}

fn to_results(acks: &[ShareAck], results: Vec<AckResult>) -> Vec<pb::ShareAcknowledgementResult> {
    acks.iter()
        .zip(results)
        .map(|(a, r)| pb::ShareAcknowledgementResult {
            topic: a.topic.clone(),
            partition: a.partition,
            first_offset: a.first,
            last_offset: a.last,
            lock_deadline_ms: r.as_ref().ok().copied().flatten().unwrap_or(0),
            error: r.err().map(|e| e.to_proto()),
        })
        .collect()
}

#[tonic::async_trait]
impl pb::share_groups_server::ShareGroups for ShareGroupsService {
    async fn share_fetch(
        &self,
        req: Request<pb::ShareFetchRequest>,
    ) -> Result<Response<pb::ShareFetchResponse>, Status> {
        let _t = self.metrics.time("share_fetch");
        let who = caller(&req);
        let r = req.into_inner();
        let node = self.groups.node();
        access::group(node, &who, Op::Read, &r.group)?;
        access::topics(node, &who, Op::Read, r.topics.iter().map(String::as_str))?;
        let span = span("share_fetch", &r.group);
        if r.max_records > MAX_RECORDS_PER_FETCH {
            return Err(BrokerError::InvalidRequest {
                reason: format!("max_records {} is more than {MAX_RECORDS_PER_FETCH}", r.max_records),
            }
            .into());
        }
        let acks = from_acks(r.acknowledgements)?;
        let reset = match pb::ShareOffsetReset::try_from(r.offset_reset) {
            Ok(pb::ShareOffsetReset::Earliest) => ShareReset::Earliest,
            Ok(pb::ShareOffsetReset::Latest) => ShareReset::Latest,
            Err(_) => {
                return Err(BrokerError::InvalidRequest {
                    reason: format!("unknown offset reset {}", r.offset_reset),
                }
                .into());
            }
        };
        let millis = |ms: u32| (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
        let fetch = ShareFetch {
            group: r.group,
            member: r.member_id,
            topics: r.topics,
            max_records: r.max_records as usize,
            max_wait: Duration::from_millis(u64::from(r.max_wait_ms)).min(self.max_wait),
            lock: millis(r.lock_duration_ms),
            session_timeout: millis(r.session_timeout_ms),
            reset,
            acks: acks.clone(),
        };
        let (records, results) = self.groups.share_fetch(fetch).instrument(span).await?;
        Ok(Response::new(pb::ShareFetchResponse {
            records: records
                .into_iter()
                .map(|a| pb::AcquiredRecord {
                    topic: a.topic,
                    partition: a.partition,
                    record: Some(a.record),
                    delivery_count: a.delivery_count,
                    lock_deadline_ms: a.deadline_ms,
                })
                .collect(),
            acknowledgement_results: to_results(&acks, results),
        }))
    }

    async fn share_acknowledge(
        &self,
        req: Request<pb::ShareAcknowledgeRequest>,
    ) -> Result<Response<pb::ShareAcknowledgeResponse>, Status> {
        let _t = self.metrics.time("share_acknowledge");
        let who = caller(&req);
        let r = req.into_inner();
        access::group(self.groups.node(), &who, Op::Read, &r.group)?;
        let span = span("share_acknowledge", &r.group);
        crate::groups::validate_group(&r.group)?;
        let acks = from_acks(r.acknowledgements)?;
        let results = self
            .groups
            .share_acknowledge(&r.group, &r.member_id, &acks)
            .instrument(span)
            .await?;
        Ok(Response::new(pb::ShareAcknowledgeResponse {
            results: to_results(&acks, results),
        }))
    }

    async fn share_leave(
        &self,
        req: Request<pb::ShareLeaveRequest>,
    ) -> Result<Response<pb::ShareLeaveResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        access::group(self.groups.node(), &who, Op::Read, &r.group)?;
        let span = span("share_leave", &r.group);
        crate::groups::validate_group(&r.group)?;
        let released = self.groups.share_leave(&r.group, &r.member_id).instrument(span).await?;
        Ok(Response::new(pb::ShareLeaveResponse { released }))
    }

    async fn list_share_groups(
        &self,
        req: Request<pb::ListShareGroupsRequest>,
    ) -> Result<Response<pb::ListShareGroupsResponse>, Status> {
        let who = caller(&req);
        let node = self.groups.node();
        let mut groups = self.groups.list_share_groups();
        groups.retain(|g| node.permits(&who, Op::Describe, ResourceType::Group, g));
        Ok(Response::new(pb::ListShareGroupsResponse { groups }))
    }

    async fn describe_share_group(
        &self,
        req: Request<pb::DescribeShareGroupRequest>,
    ) -> Result<Response<pb::ShareGroupDescription>, Status> {
        let who = caller(&req);
        let group = req.into_inner().group;
        access::group(self.groups.node(), &who, Op::Describe, &group)?;
        let v = self
            .groups
            .describe_share_group(&group)
            .instrument(span("describe_share_group", &group))
            .await?;
        Ok(Response::new(pb::ShareGroupDescription {
            group: v.group,
            coordinator: self.groups.node_id(),
            members: v
                .members
                .into_iter()
                .map(|m| pb::ShareMember {
                    member_id: m.member,
                    topics: m.topics,
                    acquired: m.acquired,
                })
                .collect(),
            partitions: v
                .partitions
                .into_iter()
                .map(|p| pb::SharePartitionState {
                    topic: p.topic,
                    partition: p.partition,
                    start_offset: p.start,
                    end_offset: p.end,
                    in_flight: p.counts.in_flight,
                    acquired: p.counts.acquired,
                    available: p.counts.available,
                    delayed: p.counts.delayed,
                    archived: p.counts.archived,
                    redelivered: p.counts.redelivered,
                    topic_id: p.topic_id,
                    high_watermark: p.high_watermark.unwrap_or(0),
                })
                .collect(),
            delivery_count_limit: v.delivery_count_limit,
        }))
    }
}
