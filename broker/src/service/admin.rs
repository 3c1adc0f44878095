//! The `Admin` service: topics, replica moves, joining brokers, cluster
//! status. Protobuf in, `admin` calls, protobuf out.

use std::collections::BTreeMap;

use strand_cluster::NodeId;
use strand_proto::v1 as pb;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use super::access::{self, caller};
use super::acls;
use super::users;
use crate::admin::Admin;
use crate::admin::status::ClusterView;
use crate::admin::topics::TopicView;
use crate::controller::acl::{AclOperation as Op, ResourceType};
use crate::error::{BrokerError, Result};
use crate::topic::TopicMeta;

/// The `Admin` service.
#[derive(Clone, Debug)]
pub struct AdminService {
    admin: Admin,
}

impl AdminService {
    /// A service over `admin`.
    pub fn new(admin: Admin) -> Self {
        AdminService { admin }
    }
}

fn node_ids(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

fn raw_ids(ids: &[NodeId]) -> Vec<u64> {
    ids.iter().map(|n| n.get()).collect()
}

/// A topic view on the wire.
pub fn topic_description(v: &TopicView) -> pb::TopicDescription {
    pb::TopicDescription {
        name: v.topic.meta.name.clone(),
        topic_id: v.topic.uuid().to_string(),
        replication_factor: v.topic.meta.replication_factor,
        configs: v.topic.meta.configs.clone().into_iter().collect(),
        partitions: v
            .partitions
            .iter()
            .map(|p| {
                let mut d = pb::PartitionDescription {
                    partition: p.partition,
                    leader: p.leader.map_or(0, NodeId::get),
                    replicas: raw_ids(&p.replicas),
                    moving_to: raw_ids(&p.moving_to),
                    replica_lag: p
                        .replica_lag
                        .iter()
                        .map(|l| pb::ReplicaLag {
                            node_id: l.node.get(),
                            lag: l.lag,
                            in_sync: l.in_sync,
                        })
                        .collect(),
                    ..Default::default()
                };
                if let Some(st) = &p.offsets {
                    d.log_start_offset = st.log_start_offset.get();
                    d.high_watermark = st.high_watermark.get();
                    d.log_end_offset = st.log_end_offset.get();
                    d.size_bytes = st.size_bytes;
                    d.segments = st.segments;
                    d.active_producers = st.active_producers;
                }
                d
            })
            .collect(),
    }
}

fn cluster_status(v: &ClusterView) -> pb::ClusterStatusResponse {
    pb::ClusterStatusResponse {
        cluster_id: v.cluster_id.clone(),
        controller_id: v.controller.map_or(0, NodeId::get),
        brokers: v
            .brokers
            .iter()
            .map(|(id, addr, up, controller_recovering)| pb::BrokerStatus {
                node_id: id.get(),
                addr: addr.clone(),
                up: *up,
                controller_recovering: *controller_recovering,
            })
            .collect(),
        partitions: v
            .partitions
            .iter()
            .map(|p| pb::PartitionStatus {
                topic: p.topic.clone(),
                partition: p.partition,
                leader: p.leader.map_or(0, NodeId::get),
                replicas: raw_ids(&p.replicas),
                lagging: raw_ids(&p.lagging),
                recovering: raw_ids(&p.recovering),
                failed: raw_ids(&p.failed),
                high_watermark: p.high_watermark.get(),
            })
            .collect(),
        under_replicated: v.under_replicated() as u32,
    }
}

impl AdminService {
    fn span(&self, rpc: &'static str, topic: &str) -> tracing::Span {
        tracing::debug_span!("request", node = %self.admin.node().id(), rpc, topic)
    }

    async fn create_topic(&self, req: pb::CreateTopicRequest) -> Result<pb::TopicDescription> {
        let uuid = crate::topic::requested_topic_id(&req.name, &req.topic_id)?;
        let meta = TopicMeta {
            name: req.name,
            partitions: req.partitions,
            replication_factor: req.replication_factor,
            configs: req.configs.into_iter().collect::<BTreeMap<_, _>>(),
        };
        Ok(topic_description(&self.admin.create_topic(meta, uuid).await?))
    }

    async fn join(&self, req: pb::JoinClusterRequest) -> Result<pb::JoinClusterResponse> {
        self.admin.admit_broker(NodeId(req.node_id), req.addr.clone()).await?;
        tracing::info!(node = req.node_id, addr = %req.addr, "broker joined the cluster");
        let node = self.admin.node();
        Ok(pb::JoinClusterResponse {
            known: node.metadata().registered.contains_key(&NodeId(req.node_id)),
            cluster_id: node.cluster_id().to_string(),
            founders: node
                .founders()
                .iter()
                .map(|(id, addr)| pb::BrokerInfo {
                    node_id: id.get(),
                    addr: addr.clone(),
                })
                .collect(),
        })
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let who = caller(&req);
        let req = req.into_inner();
        // `create` on the cluster covers every topic; else on this name.
        let node = self.admin.node();
        if !node.permits(
            &who,
            Op::Create,
            ResourceType::Cluster,
            crate::controller::acl::CLUSTER_RESOURCE,
        ) {
            node.authorize(&who, Op::Create, ResourceType::Topic, &req.name)?;
        }
        let span = self.span("create_topic", &req.name);
        let topic = self.create_topic(req).instrument(span).await?;
        Ok(Response::new(pb::CreateTopicResponse { topic: Some(topic) }))
    }

    async fn delete_topic(
        &self,
        req: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let who = caller(&req);
        let name = req.into_inner().name;
        access::topics(self.admin.node(), &who, Op::Delete, [name.as_str()])?;
        let span = self.span("delete_topic", &name);
        self.admin.delete_topic(name).instrument(span).await?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn create_partitions(
        &self,
        req: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let who = caller(&req);
        let r = req.into_inner();
        access::topics(self.admin.node(), &who, Op::Alter, [r.name.as_str()])?;
        let span = self.span("create_partitions", &r.name);
        let view = self
            .admin
            .create_partitions(r.name, r.partitions)
            .instrument(span)
            .await?;
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(topic_description(&view)),
        }))
    }

    async fn reassign_partition(
        &self,
        req: Request<pb::ReassignPartitionRequest>,
    ) -> Result<Response<pb::ReassignPartitionResponse>, Status> {
        access::cluster(self.admin.node(), &caller(&req), Op::Alter)?;
        let r = req.into_inner();
        if r.finish {
            // A move is finished by the partition's leader once its Raft
            // configuration equals the target, never by a client.
            return Err(BrokerError::InvalidRequest {
                reason: "a reassignment is finished by the partition's leader, not by a request".into(),
            }
            .into());
        }
        let span = self.span("reassign_partition", &r.topic);
        self.admin
            .reassign(r.topic, r.partition, node_ids(&r.replicas))
            .instrument(span)
            .await?;
        Ok(Response::new(pb::ReassignPartitionResponse {}))
    }

    async fn join_cluster(
        &self,
        req: Request<pb::JoinClusterRequest>,
    ) -> Result<Response<pb::JoinClusterResponse>, Status> {
        let span = self.span("join_cluster", "");
        // With TLS, only the holder of broker N's certificate joins as N.
        let caller = crate::security::principal(&req);
        let req = req.into_inner();
        self.admin.node().security().check_peer(&caller, req.node_id)?;
        Ok(Response::new(self.join(req).instrument(span).await?))
    }

    async fn list_topics(
        &self,
        req: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let who = caller(&req);
        let node = self.admin.node();
        Ok(Response::new(pb::ListTopicsResponse {
            // Only the topics the caller may describe.
            topics: node
                .metadata()
                .topics
                .values()
                .filter(|t| node.permits(&who, Op::Describe, ResourceType::Topic, &t.meta.name))
                .map(|t| pb::TopicSummary {
                    name: t.meta.name.clone(),
                    partitions: t.meta.partitions,
                    replication_factor: t.meta.replication_factor,
                    topic_id: t.uuid().to_string(),
                })
                .collect(),
        }))
    }

    async fn describe_topic(
        &self,
        req: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let who = caller(&req);
        let name = req.into_inner().name;
        access::topics(self.admin.node(), &who, Op::Describe, [name.as_str()])?;
        let view = self
            .admin
            .describe(&name)
            .instrument(self.span("describe_topic", &name))
            .await?;
        Ok(Response::new(topic_description(&view)))
    }

    async fn cluster_status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        access::cluster(self.admin.node(), &caller(&req), Op::Describe)?;
        let span = self.span("cluster_status", "");
        Ok(Response::new(cluster_status(
            &self.admin.cluster_status().instrument(span).await,
        )))
    }

    async fn create_acls(
        &self,
        req: Request<pb::CreateAclsRequest>,
    ) -> Result<Response<pb::CreateAclsResponse>, Status> {
        let who = caller(&req);
        let span = self.span("create_acls", "");
        acls::create(&self.admin, &who, req.into_inner())
            .instrument(span)
            .await?;
        Ok(Response::new(pb::CreateAclsResponse {}))
    }

    async fn delete_acls(
        &self,
        req: Request<pb::DeleteAclsRequest>,
    ) -> Result<Response<pb::DeleteAclsResponse>, Status> {
        let who = caller(&req);
        let span = self.span("delete_acls", "");
        let deleted = acls::delete(&self.admin, &who, req.into_inner())
            .instrument(span)
            .await?;
        Ok(Response::new(pb::DeleteAclsResponse { deleted }))
    }

    async fn describe_acls(
        &self,
        req: Request<pb::DescribeAclsRequest>,
    ) -> Result<Response<pb::DescribeAclsResponse>, Status> {
        let who = caller(&req);
        let acls = acls::describe(&self.admin, &who, req.get_ref())?;
        Ok(Response::new(pb::DescribeAclsResponse { acls }))
    }

    async fn alter_quota(
        &self,
        req: Request<pb::AlterQuotaRequest>,
    ) -> Result<Response<pb::AlterQuotaResponse>, Status> {
        let who = caller(&req);
        let span = self.span("alter_quota", "");
        acls::alter_quota(&self.admin, &who, req.into_inner())
            .instrument(span)
            .await?;
        Ok(Response::new(pb::AlterQuotaResponse {}))
    }

    async fn describe_quotas(
        &self,
        req: Request<pb::DescribeQuotasRequest>,
    ) -> Result<Response<pb::DescribeQuotasResponse>, Status> {
        let quotas = acls::describe_quotas(&self.admin, &caller(&req))?;
        Ok(Response::new(pb::DescribeQuotasResponse { quotas }))
    }

    async fn upsert_user(
        &self,
        req: Request<pb::UpsertUserRequest>,
    ) -> Result<Response<pb::UpsertUserResponse>, Status> {
        let who = caller(&req);
        let span = self.span("upsert_user", "");
        users::upsert(&self.admin, &who, req.into_inner())
            .instrument(span)
            .await?;
        Ok(Response::new(pb::UpsertUserResponse {}))
    }

    async fn delete_user(
        &self,
        req: Request<pb::DeleteUserRequest>,
    ) -> Result<Response<pb::DeleteUserResponse>, Status> {
        let who = caller(&req);
        let span = self.span("delete_user", "");
        users::delete(&self.admin, &who, req.into_inner().name)
            .instrument(span)
            .await?;
        Ok(Response::new(pb::DeleteUserResponse {}))
    }

    async fn list_users(&self, req: Request<pb::ListUsersRequest>) -> Result<Response<pb::ListUsersResponse>, Status> {
        let names = users::list(&self.admin, &caller(&req))?;
        Ok(Response::new(pb::ListUsersResponse { names }))
    }
}
