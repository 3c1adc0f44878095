//! Errors of the broker and their mapping to wire reasons at the gRPC edge.

use strand_proto::v1::{self as pb, ErrorCode};
use strand_storage::{SequenceError, StorageError};

/// Everything a broker request can fail with. Each variant has one stable
/// wire reason ([`BrokerError::code`]).
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No topic by that name.
    #[error("unknown topic {topic:?}")]
    UnknownTopic {
        /// Topic asked for.
        topic: String,
    },
    /// The request named a topic id that is not the topic's (it was deleted,
    /// or deleted and created again).
    #[error(
        "topic {topic:?} does not have the id {topic_id} (deleted, or deleted and created again): refresh metadata"
    )]
    UnknownTopicId {
        /// Topic.
        topic: String,
        /// The id the request named.
        topic_id: String,
    },
    /// The topic exists but not this partition.
    #[error("topic {topic:?} has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        /// Topic.
        topic: String,
        /// Partition asked for.
        partition: u32,
        /// Partitions the topic has.
        partitions: u32,
    },
    /// A topic name that is not allowed.
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic {
        /// The name given.
        name: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// Creating a topic that exists.
    #[error("topic {topic:?} already exists")]
    TopicExists {
        /// Topic.
        topic: String,
    },
    /// A topic or broker setting that is unknown or out of range.
    #[error("invalid config {key}: {reason}")]
    InvalidConfig {
        /// Setting name.
        key: String,
        /// What is wrong.
        reason: String,
    },
    /// A record timestamp too far in the future.
    #[error("record timestamp {timestamp_ms} is more than {max_future_ms} ms ahead of the broker clock ({now_ms})")]
    InvalidTimestamp {
        /// Largest record timestamp of the batch.
        timestamp_ms: i64,
        /// Broker's clock.
        now_ms: i64,
        /// Allowed lead (`max_future_timestamp_ms`).
        max_future_ms: u64,
    },
    /// A malformed request.
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong.
        reason: String,
    },
    /// The acknowledgement level was not reached in time.
    #[error("timed out after {waited_ms} ms waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// How long.
        waited_ms: u64,
    },
    /// The broker is stopping.
    #[error("broker is shutting down")]
    ShuttingDown,
    /// This broker does not lead (or host) the partition.
    #[error("not the leader of {topic}-{partition}{}", leader_addr.as_deref().map(|a| format!(" (leader: {a})")).unwrap_or_default())]
    NotLeader {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// Address of the leader, or of a replica, when known.
        leader_addr: Option<String>,
    },
    /// This broker does not coordinate the group (now).
    #[error("not the coordinator of group {group:?}{}", coordinator_addr.as_deref().map(|a| format!(" (coordinator: {a})")).unwrap_or_default())]
    NotCoordinator {
        /// Group.
        group: String,
        /// The coordinator's address, when known.
        coordinator_addr: Option<String>,
    },
    /// A request from a member that is not (or no longer) in the group, or
    /// for partitions it does not hold.
    #[error("fenced: {reason}")]
    Fenced {
        /// Why.
        reason: String,
    },
    /// The member's epoch is behind the group's.
    #[error("rebalance in progress: member epoch {sent} is behind {current}; heartbeat and retry")]
    RebalanceInProgress {
        /// Epoch sent.
        sent: i32,
        /// The member's current epoch.
        current: i32,
    },
    /// No such group.
    #[error("unknown group {group:?}")]
    UnknownGroup {
        /// Group.
        group: String,
    },
    /// The group has active members.
    #[error("group {group:?} has {members} active member(s); stop them first or use --force")]
    GroupNotEmpty {
        /// Group.
        group: String,
        /// Members.
        members: usize,
    },
    /// A newer incarnation of a producer with a stable key exists.
    #[error("producer {producer_id}: epoch {epoch} is fenced by epoch {current}")]
    ProducerFenced {
        /// Producer id.
        producer_id: i64,
        /// The epoch the caller holds.
        epoch: i16,
        /// The newest epoch.
        current: i16,
    },
    /// A share-group member acknowledged records it does not hold.
    #[error(
        "member {member:?} does not hold every record of {topic}/{partition} offsets {first}..={last} (never acquired, lock ran out, or already acknowledged)"
    )]
    InvalidRecordState {
        /// Member id.
        member: String,
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// First offset of the range.
        first: u64,
        /// Last offset of the range.
        last: u64,
    },
    /// No ACL allows the caller the operation (or one denies it).
    #[error("{principal} may not {operation} {resource}")]
    AuthorizationFailed {
        /// Who asked.
        principal: String,
        /// What it asked to do (`read`, `write`, ...).
        operation: &'static str,
        /// On what (`topic orders`, `group g`, `the cluster`).
        resource: String,
    },
    /// Authentication failed: a password exchange, a token, or none where
    /// one is required.
    #[error("authentication failed: {reason}")]
    AuthenticationFailed {
        /// Why (never whether the user exists).
        reason: String,
    },
    /// The broker a request was forwarded to refused it.
    #[error("{message}")]
    Forwarded {
        /// Its reason.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The replication layer failed or dropped the request.
    #[error("replication: {source}")]
    Replication {
        /// Cause.
        #[source]
        source: strand_cluster::ClusterError,
    },
    /// Storage refused or failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Stored batches that do not decode into protobuf records (a broker-side
    /// fault: producers' batches are validated before they are stored).
    #[error("stored records do not decode: {source}")]
    UndecodableRecords {
        /// Why.
        #[source]
        source: strand_storage::BatchError,
    },
    /// Persisting broker metadata failed.
    #[error("{op} {path}: {source}")]
    Metadata {
        /// What was being done.
        op: &'static str,
        /// File.
        path: std::path::PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The data directory belongs to another cluster or is unreadable.
    #[error("data directory {path}: {reason}")]
    DataDir {
        /// Directory.
        path: std::path::PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Work moved off the async runtime (file I/O) panicked or was
    /// cancelled.
    #[error("{what} failed in the background: {source}")]
    TaskFailed {
        /// What was being done.
        what: &'static str,
        /// Cause.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A fetch named a session this broker does not have (evicted, idle,
    /// or the broker restarted): open a new one.
    #[error("fetch session {session_id} is not open here")]
    FetchSessionNotFound {
        /// The session asked for.
        session_id: u64,
    },
    /// A fetch's session epoch is not the one after the session's last, or
    /// another request of the session is in flight: open a new one.
    #[error("fetch session {session_id}: epoch {epoch} is not the expected {}", expected.map_or("one (a request of the session is in flight)".to_string(), |e| e.to_string()))]
    InvalidFetchSessionEpoch {
        /// The session.
        session_id: u64,
        /// The epoch the request carried.
        epoch: u32,
        /// The one expected (`None`: a request is in flight).
        expected: Option<u32>,
    },
    /// Binding or serving the listener failed.
    #[error("serving {addr}: {source}")]
    Serve {
        /// Listen address.
        addr: String,
        /// Cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl BrokerError {
    /// The stable wire reason.
    pub fn code(&self) -> ErrorCode {
        match self {
            BrokerError::UnknownTopic { .. } => ErrorCode::UnknownTopic,
            BrokerError::UnknownPartition { .. } => ErrorCode::UnknownPartition,
            BrokerError::UnknownTopicId { .. } => ErrorCode::UnknownTopicId,
            BrokerError::InvalidTopic { .. } => ErrorCode::InvalidTopic,
            BrokerError::TopicExists { .. } => ErrorCode::TopicAlreadyExists,
            BrokerError::InvalidConfig { .. } => ErrorCode::InvalidConfig,
            BrokerError::InvalidTimestamp { .. } => ErrorCode::InvalidTimestamp,
            BrokerError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            BrokerError::Timeout { .. } => ErrorCode::RequestTimedOut,
            BrokerError::ShuttingDown => ErrorCode::ShuttingDown,
            BrokerError::NotLeader { .. } => ErrorCode::NotLeader,
            BrokerError::NotCoordinator { .. } => ErrorCode::NotCoordinator,
            BrokerError::Fenced { .. } => ErrorCode::Fenced,
            BrokerError::RebalanceInProgress { .. } => ErrorCode::RebalanceInProgress,
            BrokerError::UnknownGroup { .. } => ErrorCode::UnknownGroup,
            BrokerError::GroupNotEmpty { .. } => ErrorCode::GroupNotEmpty,
            BrokerError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
            BrokerError::InvalidRecordState { .. } => ErrorCode::InvalidRecordState,
            BrokerError::AuthorizationFailed { .. } => ErrorCode::AuthorizationFailed,
            BrokerError::AuthenticationFailed { .. } => ErrorCode::AuthenticationFailed,
            BrokerError::FetchSessionNotFound { .. } => ErrorCode::FetchSessionNotFound,
            BrokerError::InvalidFetchSessionEpoch { .. } => ErrorCode::InvalidFetchSessionEpoch,
            BrokerError::Forwarded { code, .. } => *code,
            BrokerError::Replication { source } => match source {
                // The outcome is unknown; the client retries against the
                // current leader (at-least-once).
                strand_cluster::ClusterError::ProposalDropped { .. }
                | strand_cluster::ClusterError::NotLeader { .. }
                | strand_cluster::ClusterError::UnknownGroup { .. } => ErrorCode::NotLeader,
                strand_cluster::ClusterError::Stopped { .. } => ErrorCode::ShuttingDown,
                strand_cluster::ClusterError::Storage(StorageError::RecordTooLarge { .. }) => ErrorCode::RecordTooLarge,
                _ => ErrorCode::StorageFailed,
            },
            BrokerError::Storage(e) => match e {
                StorageError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange,
                StorageError::RecordTooLarge { .. } => ErrorCode::RecordTooLarge,
                StorageError::InvalidBatch { .. } => ErrorCode::CorruptBatch,
                StorageError::InvalidConfig { .. } => ErrorCode::InvalidConfig,
                StorageError::Sequence(s) => match s {
                    SequenceError::OutOfOrderSequence { .. } => ErrorCode::OutOfOrderSequence,
                    SequenceError::ProducerFenced { .. } => ErrorCode::ProducerFenced,
                    SequenceError::UnknownProducerId { .. } => ErrorCode::UnknownProducerId,
                },
                _ => ErrorCode::StorageFailed,
            },
            BrokerError::Metadata { .. }
            | BrokerError::UndecodableRecords { .. }
            | BrokerError::DataDir { .. }
            | BrokerError::Serve { .. }
            | BrokerError::TaskFailed { .. } => ErrorCode::StorageFailed,
        }
    }

    fn grpc_code(&self) -> tonic::Code {
        match self.code() {
            ErrorCode::UnknownTopic | ErrorCode::UnknownPartition | ErrorCode::UnknownTopicId => tonic::Code::NotFound,
            ErrorCode::TopicAlreadyExists => tonic::Code::AlreadyExists,
            ErrorCode::OffsetOutOfRange => tonic::Code::OutOfRange,
            ErrorCode::RequestTimedOut => tonic::Code::DeadlineExceeded,
            ErrorCode::ShuttingDown | ErrorCode::NotLeader | ErrorCode::NotCoordinator => tonic::Code::Unavailable,
            ErrorCode::UnknownGroup => tonic::Code::NotFound,
            ErrorCode::Fenced
            | ErrorCode::RebalanceInProgress
            | ErrorCode::GroupNotEmpty
            | ErrorCode::OutOfOrderSequence
            | ErrorCode::ProducerFenced
            | ErrorCode::UnknownProducerId
            | ErrorCode::FetchSessionNotFound
            | ErrorCode::InvalidFetchSessionEpoch
            | ErrorCode::InvalidRecordState => tonic::Code::FailedPrecondition,
            ErrorCode::StorageFailed => tonic::Code::Internal,
            ErrorCode::AuthorizationFailed => tonic::Code::PermissionDenied,
            ErrorCode::AuthenticationFailed => tonic::Code::Unauthenticated,
            _ => tonic::Code::InvalidArgument,
        }
    }

    /// The per-partition error message of a batched response.
    pub fn to_proto(&self) -> pb::Error {
        let mut e = pb::Error {
            code: self.code() as i32,
            message: self.to_string(),
            ..Default::default()
        };
        if let BrokerError::Storage(StorageError::OffsetOutOfRange { earliest, latest, .. }) = self {
            e.earliest = earliest.get();
            e.latest = latest.get();
        }
        if let BrokerError::NotLeader {
            leader_addr: Some(a), ..
        } = self
        {
            e.leader_addr = a.clone();
        }
        e
    }
}

impl From<tonic::Status> for BrokerError {
    /// The answer of a broker a request was forwarded to, keeping its reason.
    fn from(s: tonic::Status) -> Self {
        let code = s
            .metadata()
            .get(REASON_KEY)
            .and_then(|v| v.to_str().ok())
            .and_then(ErrorCode::from_str_name)
            .unwrap_or(match s.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => ErrorCode::NotLeader,
                _ => ErrorCode::StorageFailed,
            });
        BrokerError::Forwarded {
            code,
            message: s.message().to_string(),
        }
    }
}

/// Metadata key carrying the stable reason of a failed request.
pub const REASON_KEY: &str = "strand-reason";

impl From<BrokerError> for tonic::Status {
    fn from(e: BrokerError) -> Self {
        let mut status = tonic::Status::new(e.grpc_code(), e.to_string());
        if let Ok(v) = e.code().as_str_name().parse() {
            status.metadata_mut().insert(REASON_KEY, v);
        }
        if let BrokerError::NotCoordinator {
            coordinator_addr: Some(a),
            ..
        } = &e
            && let Ok(v) = a.parse()
        {
            status.metadata_mut().insert("strand-coordinator", v);
        }
        if let BrokerError::Storage(StorageError::OffsetOutOfRange { earliest, latest, .. }) = &e {
            if let Ok(v) = format!("{earliest}").parse() {
                status.metadata_mut().insert("strand-earliest", v);
            }
            if let Ok(v) = format!("{latest}").parse() {
                status.metadata_mut().insert("strand-latest", v);
            }
        }
        status
    }
}

impl From<strand_cluster::ClusterError> for BrokerError {
    /// A replication failure: storage errors keep their storage reason, a
    /// refused proposal is `NOT_LEADER` (without an address: callers that know
    /// the topic use `Node::not_leader`).
    fn from(e: strand_cluster::ClusterError) -> Self {
        match e {
            strand_cluster::ClusterError::Storage(s) => BrokerError::Storage(s),
            strand_cluster::ClusterError::NotLeader { .. } => BrokerError::NotLeader {
                topic: String::new(),
                partition: 0,
                leader_addr: None,
            },
            other => BrokerError::Replication { source: other },
        }
    }
}

/// Result alias for this crate.
pub type Result<T, E = BrokerError> = std::result::Result<T, E>;
