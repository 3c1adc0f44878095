//! Errors of the replication layer.

use strand_storage::StorageError;

use crate::ids::{NodeId, RaftGroupId};

/// Why a replication request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// This replica is not the group's leader; `leader` is the known one.
    #[error("not the leader of group {group} (leader: {leader:?})")]
    NotLeader {
        /// The Raft group.
        group: RaftGroupId,
        /// The current leader's node id, if known.
        leader: Option<NodeId>,
    },
    /// The proposal was dropped or its entry was replaced by another leader's;
    /// whether it was stored is unknown to this replica.
    #[error("proposal in group {group} was dropped or superseded ({reason})")]
    ProposalDropped {
        /// The Raft group.
        group: RaftGroupId,
        /// What happened.
        reason: &'static str,
    },
    /// No group with that id on this node.
    #[error("unknown Raft group {group}")]
    UnknownGroup {
        /// The Raft group.
        group: RaftGroupId,
    },
    /// The replica stopped: its storage failed, or raft-rs panicked on it
    /// (the node's other groups go on). It stepped down and says so in its
    /// status; restarting the broker retries it.
    #[error("the replica of group {group} has failed and stopped")]
    ReplicaFailed {
        /// The Raft group.
        group: RaftGroupId,
    },
    /// The node's replication loop has stopped.
    #[error("the replication loop of node {node} has stopped")]
    Stopped {
        /// Node id.
        node: NodeId,
    },
    /// The storage layer failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// raft-rs refused an operation.
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    /// Persisting Raft's hard state failed.
    #[error("{op} {path}: {source}")]
    State {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A peer could not be reached, or a call to it failed.
    #[error("peer {peer}: {reason}")]
    Transport {
        /// The peer.
        peer: NodeId,
        /// What failed.
        reason: String,
    },
    /// A stored entry or a peer message did not decode.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// What.
        what: &'static str,
        /// Why.
        reason: String,
    },
}

/// Result alias for this crate.
pub type Result<T, E = ClusterError> = std::result::Result<T, E>;
