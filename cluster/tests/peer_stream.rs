//! The gRPC transport against a real `Peer` server on a real socket: batches
//! go out on one `Peer/RaftStream` in sending order, and a peer that does
//! not serve the stream (an older broker during a rolling upgrade) still
//! gets every batch, one unary `Peer/Raft` call each.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{Stream, StreamExt};
use strand_cluster::{GrpcTransport, NodeId, PeerBatch, RaftGroupId, RaftMessage, Transport, decode_batch};
use strand_proto::v1 as pb;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

const CLUSTER: &str = "test-cluster";
/// The test server's deadline per request (a broker's is 30 s).
const REQUEST_DEADLINE: Duration = Duration::from_millis(300);

/// A peer that hands every Raft message it receives to `got`, counting how
/// each arrived.
#[derive(Clone)]
struct TestPeer {
    serves_stream: bool,
    got: mpsc::UnboundedSender<RaftMessage>,
    unary_calls: Arc<AtomicUsize>,
    streams: Arc<AtomicUsize>,
}

impl TestPeer {
    fn take(&self, batch: &pb::RaftBatch) -> Result<(), Status> {
        let decoded = decode_batch(batch, CLUSTER).map_err(|e| Status::invalid_argument(e.to_string()))?;
        for (_, m) in decoded.messages {
            let _ = self.got.send(m);
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl pb::peer_server::Peer for TestPeer {
    async fn raft(&self, req: Request<pb::RaftBatch>) -> Result<Response<pb::RaftBatchAck>, Status> {
        self.unary_calls.fetch_add(1, Ordering::Relaxed);
        self.take(&req.into_inner())?;
        Ok(Response::new(pb::RaftBatchAck {}))
    }

    type RaftStreamStream = Pin<Box<dyn Stream<Item = Result<pb::RaftBatchAck, Status>> + Send>>;

    async fn raft_stream(
        &self,
        req: Request<tonic::Streaming<pb::RaftBatch>>,
    ) -> Result<Response<Self::RaftStreamStream>, Status> {
        if !self.serves_stream {
            return Err(Status::unimplemented("not served by this version"));
        }
        self.streams.fetch_add(1, Ordering::Relaxed);
        let mut batches = req.into_inner();
        let this = self.clone();
        let answers = futures::stream::once(async move {
            loop {
                match batches.message().await {
                    Ok(Some(b)) => {
                        if let Err(e) = this.take(&b) {
                            return Some(e);
                        }
                    }
                    Ok(None) => return None,
                    Err(e) => return Some(e),
                }
            }
        })
        .filter_map(|end| async move { end.map(Err) });
        Ok(Response::new(Box::pin(answers)))
    }

    async fn local_status(
        &self,
        _: Request<pb::LocalStatusRequest>,
    ) -> Result<Response<pb::LocalStatusResponse>, Status> {
        Err(Status::unimplemented("test peer"))
    }

    async fn submit_metadata(
        &self,
        _: Request<pb::SubmitMetadataRequest>,
    ) -> Result<Response<pb::SubmitMetadataResponse>, Status> {
        Err(Status::unimplemented("test peer"))
    }

    type FetchLogStream = Pin<Box<dyn Stream<Item = Result<pb::LogChunk, Status>> + Send>>;

    async fn fetch_log(&self, _: Request<pb::FetchLogRequest>) -> Result<Response<Self::FetchLogStream>, Status> {
        Err(Status::unimplemented("test peer"))
    }

    async fn identity(&self, _: Request<pb::IdentityRequest>) -> Result<Response<pb::IdentityResponse>, Status> {
        Err(Status::unimplemented("test peer"))
    }
}

struct Running {
    transport: Arc<GrpcTransport>,
    got: mpsc::UnboundedReceiver<RaftMessage>,
    peer: TestPeer,
}

async fn start(serves_stream: bool) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, got) = mpsc::unbounded_channel();
    let peer = TestPeer {
        serves_stream,
        got: tx,
        unary_calls: Arc::default(),
        streams: Arc::default(),
    };
    let service = pb::peer_server::PeerServer::new(peer.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            // Brokers give every request a deadline; a stream must outlive it.
            .timeout(REQUEST_DEADLINE)
            .add_service(service)
            .serve_with_incoming(tokio_stream_from(listener)),
    );
    let transport = GrpcTransport::new(
        CLUSTER.to_string(),
        HashMap::from([(NodeId(2), addr.to_string())]),
        tokio::runtime::Handle::current(),
        16 << 20,
        strand_security::Dialer::plaintext(),
    );
    Running { transport, got, peer }
}

/// The listener's connections as the stream tonic serves.
fn tokio_stream_from(listener: tokio::net::TcpListener) -> impl Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let accepted = l.accept().await.map(|(s, _)| s);
        Some((accepted, l))
    })
}

/// A heartbeat whose `commit` numbers it.
fn numbered(n: u64) -> RaftMessage {
    let mut m = RaftMessage::default();
    m.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    m.from = 1;
    m.to = 2;
    m.commit = n;
    m
}

/// Sends `batches` batches of 3 numbered messages, some while earlier ones
/// are still in flight, and waits for all of them at the peer.
async fn send_and_collect(r: &mut Running, first: u64, batches: u64) -> Vec<u64> {
    let mut n = first;
    for _ in 0..batches {
        let mut b = PeerBatch::default();
        for _ in 0..3 {
            b.messages.push((RaftGroupId(7), numbered(n)));
            n += 1;
        }
        r.transport.send(NodeId(1), NodeId(2), b);
        if n.is_multiple_of(30) {
            tokio::task::yield_now().await;
        }
    }
    let mut seen = Vec::new();
    while (seen.len() as u64) < n - first {
        match tokio::time::timeout(Duration::from_secs(20), r.got.recv()).await {
            Ok(Some(m)) => seen.push(m.commit),
            Ok(None) => panic!("the test peer stopped"),
            Err(_) => panic!("only {} of {} messages arrived within 20 s", seen.len(), n - first),
        }
    }
    seen
}

#[tokio::test]
async fn batches_arrive_in_order_on_one_stream() {
    let mut r = start(true).await;
    let seen = send_and_collect(&mut r, 0, 500).await;
    assert_eq!(seen, (0..1500).collect::<Vec<_>>(), "every message, in sending order");
    // Past the server's request deadline, the same stream still carries
    // what follows.
    tokio::time::sleep(REQUEST_DEADLINE * 3).await;
    let seen = send_and_collect(&mut r, 1500, 100).await;
    assert_eq!(seen, (1500..1800).collect::<Vec<_>>());
    assert_eq!(r.peer.streams.load(Ordering::Relaxed), 1, "one stream carried them all");
    assert_eq!(r.peer.unary_calls.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_peer_without_the_stream_gets_one_call_per_batch() {
    let mut r = start(false).await;
    let seen = send_and_collect(&mut r, 0, 200).await;
    assert_eq!(seen, (0..600).collect::<Vec<_>>(), "every message, in sending order");
    assert!(r.peer.unary_calls.load(Ordering::Relaxed) > 0, "sent by unary calls");
    assert_eq!(r.peer.streams.load(Ordering::Relaxed), 0);
}
