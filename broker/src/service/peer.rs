//! The `Peer` service: Raft messages from other brokers enter this node's
//! replication loop here. Only members of this cluster are heard.

use std::sync::Arc;

use strand_proto::v1::{
    LocalStatusRequest, LocalStatusResponse, RaftBatch, RaftBatchAck, ReadLogRequest, ReadLogResponse,
    peer_server::Peer,
};
use tonic::{Request, Response, Status};

use crate::state::BrokerState;

/// Receives Raft traffic.
#[derive(Clone, Debug)]
pub struct PeerService {
    state: Arc<BrokerState>,
}

impl PeerService {
    /// A service over `state`.
    pub fn new(state: Arc<BrokerState>) -> Self {
        PeerService { state }
    }
}

#[tonic::async_trait]
impl Peer for PeerService {
    async fn raft(&self, req: Request<RaftBatch>) -> Result<Response<RaftBatchAck>, Status> {
        let batch = req.into_inner();
        if batch.from == self.state.node_id || self.state.addr_of(batch.from).is_none() {
            tracing::warn!(
                from = batch.from,
                "raft traffic from a node that is not a peer; ignored"
            );
            return Err(Status::permission_denied(format!(
                "node {} is not a peer of this cluster",
                batch.from
            )));
        }
        match strand_cluster::decode_batch(&batch, &self.state.cluster_id) {
            Ok(msgs) => {
                self.state.inbox().deliver(batch.from, msgs);
                Ok(Response::new(RaftBatchAck {}))
            }
            Err(e) => {
                tracing::warn!(from = batch.from, error = %e, "dropped raft batch");
                Err(Status::invalid_argument(e.to_string()))
            }
        }
    }

    async fn local_status(&self, _req: Request<LocalStatusRequest>) -> Result<Response<LocalStatusResponse>, Status> {
        Ok(Response::new(super::status::local_status(&self.state)))
    }

    async fn read_log(&self, req: Request<ReadLogRequest>) -> Result<Response<ReadLogResponse>, Status> {
        let req = req.into_inner();
        if req.cluster_id != self.state.cluster_id {
            return Err(Status::permission_denied("another cluster"));
        }
        let Some(p) = self.state.replica_of_group(req.group) else {
            return Err(Status::not_found(format!("group {} is not hosted here", req.group)));
        };
        let commit = p.status().commit;
        let max = u64::from(req.max_bytes.clamp(1, 8 << 20));
        let entries = if req.from_index == 0 || req.from_index > commit {
            Vec::new()
        } else {
            p.log()
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .raft_entries(req.from_index, commit + 1, max)
                .map_err(|e| Status::internal(e.to_string()))?
        };
        let mut batches = Vec::with_capacity(entries.iter().map(|(b, _)| b.len()).sum());
        for (b, _) in &entries {
            batches.extend_from_slice(b);
        }
        Ok(Response::new(ReadLogResponse {
            batches: batches.into(),
            commit,
        }))
    }
}
