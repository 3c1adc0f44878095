//! gRPC services. Each file translates protobuf to broker operations and
//! back; the tonic trait impls here only route.

pub mod admin;
pub mod fetch;
pub mod offsets;
pub mod peer;
pub mod produce;
pub mod status;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use strand_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::state::BrokerState;

/// The `Strand` service (produce, fetch, subscribe, offsets, metadata).
#[derive(Clone, Debug)]
pub struct StrandService {
    state: Arc<BrokerState>,
}

/// The `Admin` service (topics).
#[derive(Clone, Debug)]
pub struct AdminService {
    state: Arc<BrokerState>,
}

impl StrandService {
    /// A service over `state`.
    pub fn new(state: Arc<BrokerState>) -> Self {
        StrandService { state }
    }
}

impl AdminService {
    /// A service over `state`.
    pub fn new(state: Arc<BrokerState>) -> Self {
        AdminService { state }
    }
}

#[tonic::async_trait]
impl pb::strand_server::Strand for StrandService {
    async fn produce(&self, req: Request<pb::ProduceRequest>) -> Result<Response<pb::ProduceResponse>, Status> {
        let _t = self.state.metrics.time("produce");
        Ok(Response::new(produce::produce(&self.state, req.into_inner()).await?))
    }

    async fn fetch(&self, req: Request<pb::FetchRequest>) -> Result<Response<pb::FetchResponse>, Status> {
        let _t = self.state.metrics.time("fetch");
        Ok(Response::new(fetch::fetch(&self.state, req.into_inner()).await?))
    }

    type SubscribeStream = Pin<Box<dyn Stream<Item = Result<pb::PartitionData, Status>> + Send>>;

    async fn subscribe(&self, req: Request<pb::SubscribeRequest>) -> Result<Response<Self::SubscribeStream>, Status> {
        let rx = fetch::subscribe(&self.state, req.into_inner())?;
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn list_offsets(
        &self,
        req: Request<pb::ListOffsetsRequest>,
    ) -> Result<Response<pb::ListOffsetsResponse>, Status> {
        Ok(Response::new(offsets::list_offsets(&self.state, req.into_inner())?))
    }

    async fn metadata(&self, req: Request<pb::MetadataRequest>) -> Result<Response<pb::MetadataResponse>, Status> {
        Ok(Response::new(admin::metadata(&self.state, req.into_inner())))
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    async fn create_topic(
        &self,
        req: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let fwd = req.metadata().contains_key(admin::FORWARDED_KEY);
        let topic = admin::create_topic(&self.state, req.into_inner(), fwd).await?;
        Ok(Response::new(pb::CreateTopicResponse { topic: Some(topic) }))
    }

    async fn delete_topic(
        &self,
        req: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let fwd = req.metadata().contains_key(admin::FORWARDED_KEY);
        admin::delete_topic(&self.state, req.into_inner().name, fwd).await?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn create_partitions(
        &self,
        req: Request<pb::CreatePartitionsRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let fwd = req.metadata().contains_key(admin::FORWARDED_KEY);
        let r = req.into_inner();
        let topic = admin::create_partitions(&self.state, r.name, r.partitions, fwd).await?;
        Ok(Response::new(pb::CreateTopicResponse { topic: Some(topic) }))
    }

    async fn reassign_partition(
        &self,
        req: Request<pb::ReassignPartitionRequest>,
    ) -> Result<Response<pb::ReassignPartitionResponse>, Status> {
        let fwd = req.metadata().contains_key(admin::FORWARDED_KEY);
        let r = req.into_inner();
        admin::reassign(&self.state, r.topic, r.partition, r.replicas, r.finish, fwd).await?;
        Ok(Response::new(pb::ReassignPartitionResponse {}))
    }

    async fn join_cluster(
        &self,
        req: Request<pb::JoinClusterRequest>,
    ) -> Result<Response<pb::JoinClusterResponse>, Status> {
        let fwd = req.metadata().contains_key(admin::FORWARDED_KEY);
        Ok(Response::new(admin::join(&self.state, req.into_inner(), fwd).await?))
    }

    async fn list_topics(
        &self,
        _req: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        Ok(Response::new(admin::list_topics(&self.state)))
    }

    async fn describe_topic(
        &self,
        req: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::TopicDescription>, Status> {
        let t = self.state.topic(&req.into_inner().name)?;
        let mut d = admin::describe(&self.state, &t);
        // Replica lag is known only to each partition's leader: ask around.
        let views = status::gather(&self.state).await;
        let leaders = status::leaders(&views);
        for p in &mut d.partitions {
            if let Some(l) = leaders.get(&(t.meta.name.clone(), p.partition)) {
                p.leader = l.leader;
                p.replica_lag = l.replicas.clone();
            }
        }
        Ok(Response::new(d))
    }

    async fn cluster_status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        Ok(Response::new(status::cluster_status(&self.state).await))
    }
}

/// The `Groups` service (consumer-group coordination and offsets).
#[derive(Clone, Debug)]
pub struct GroupsService {
    state: Arc<BrokerState>,
}

impl GroupsService {
    /// A service over `state`.
    pub fn new(state: Arc<BrokerState>) -> Self {
        GroupsService { state }
    }
}

#[tonic::async_trait]
impl pb::groups_server::Groups for GroupsService {
    async fn find_coordinator(
        &self,
        req: Request<pb::FindCoordinatorRequest>,
    ) -> Result<Response<pb::FindCoordinatorResponse>, Status> {
        let (node_id, addr) = self.state.groups.find(&self.state, &req.into_inner().group).await?;
        Ok(Response::new(pb::FindCoordinatorResponse { node_id, addr }))
    }

    async fn heartbeat(
        &self,
        req: Request<pb::GroupHeartbeatRequest>,
    ) -> Result<Response<pb::GroupHeartbeatResponse>, Status> {
        let _t = self.state.metrics.time("group_heartbeat");
        Ok(Response::new(
            self.state.groups.heartbeat(&self.state, req.into_inner()).await?,
        ))
    }

    async fn commit_offsets(
        &self,
        req: Request<pb::CommitOffsetsRequest>,
    ) -> Result<Response<pb::CommitOffsetsResponse>, Status> {
        let _t = self.state.metrics.time("commit_offsets");
        Ok(Response::new(
            self.state.groups.commit(&self.state, req.into_inner()).await?,
        ))
    }

    async fn fetch_offsets(
        &self,
        req: Request<pb::FetchOffsetsRequest>,
    ) -> Result<Response<pb::FetchOffsetsResponse>, Status> {
        Ok(Response::new(
            self.state.groups.fetch_offsets(&self.state, req.into_inner()).await?,
        ))
    }

    async fn list_groups(
        &self,
        _req: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        Ok(Response::new(self.state.groups.list(&self.state).await?))
    }

    async fn describe_group(
        &self,
        req: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::GroupDescription>, Status> {
        Ok(Response::new(
            self.state.groups.describe(&self.state, &req.into_inner().group).await?,
        ))
    }

    async fn reset_offsets(
        &self,
        req: Request<pb::ResetOffsetsRequest>,
    ) -> Result<Response<pb::ResetOffsetsResponse>, Status> {
        Ok(Response::new(
            self.state.groups.reset(&self.state, req.into_inner()).await?,
        ))
    }

    async fn delete_group(
        &self,
        req: Request<pb::DeleteGroupRequest>,
    ) -> Result<Response<pb::DeleteGroupResponse>, Status> {
        self.state.groups.delete(&self.state, &req.into_inner().group).await?;
        Ok(Response::new(pb::DeleteGroupResponse {}))
    }
}
