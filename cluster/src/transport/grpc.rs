//! Raft traffic over gRPC (`strand.v1.Peer/Raft`): one task and one HTTP/2
//! connection per peer; everything queued for that peer while a call is in
//! flight goes out in the next call, across all groups.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::Message;
use strand_proto::v1::{GroupMessage, RaftBatch, peer_client::PeerClient};
use tokio::sync::mpsc;

use super::Transport;
use crate::error::{ClusterError, Result};
use crate::ids::{NodeId, RaftGroupId};

/// Messages queued per peer before new ones are dropped (Raft resends).
const PEER_QUEUE: usize = 1024;
/// Most messages in one call.
const MAX_BATCH: usize = 4096;

/// Messages for one peer: `(group, message)` pairs.
type Outbox = mpsc::Sender<Vec<(RaftGroupId, Message)>>;

/// Sends Raft messages to peers over gRPC.
pub struct GrpcTransport {
    cluster_id: String,
    addrs: Mutex<HashMap<NodeId, String>>,
    queues: Mutex<HashMap<NodeId, Outbox>>,
    runtime: tokio::runtime::Handle,
    max_message_bytes: usize,
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("cluster_id", &self.cluster_id)
            .finish()
    }
}

impl GrpcTransport {
    /// A transport to the peers in `addrs` (node id → `host:port`); peer
    /// tasks run on `runtime`.
    pub fn new(
        cluster_id: String,
        addrs: HashMap<NodeId, String>,
        runtime: tokio::runtime::Handle,
        max_message_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(GrpcTransport {
            cluster_id,
            addrs: Mutex::new(addrs),
            queues: Mutex::new(HashMap::new()),
            runtime,
            max_message_bytes,
        })
    }

    /// Adds or moves a peer.
    pub fn set_peer(&self, id: NodeId, addr: String) {
        self.addrs.lock().insert(id, addr);
        // A new address takes effect with a new connection.
        self.queues.lock().remove(&id);
    }

    /// Adds a peer, or moves one whose address changed; a known peer at the
    /// same address keeps its connection.
    pub fn set_peer_if_new(&self, id: NodeId, addr: String) {
        let known = self.addrs.lock().get(&id).is_some_and(|a| *a == addr);
        if !known {
            self.set_peer(id, addr);
        }
    }

    fn queue(&self, from: NodeId, to: NodeId) -> Option<Outbox> {
        let mut queues = self.queues.lock();
        if let Some(q) = queues.get(&to).filter(|q| !q.is_closed()) {
            return Some(q.clone());
        }
        let addr = self.addrs.lock().get(&to).cloned()?;
        let (tx, rx) = mpsc::channel(PEER_QUEUE);
        let cluster_id = self.cluster_id.clone();
        let max = self.max_message_bytes;
        self.runtime.spawn(peer_task(from, to, addr, cluster_id, max, rx));
        queues.insert(to, tx.clone());
        Some(tx)
    }
}

impl Transport for GrpcTransport {
    fn send(&self, from: NodeId, to: NodeId, msgs: Vec<(RaftGroupId, Message)>) {
        let Some(q) = self.queue(from, to) else {
            tracing::debug!(node = %from, peer = %to, "no address for peer; dropping raft messages");
            return;
        };
        if q.try_send(msgs).is_err() {
            tracing::debug!(node = %from, peer = %to, "peer queue full; dropping raft messages");
        }
    }
}

async fn peer_task(
    from: NodeId,
    to: NodeId,
    addr: String,
    cluster_id: String,
    max_message_bytes: usize,
    mut rx: mpsc::Receiver<Vec<(RaftGroupId, Message)>>,
) {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(10)),
        Err(e) => {
            tracing::error!(node = %from, peer = %to, %addr, error = %e, "invalid peer address");
            return;
        }
    };
    let mut client = PeerClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(max_message_bytes)
        .max_encoding_message_size(max_message_bytes);
    let mut failures = 0u32;
    while let Some(first) = rx.recv().await {
        let mut msgs = first;
        while msgs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(more) => msgs.extend(more),
                Err(_) => break,
            }
        }
        let mut batch = RaftBatch {
            from: from.get(),
            cluster_id: cluster_id.clone(),
            messages: Vec::with_capacity(msgs.len()),
        };
        for (group, m) in msgs {
            match m.write_to_bytes() {
                Ok(bytes) => batch.messages.push(GroupMessage {
                    group: group.get(),
                    message: Bytes::from(bytes),
                }),
                Err(e) => tracing::error!(node = %from, peer = %to, %group, error = %e, "cannot encode raft message"),
            }
        }
        match client.raft(batch).await {
            Ok(_) => failures = 0,
            Err(status) => {
                failures += 1;
                if failures == 1 || failures.is_power_of_two() {
                    tracing::warn!(node = %from, peer = %to, %addr, failures, error = %status.message(), "raft send failed");
                }
                // Back off a little; whatever queued meanwhile is mostly
                // superseded heartbeats and appends Raft will resend.
                tokio::time::sleep(Duration::from_millis(50)).await;
                while rx.try_recv().is_ok() {}
            }
        }
    }
}

/// Decodes a received batch after checking it comes from this cluster.
///
/// # Errors
/// `Malformed` for another cluster's batch or an undecodable message.
pub fn decode_batch(batch: &RaftBatch, cluster_id: &str) -> Result<Vec<(RaftGroupId, Message)>> {
    if batch.cluster_id != cluster_id {
        return Err(ClusterError::Malformed {
            what: "raft batch",
            reason: format!("from cluster {:?}, this is {cluster_id:?}", batch.cluster_id),
        });
    }
    batch
        .messages
        .iter()
        .map(|gm| {
            Message::parse_from_bytes(&gm.message)
                .map(|m| (RaftGroupId(gm.group), m))
                .map_err(|e| ClusterError::Malformed {
                    what: "raft message",
                    reason: e.to_string(),
                })
        })
        .collect()
}
