//! Strand's replication layer: one raft-rs group per partition whose log is
//! the partition's segment log.
//!
//! - [`RaftLog`] implements `raft::Storage` over a `PartitionLog`: a Raft
//!   entry is one stored record batch (entries without records are control
//!   batches that take no offset), so a record is written to disk once.
//! - [`RaftNode`] is one node's replication loop: a single thread ticks and
//!   processes every group it hosts, fsyncs once per `Ready` (group commit),
//!   and hands each peer one batch of messages per iteration.
//! - [`Transport`] moves those batches; [`MemoryNetwork`] is an in-process
//!   network with cuttable links for tests.
//!
//! Safety settings (as the Jepsen analyses of Kafka, Redpanda and NATS
//! JetStream call for): `check_quorum` and `pre_vote` are on; a leader
//! acknowledges `acks=all` only once a majority has the batch fsynced (raft-rs
//! sends the acknowledging messages only after our `Ready` handling synced);
//! term and vote are fsynced before any message of the new term leaves; there
//! is no unclean election.
//!
//! Not built yet (see `docs/ARCHITECTURE.md`): snapshots that ship whole
//! segments, the controller group, the gRPC peer transport, membership
//! changes driven by the broker.
#![deny(missing_docs)]

mod catch_up;
mod early;
mod error;
mod ids;
mod node;
mod quiesce;
mod raft_log;
mod replica;
mod transport;

pub use catch_up::MIN_LAG_ENTRIES;
pub use error::{ClusterError, Result};
pub use ids::{NodeId, RaftGroupId};
pub use node::{NewReplica, NodeConfig, RaftNode};
pub use raft_log::{PersistedState, RaftLog};
pub use replica::{Ack, ReplicaChange, ReplicaHandle, ReplicaProgress, ReplicaStatus};
pub use transport::{
    CONNECTION_WINDOW_BYTES, CatchUpOrder, FetchRange, GrpcTransport, Inbox, LogChunks, LogSource, MemoryNetwork,
    PeerBatch, QuiesceNotice, STREAM_WINDOW_BYTES, Transport, decode_batch, encode_catch_ups,
};

/// Re-exported so peers can encode messages for a transport.
pub use raft::eraftpb::Message as RaftMessage;
