//! The `Peer` service: traffic between brokers of one cluster. Raft
//! messages enter this node's replication loop here; peers also ask for this
//! broker's replica report, for a catch-up stream of committed entries, for
//! the cluster id (a founder creating its data directory) and, when this
//! broker leads the controller, to carry out a metadata change. Only members
//! of this cluster are heard.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use strand_cluster::{NodeId, RaftGroupId};
use strand_proto::v1 as pb;
use strand_storage::RaftIndex;
use tonic::{Request, Response, Status};

use crate::admin::status::{local_report, report_to_proto};
use crate::admin::{Admin, MetadataRequest};
use crate::error::BrokerError;
use crate::security::principal;
use strand_security::Principal;

/// The `Peer` service.
#[derive(Clone, Debug)]
pub struct PeerService {
    admin: Admin,
}

impl PeerService {
    /// A service over `admin` (and its node).
    pub fn new(admin: Admin) -> Self {
        PeerService { admin }
    }

    fn check_cluster(&self, cluster_id: &str) -> Result<(), Status> {
        if cluster_id != self.admin.node().cluster_id() {
            return Err(Status::permission_denied("another cluster"));
        }
        Ok(())
    }

    /// Refuses a request from a node that is not a broker of this cluster
    /// (or that claims to be this one), or, with TLS, from a connection
    /// whose certificate does not name the node it claims to be.
    fn check_peer(&self, caller: &Principal, cluster_id: &str, from: u64) -> Result<NodeId, Status> {
        self.check_cluster(cluster_id)?;
        self.admin.node().security().check_peer(caller, from)?;
        let node = self.admin.node();
        let from = NodeId(from);
        if from == node.id() || node.addr_of(from).is_none() {
            return Err(Status::permission_denied(format!(
                "node {from} is not a peer of this cluster"
            )));
        }
        Ok(from)
    }

    /// Hands one batch of Raft traffic from a peer to the replication loop.
    fn deliver_raft(&self, caller: &Principal, batch: &pb::RaftBatch) -> Result<(), Status> {
        let node = self.admin.node();
        let from = self
            .check_peer(caller, &batch.cluster_id, batch.from)
            .inspect_err(|_| {
                tracing::warn!(
                    from = batch.from,
                    "raft traffic from a node that is not a peer; ignored"
                );
            })?;
        match strand_cluster::decode_batch(batch, node.cluster_id()) {
            Ok(decoded) => {
                node.inbox().deliver(from, decoded);
                Ok(())
            }
            Err(e) => {
                tracing::warn!(%from, error = %e, "dropped raft batch");
                Err(Status::invalid_argument(e.to_string()))
            }
        }
    }
}

#[tonic::async_trait]
impl pb::peer_server::Peer for PeerService {
    async fn identity(&self, req: Request<pb::IdentityRequest>) -> Result<Response<pb::IdentityResponse>, Status> {
        let node = self.admin.node();
        let caller = principal(&req);
        let from = NodeId(req.into_inner().from);
        node.security().check_peer(&caller, from.get())?;
        if node.addr_of(from).is_none() {
            return Err(Status::permission_denied(format!(
                "node {from} is not a founder of this cluster"
            )));
        }
        Ok(Response::new(pb::IdentityResponse {
            cluster_id: node.cluster_id().to_string(),
            node_id: node.id().get(),
            known: node.metadata().registered.contains_key(&from),
        }))
    }

    async fn raft(&self, req: Request<pb::RaftBatch>) -> Result<Response<pb::RaftBatchAck>, Status> {
        let caller = principal(&req);
        self.deliver_raft(&caller, &req.into_inner())?;
        Ok(Response::new(pb::RaftBatchAck {}))
    }

    type RaftStreamStream = Pin<Box<dyn Stream<Item = Result<pb::RaftBatchAck, Status>> + Send>>;

    async fn raft_stream(
        &self,
        req: Request<tonic::Streaming<pb::RaftBatch>>,
    ) -> Result<Response<Self::RaftStreamStream>, Status> {
        let caller = principal(&req);
        let mut batches = req.into_inner();
        let service = self.clone();
        let mut stopping = self.admin.node().shutdown_signal();
        let (ended_tx, ended) = tokio::sync::oneshot::channel::<Option<Status>>();
        tokio::spawn(async move {
            // Every batch is checked on its own: the stream proves nothing
            // about the next one.
            let end = loop {
                tokio::select! {
                    next = batches.message() => match next {
                        Ok(Some(batch)) => {
                            if let Err(refused) = service.deliver_raft(&caller, &batch) {
                                break Some(refused);
                            }
                        }
                        Ok(None) => break None,
                        Err(broken) => break Some(broken),
                    },
                    _ = stopping.wait_for(|s| *s) => break Some(Status::unavailable("broker shutting down")),
                }
            };
            let _ = ended_tx.send(end);
        });
        // Nothing is answered while batches flow; the answer stream ends with
        // the reason this side stopped taking them.
        let answers = futures::stream::once(async move { ended.await.ok().flatten() })
            .filter_map(|end| async move { end.map(Err) });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn local_status(
        &self,
        req: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::LocalStatusResponse>, Status> {
        let caller = principal(&req);
        let req = req.into_inner();
        self.check_peer(&caller, &req.cluster_id, req.from)?;
        let node = self.admin.node();
        Ok(Response::new(report_to_proto(node, local_report(node))))
    }

    type FetchLogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

    async fn fetch_log(&self, req: Request<pb::FetchLogRequest>) -> Result<Response<Self::FetchLogStream>, Status> {
        let caller = principal(&req);
        let req = req.into_inner();
        let follower = self.check_peer(&caller, &req.cluster_id, req.from)?;
        let node = self.admin.node();
        let source = node.raft().log_source();
        let group = RaftGroupId(req.group);
        let last = RaftIndex(req.to_index);
        let max = (req.max_chunk_bytes as usize).clamp(1, node.config().limits.max_message_bytes / 2);
        // A small buffer: the follower's pace sets the leader's reads.
        let (tx, rx) = tokio::sync::mpsc::channel(2);
        let mut shutdown = node.shutdown_signal();
        tokio::spawn(async move {
            let mut next = RaftIndex(req.from_index);
            while next <= last {
                let source = std::sync::Arc::clone(&source);
                let read = tokio::task::spawn_blocking(move || source.read_committed(group, next, last, max)).await;
                let chunk = match read {
                    Ok(Ok(c)) => c,
                    Ok(Err(e)) => {
                        tracing::warn!(%follower, %group, %next, error = %e, "catch-up read failed");
                        let _ = tx.send(Err(Status::from(BrokerError::from(e)))).await;
                        return;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                // Whole batches that the read checked: the last one says
                // where the next chunk starts.
                let Some(after) = strand_storage::batches(&chunk)
                    .filter_map(|b| b.ok())
                    .last()
                    .map(|b| b.raft_index().next())
                else {
                    return;
                };
                next = after;
                tokio::select! {
                    sent = tx.send(Ok(pb::LogChunk { batches: chunk })) => if sent.is_err() { return },
                    _ = shutdown.wait_for(|s| *s) => return,
                }
            }
        });
        Ok(Response::new(Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))))
    }

    async fn submit_metadata(
        &self,
        req: Request<pb::SubmitMetadataRequest>,
    ) -> Result<Response<pb::SubmitMetadataResponse>, Status> {
        let caller = principal(&req);
        let req = req.into_inner();
        self.check_peer(&caller, &req.cluster_id, req.from)?;
        let request: MetadataRequest = serde_json::from_slice(&req.request).map_err(|e| {
            Status::from(BrokerError::InvalidRequest {
                reason: format!("undecodable metadata request: {e}"),
            })
        })?;
        let applied = self.admin.execute_on_leader(&request).await?;
        Ok(Response::new(pb::SubmitMetadataResponse {
            applied_offset: applied.get(),
        }))
    }
}
