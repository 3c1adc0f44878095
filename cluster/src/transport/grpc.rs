//! Raft traffic over gRPC: one task and one HTTP/2 connection per peer,
//! carrying batches on one long-lived `strand.v1.Peer/RaftStream` (a unary
//! `Peer/Raft` call per batch to a peer that does not serve the stream), and
//! a `Peer/FetchLog` stream per catch-up.
//!
//! Why a stream: one unary call per batch cost every replication round two
//! calls (the append out, its answer back) with their headers and tonic's
//! per-call machinery, and the sender waited for each call's answer before
//! sending the next. A stream sends each batch as it is ready, in order.
//!
//! Flow control. Each peer has two queues: *control* (votes, heartbeats,
//! responses, appends without entries, catch-up orders) and *data* (appends
//! with entries, snapshots). A batch takes every control message first, then
//! data messages while the batch stays under [`CALL_BYTES`] (one message
//! bigger than that goes alone), so no batch ever nears the gRPC message
//! limit and a large backlog never delays another group's heartbeats. The
//! data queue is bounded in bytes: past [`QUEUED_DATA_BYTES`] new data
//! messages are dropped (Raft resends them), and the stream holds at most
//! [`STREAM_DEPTH`] batches beyond what HTTP/2 flow control lets through. A
//! failed stream loses only the batches in flight; what is queued behind
//! them goes out on the next stream.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use parking_lot::Mutex;
use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use strand_proto::v1::{CatchUp, FetchLogRequest, GroupMessage, Quiesced, RaftBatch, peer_client::PeerClient};
use strand_security::Dialer;
use strand_storage::{RaftIndex, Term};
use tokio::sync::Notify;

use super::{CatchUpOrder, FetchRange, LogChunks, PeerBatch, QuiesceNotice, Transport};
use crate::error::{ClusterError, Result};
use crate::ids::{NodeId, RaftGroupId};

/// Most message bytes in one `Peer/Raft` call (well below the 16 MiB gRPC
/// message limit, so the encoded call always fits).
pub const CALL_BYTES: usize = 4 << 20;
/// Most data-message bytes queued for one peer; more are dropped until the
/// queue drains (Raft resends).
pub const QUEUED_DATA_BYTES: usize = 256 << 20;
/// Most control messages queued for one peer.
const QUEUED_CONTROL: usize = 1 << 16;
/// Encoded batches a peer stream holds before the sender waits for the
/// connection (each at most [`CALL_BYTES`] of data).
const STREAM_DEPTH: usize = 4;
/// How long a unary `Peer/Raft` call may take.
const UNARY_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 windows of peer connections: a catch-up stream moves tens of
/// megabytes a second, which the 64 KiB default window would throttle.
pub const STREAM_WINDOW_BYTES: u32 = 8 << 20;
/// See [`STREAM_WINDOW_BYTES`].
pub const CONNECTION_WINDOW_BYTES: u32 = 32 << 20;

/// Messages waiting for one peer.
#[derive(Default)]
struct PeerQueue {
    control: VecDeque<(RaftGroupId, Message)>,
    data: VecDeque<(RaftGroupId, Message, usize)>,
    data_bytes: usize,
    catch_ups: Vec<CatchUpOrder>,
    quiesced: Vec<QuiesceNotice>,
    wake: Vec<RaftGroupId>,
    ping: bool,
}

struct Peer {
    queue: Mutex<PeerQueue>,
    wake: Notify,
    closed: AtomicBool,
}

/// Bytes a message carries (entries, snapshot) if it is a data message.
fn data_size(m: &Message) -> Option<usize> {
    match m.get_msg_type() {
        MessageType::MsgAppend if !m.get_entries().is_empty() => {
            Some(m.get_entries().iter().map(|e| e.data.len() + 32).sum::<usize>() + 64)
        }
        MessageType::MsgSnapshot => Some(m.get_snapshot().data.len() + 64),
        _ => None,
    }
}

/// Sends Raft messages to peers over gRPC.
pub struct GrpcTransport {
    cluster_id: String,
    addrs: Mutex<HashMap<NodeId, String>>,
    peers: Mutex<HashMap<NodeId, Arc<Peer>>>,
    runtime: tokio::runtime::Handle,
    max_message_bytes: usize,
    /// Plaintext or TLS (with this broker's certificate).
    dialer: Dialer,
}

impl std::fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcTransport")
            .field("cluster_id", &self.cluster_id)
            .finish()
    }
}

fn endpoint(addr: &str) -> std::result::Result<tonic::transport::Endpoint, tonic::transport::Error> {
    Ok(tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW_BYTES)
        .initial_connection_window_size(CONNECTION_WINDOW_BYTES)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(10)))
}

impl GrpcTransport {
    /// A transport to the peers in `addrs` (node id → `host:port`); peer
    /// tasks run on `runtime`.
    pub fn new(
        cluster_id: String,
        addrs: HashMap<NodeId, String>,
        runtime: tokio::runtime::Handle,
        max_message_bytes: usize,
        dialer: Dialer,
    ) -> Arc<Self> {
        Arc::new(GrpcTransport {
            cluster_id,
            addrs: Mutex::new(addrs),
            peers: Mutex::new(HashMap::new()),
            runtime,
            max_message_bytes,
            dialer,
        })
    }

    /// Adds or moves a peer.
    pub fn set_peer(&self, id: NodeId, addr: String) {
        self.addrs.lock().insert(id, addr);
        // A new address takes effect with a new connection.
        if let Some(old) = self.peers.lock().remove(&id) {
            old.closed.store(true, Ordering::Release);
            old.wake.notify_one();
        }
    }

    /// Adds a peer, or moves one whose address changed; a known peer at the
    /// same address keeps its connection.
    pub fn set_peer_if_new(&self, id: NodeId, addr: String) {
        let known = self.addrs.lock().get(&id).is_some_and(|a| *a == addr);
        if !known {
            self.set_peer(id, addr);
        }
    }

    fn peer(&self, from: NodeId, to: NodeId) -> Option<Arc<Peer>> {
        let mut peers = self.peers.lock();
        if let Some(p) = peers.get(&to) {
            return Some(Arc::clone(p));
        }
        let addr = self.addrs.lock().get(&to).cloned()?;
        let peer = Arc::new(Peer {
            queue: Mutex::new(PeerQueue::default()),
            wake: Notify::new(),
            closed: AtomicBool::new(false),
        });
        let task = PeerTask {
            from,
            to,
            addr,
            cluster_id: self.cluster_id.clone(),
            max_message_bytes: self.max_message_bytes,
            dialer: self.dialer.clone(),
            peer: Arc::clone(&peer),
        };
        self.runtime.spawn(task.run());
        peers.insert(to, Arc::clone(&peer));
        Some(peer)
    }
}

impl Transport for GrpcTransport {
    fn send(&self, from: NodeId, to: NodeId, batch: PeerBatch) {
        let Some(peer) = self.peer(from, to) else {
            tracing::debug!(node = %from, peer = %to, "no address for peer; dropping raft messages");
            return;
        };
        let mut dropped = 0usize;
        {
            let mut q = peer.queue.lock();
            q.catch_ups.extend(batch.catch_ups);
            q.quiesced.extend(batch.quiesced);
            q.wake.extend(batch.wake);
            q.ping |= batch.ping;
            for (group, m) in batch.messages {
                match data_size(&m) {
                    Some(size) if q.data_bytes + size > QUEUED_DATA_BYTES && !q.data.is_empty() => dropped += 1,
                    Some(size) => {
                        q.data_bytes += size;
                        q.data.push_back((group, m, size));
                    }
                    None if q.control.len() >= QUEUED_CONTROL => dropped += 1,
                    None => q.control.push_back((group, m)),
                }
            }
        }
        if dropped > 0 {
            tracing::debug!(node = %from, peer = %to, dropped, "peer queue full; dropping raft messages");
        }
        peer.wake.notify_one();
    }

    fn fetch_log(&self, from: NodeId, leader: NodeId, range: FetchRange) -> LogChunks {
        let addr = self.addrs.lock().get(&leader).cloned();
        let cluster_id = self.cluster_id.clone();
        let max = self.max_message_bytes;
        let dialer = self.dialer.clone();
        let stream = async move {
            let addr = addr.ok_or_else(|| ClusterError::Malformed {
                what: "fetch",
                reason: format!("no address for node {leader}"),
            })?;
            let endpoint = endpoint(&addr).map_err(|e| ClusterError::Malformed {
                what: "peer address",
                reason: e.to_string(),
            })?;
            let channel = dialer.connect(endpoint).await.map_err(|e| ClusterError::Transport {
                peer: leader,
                reason: e.to_string(),
            })?;
            let request = FetchLogRequest {
                cluster_id,
                from: from.get(),
                group: range.group.get(),
                from_index: range.from.get(),
                to_index: range.last.get(),
                max_chunk_bytes: range.max_chunk_bytes.min(max / 2) as u32,
            };
            let chunks = PeerClient::new(channel)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max)
                .fetch_log(request)
                .await
                .map_err(|s| ClusterError::Transport {
                    peer: leader,
                    reason: s.message().to_string(),
                })?
                .into_inner();
            Ok::<_, ClusterError>(chunks.map(move |c| {
                c.map(|c| c.batches).map_err(|s| ClusterError::Transport {
                    peer: leader,
                    reason: s.message().to_string(),
                })
            }))
        };
        Box::pin(futures::stream::once(stream).flat_map(|r| match r {
            Ok(chunks) => chunks.left_stream(),
            Err(e) => futures::stream::once(async move { Err(e) }).right_stream(),
        }))
    }
}

/// The sending side of one peer connection.
struct PeerTask {
    from: NodeId,
    to: NodeId,
    addr: String,
    cluster_id: String,
    max_message_bytes: usize,
    dialer: Dialer,
    peer: Arc<Peer>,
}

impl PeerTask {
    /// Takes the next call's worth from the queue: every catch-up order and
    /// control message, then data messages up to [`CALL_BYTES`].
    fn next_call(&self) -> PeerBatch {
        let mut q = self.peer.queue.lock();
        let mut batch = PeerBatch {
            catch_ups: std::mem::take(&mut q.catch_ups),
            messages: q.control.drain(..).collect(),
            quiesced: std::mem::take(&mut q.quiesced),
            wake: std::mem::take(&mut q.wake),
            ping: std::mem::take(&mut q.ping),
        };
        let mut bytes = 0;
        while let Some(&(_, _, size)) = q.data.front() {
            if bytes > 0 && bytes + size > CALL_BYTES {
                break;
            }
            bytes += size;
            q.data_bytes -= size;
            if let Some((group, m, _)) = q.data.pop_front() {
                batch.messages.push((group, m));
            }
        }
        batch
    }

    async fn run(self) {
        let (from, to) = (self.from, self.to);
        // One connection per peer, shared by the stream and the unary
        // fallback. No per-request deadline on it: the stream lives as long
        // as the connection, and HTTP/2 keepalive notices a dead peer.
        let channel = match endpoint(&self.addr) {
            Ok(e) => self.dialer.connect_lazy(e),
            Err(e) => {
                tracing::error!(node = %from, peer = %to, addr = %self.addr, error = %e, "invalid peer address");
                return;
            }
        };
        let mut client = PeerClient::new(channel)
            .max_decoding_message_size(self.max_message_bytes)
            .max_encoding_message_size(self.max_message_bytes);
        let mut streams = true;
        let mut failures = 0u32;
        loop {
            let sent = if streams {
                self.stream(&mut client).await
            } else {
                self.call(&mut client).await
            };
            let status = match sent {
                Sent::Closed => return,
                Sent::Delivered => {
                    failures = 0;
                    continue;
                }
                Sent::Failed(status) => status,
            };
            if streams && status.code() == tonic::Code::Unimplemented {
                tracing::info!(node = %from, peer = %to, "peer does not serve Peer/RaftStream; one call per batch");
                streams = false;
                continue;
            }
            // A peer that failed may come back upgraded: try the stream again
            // (an older one answers `Unimplemented` once more).
            streams = true;
            failures += 1;
            if failures == 1 || failures.is_power_of_two() {
                tracing::warn!(node = %from, peer = %to, addr = %self.addr, failures, error = %status.message(), "raft send failed");
            }
            // What was in flight is lost (Raft resends); back off a little
            // before sending what queued behind it.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until there is something to send, or the peer is closed.
    async fn next_nonempty(&self) -> Option<PeerBatch> {
        loop {
            if self.peer.closed.load(Ordering::Acquire) {
                return None;
            }
            let batch = self.next_call();
            if !batch.is_empty() {
                return Some(batch);
            }
            self.peer.wake.notified().await;
        }
    }

    /// Sends batches on one `Peer/RaftStream` until it ends: a connection
    /// failure, a batch the peer refused, or this peer closed.
    async fn stream(&self, client: &mut PeerClient<tonic::transport::Channel>) -> Sent {
        let (mut tx, rx) = futures::channel::mpsc::channel::<RaftBatch>(STREAM_DEPTH);
        // Nothing is taken from the queue until the peer has answered the
        // call: a peer that cannot take the stream (down, or an older
        // version) loses no message.
        let mut answers = match client.raft_stream(rx).await {
            Ok(answers) => answers.into_inner(),
            Err(status) => return Sent::Failed(status),
        };
        // The peer answers nothing while it takes batches; its answers end,
        // with the reason, when it stops taking them.
        let call = async move {
            loop {
                match answers.message().await {
                    Ok(Some(_)) => {}
                    Ok(None) => return tonic::Status::unavailable("peer ended the raft stream"),
                    Err(status) => return status,
                }
            }
        };
        tokio::pin!(call);
        loop {
            let batch = tokio::select! {
                biased;
                ended = &mut call => return Sent::Failed(ended),
                batch = self.next_nonempty() => match batch {
                    Some(b) => encode_batch(self.from, &self.cluster_id, b),
                    None => return Sent::Closed,
                },
            };
            tokio::select! {
                biased;
                ended = &mut call => return Sent::Failed(ended),
                sent = tx.send(batch) => {
                    if sent.is_err() {
                        // The call dropped its end of the stream: it ended.
                        return Sent::Failed((&mut call).await);
                    }
                }
            }
        }
    }

    /// One unary `Peer/Raft` call with what is queued (a peer without
    /// `RaftStream`).
    async fn call(&self, client: &mut PeerClient<tonic::transport::Channel>) -> Sent {
        let Some(batch) = self.next_nonempty().await else {
            return Sent::Closed;
        };
        let call = encode_batch(self.from, &self.cluster_id, batch);
        match tokio::time::timeout(UNARY_TIMEOUT, client.raft(call)).await {
            Ok(Ok(_)) => Sent::Delivered,
            Ok(Err(status)) => Sent::Failed(status),
            Err(_) => Sent::Failed(tonic::Status::deadline_exceeded("peer did not answer in time")),
        }
    }
}

/// How a send to a peer ended.
enum Sent {
    /// The peer was closed (its address changed or the node stops).
    Closed,
    /// A unary call was answered.
    Delivered,
    /// The call or stream failed; what it carried may be lost.
    Failed(tonic::Status),
}

fn encode_batch(from: NodeId, cluster_id: &str, batch: PeerBatch) -> RaftBatch {
    let mut call = RaftBatch {
        from: from.get(),
        cluster_id: cluster_id.to_string(),
        messages: Vec::with_capacity(batch.messages.len()),
        catch_ups: encode_catch_ups(&batch.catch_ups),
        quiesced: batch
            .quiesced
            .iter()
            .map(|q| Quiesced {
                group: q.group.get(),
                term: q.term.get(),
                index: q.index.get(),
            })
            .collect(),
        wake: batch.wake.iter().map(|g| g.get()).collect(),
    };
    for (group, m) in batch.messages {
        match m.write_to_bytes() {
            Ok(bytes) => call.messages.push(GroupMessage {
                group: group.get(),
                message: Bytes::from(bytes),
            }),
            Err(e) => tracing::error!(node = %from, %group, error = %e, "cannot encode raft message"),
        }
    }
    call
}

/// Catch-up orders on the wire.
pub fn encode_catch_ups(orders: &[CatchUpOrder]) -> Vec<CatchUp> {
    orders
        .iter()
        .map(|o| CatchUp {
            group: o.group.get(),
            term: o.term.get(),
            from_index: o.from.get(),
            to_index: o.last.get(),
        })
        .collect()
}

/// Decodes a received batch after checking it comes from this cluster.
///
/// # Errors
/// `Malformed` for another cluster's batch or an undecodable message.
pub fn decode_batch(batch: &RaftBatch, cluster_id: &str) -> Result<PeerBatch> {
    if batch.cluster_id != cluster_id {
        return Err(ClusterError::Malformed {
            what: "raft batch",
            reason: format!("from cluster {:?}, this is {cluster_id:?}", batch.cluster_id),
        });
    }
    let messages = batch
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
        .collect::<Result<Vec<_>>>()?;
    let catch_ups = batch
        .catch_ups
        .iter()
        .map(|c| CatchUpOrder {
            group: RaftGroupId(c.group),
            term: Term(c.term),
            from: RaftIndex(c.from_index),
            last: RaftIndex(c.to_index),
        })
        .collect();
    let quiesced = batch
        .quiesced
        .iter()
        .map(|q| QuiesceNotice {
            group: RaftGroupId(q.group),
            term: Term(q.term),
            index: RaftIndex(q.index),
        })
        .collect();
    // Every batch says the sender is alive; an empty one says only that.
    Ok(PeerBatch {
        messages,
        catch_ups,
        quiesced,
        wake: batch.wake.iter().copied().map(RaftGroupId).collect(),
        ping: true,
    })
}
