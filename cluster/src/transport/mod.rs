//! Moving Raft traffic between nodes.
//!
//! A node hands all messages for one peer, across every group, to the
//! transport in one call per loop iteration ([`PeerBatch`]), so traffic
//! between two brokers is batched and shares one connection. Delivery is best
//! effort: Raft tolerates loss, duplication and reordering. Besides Raft's
//! messages a batch carries catch-up orders, and a follower far behind pulls
//! the entries they name with [`Transport::fetch_log`] (see `catch_up`).

mod grpc;
mod memory;

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;
use raft::eraftpb::Message;
use strand_storage::{RaftIndex, Term};

pub use grpc::{CONNECTION_WINDOW_BYTES, GrpcTransport, STREAM_WINDOW_BYTES, decode_batch, encode_catch_ups};
pub use memory::MemoryNetwork;

use crate::error::Result;
use crate::ids::{NodeId, RaftGroupId};

/// What one node sends another in one go.
#[derive(Debug, Default)]
pub struct PeerBatch {
    /// Raft messages, with their group.
    pub messages: Vec<(RaftGroupId, Message)>,
    /// Catch-up orders from a leader to this follower.
    pub catch_ups: Vec<CatchUpOrder>,
    /// Groups whose leader (the sender) stops ticking (see `quiesce`).
    pub quiesced: Vec<QuiesceNotice>,
    /// Groups whose replica on the sender stopped (failed or removed): the
    /// receiver's replicas must tick again, to elect without it.
    pub wake: Vec<RaftGroupId>,
    /// Sent even with nothing else in it: the sender's node is alive (the
    /// node-level heartbeat quiet groups rely on).
    pub ping: bool,
}

impl PeerBatch {
    /// Whether there is nothing to send.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
            && self.catch_ups.is_empty()
            && self.quiesced.is_empty()
            && self.wake.is_empty()
            && !self.ping
    }
}

/// A leader's notice that its group is idle and fully replicated, and that
/// it stops ticking and heartbeating until something happens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QuiesceNotice {
    /// The Raft group.
    pub group: RaftGroupId,
    /// The leader's term.
    pub term: Term,
    /// The group's last (and committed) index.
    pub index: RaftIndex,
}

/// A leader's order to a follower: fetch these committed entries instead
/// of waiting for Raft's appends (see `catch_up`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CatchUpOrder {
    /// The Raft group.
    pub group: RaftGroupId,
    /// The leader's term.
    pub term: Term,
    /// First entry to fetch.
    pub from: RaftIndex,
    /// Last entry to fetch (committed on the leader).
    pub last: RaftIndex,
}

/// A range of committed entries a follower asks its leader for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FetchRange {
    /// The Raft group.
    pub group: RaftGroupId,
    /// First entry.
    pub from: RaftIndex,
    /// Last entry (inclusive).
    pub last: RaftIndex,
    /// Most bytes per chunk.
    pub max_chunk_bytes: usize,
}

/// Chunks of whole stored batches, consecutive entries in order.
pub type LogChunks = Pin<Box<dyn Stream<Item = Result<Bytes>> + Send>>;

/// Sends batches to peer nodes, and fetches committed entries from them.
pub trait Transport: Send + Sync + 'static {
    /// Queues `batch` for node `to`; never blocks the caller.
    fn send(&self, from: NodeId, to: NodeId, batch: PeerBatch);

    /// Streams the committed entries `range` of a group from node `leader`.
    fn fetch_log(&self, from: NodeId, leader: NodeId, range: FetchRange) -> LogChunks;
}

/// Receives batches addressed to a node.
pub trait Inbox: Send + Sync + 'static {
    /// Delivers a batch from node `from`.
    fn deliver(&self, from: NodeId, batch: PeerBatch);
}

/// Serves a node's committed entries to its peers (the leader's side of a
/// catch-up).
pub trait LogSource: Send + Sync + 'static {
    /// Committed entries of `group` from `from` to at most `last`: whole
    /// stored batches read from the segment maps, at least one, then more
    /// while they fit in `max_bytes`.
    ///
    /// # Errors
    /// `UnknownGroup`; `Malformed` if `last` is past the commit index; a
    /// storage error (an entry removed by retention, damage).
    fn read_committed(&self, group: RaftGroupId, from: RaftIndex, last: RaftIndex, max_bytes: usize) -> Result<Bytes>;
}
