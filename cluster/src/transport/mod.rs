//! Moving Raft messages between nodes.
//!
//! A node hands all messages for one peer, across every group, to the
//! transport in one call per loop iteration, so traffic between two brokers is
//! batched and shares one connection. Delivery is best effort: Raft tolerates
//! loss, duplication and reordering.

mod grpc;
mod memory;

use raft::eraftpb::Message;

use crate::ids::{NodeId, RaftGroupId};

pub use grpc::{GrpcTransport, decode_batch};
pub use memory::MemoryNetwork;

/// Sends batches of `(group, message)` to peer nodes.
pub trait Transport: Send + Sync + 'static {
    /// Queues `msgs` for node `to`; never blocks the caller.
    fn send(&self, from: NodeId, to: NodeId, msgs: Vec<(RaftGroupId, Message)>);
}

/// Receives message batches addressed to a node.
pub trait Inbox: Send + Sync + 'static {
    /// Delivers a batch from node `from`.
    fn deliver(&self, from: NodeId, msgs: Vec<(RaftGroupId, Message)>);
}
