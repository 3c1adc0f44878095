//! The one error type of the client, and how broker answers map onto it.
//!
//! Every error has a stable, machine-readable [`ClientError::reason`]. Errors
//! the broker reported keep the broker's reason (the `ErrorCode` name, e.g.
//! `UNKNOWN_TOPIC`), whether it came per partition in a response or for the
//! whole request as a gRPC status with the [`REASON_METADATA_KEY`] metadata.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use strand_proto::v1::ErrorCode;
use strand_storage::BatchError;

/// gRPC metadata key in which the broker puts the `ErrorCode` name of a
/// whole-request failure.
pub const REASON_METADATA_KEY: &str = "strand-reason";

/// Result alias for this crate.
pub type Result<T, E = ClientError> = std::result::Result<T, E>;

/// Everything that can go wrong in the client.
///
/// Errors are `Clone` (sources are shared) because one failed batch fails the
/// delivery future of each of its records.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The broker refused the request or one partition of it.
    #[error("{reason}: {message}")]
    Broker {
        /// The broker's `ErrorCode` name, e.g. `UNKNOWN_TOPIC` or `RECORD_TOO_LARGE`.
        reason: Cow<'static, str>,
        /// The broker's readable explanation.
        message: String,
    },
    /// A fetch asked for an offset outside the partition's stored range.
    #[error("offset {offset} of {topic}/{partition} is out of range [{earliest}, {latest}]")]
    OffsetOutOfRange {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The offset asked for.
        offset: u64,
        /// First offset still stored.
        earliest: u64,
        /// Log end offset.
        latest: u64,
    },
    /// A record too large to ever be sent under the producer's limits.
    #[error("record of about {size} bytes exceeds {limit} ({max} bytes)")]
    RecordTooLarge {
        /// Estimated encoded size of the record.
        size: usize,
        /// The limit's value.
        max: usize,
        /// Name of the limit (a builder setting).
        limit: &'static str,
    },
    /// A fetched batch failed validation (length, CRC, format or records).
    #[error("corrupt batch in {topic}/{partition} at or after offset {offset}: {source}")]
    CorruptBatch {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
        /// The consumer's position when the batch was met.
        offset: u64,
        /// What was wrong with it.
        #[source]
        source: Arc<BatchError>,
    },
    /// A gRPC call failed without a broker reason (connection lost, broker
    /// unavailable, message limits, ...).
    #[error("transport error: {source}")]
    Transport {
        /// The gRPC status.
        #[source]
        source: Arc<tonic::Status>,
    },
    /// No broker of the list could be reached.
    #[error("could not reach any broker of {addrs:?}: {source}")]
    Connect {
        /// The addresses tried, in order.
        addrs: Vec<String>,
        /// The last failure.
        #[source]
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// An operation did not finish in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        what: String,
        /// The time limit that passed.
        after: Duration,
    },
    /// A caller-supplied value is unusable.
    #[error("invalid argument: {message}")]
    InvalidArgument {
        /// What is wrong.
        message: String,
    },
    /// A partition has no position and `auto_offset_reset` is `None`.
    #[error("no position for {topic}/{partition} and auto_offset_reset is None: seek first")]
    NoOffset {
        /// Topic.
        topic: String,
        /// Partition.
        partition: u32,
    },
    /// The broker answered something this client cannot interpret.
    #[error("malformed broker response: {message}")]
    Protocol {
        /// What was wrong.
        message: String,
    },
    /// The producer was closed (or its background task is gone).
    #[error("the producer is closed")]
    Closed,
}

/// Broker reasons worth retrying: the request may succeed elsewhere or later.
const RETRIABLE_REASONS: [ErrorCode; 4] = [
    ErrorCode::NotLeader,
    ErrorCode::NotCoordinator,
    ErrorCode::RequestTimedOut,
    ErrorCode::ShuttingDown,
];

impl ClientError {
    /// The stable, machine-readable reason: the broker's `ErrorCode` name for
    /// errors it reported (`UNKNOWN_TOPIC`, `OFFSET_OUT_OF_RANGE`,
    /// `RECORD_TOO_LARGE`, `CORRUPT_BATCH`, ...), otherwise one of
    /// `TRANSPORT`, `CONNECT`, `TIMEOUT`, `INVALID_ARGUMENT`, `NO_OFFSET`,
    /// `PROTOCOL`, `CLOSED`.
    pub fn reason(&self) -> &str {
        match self {
            ClientError::Broker { reason, .. } => reason,
            ClientError::OffsetOutOfRange { .. } => ErrorCode::OffsetOutOfRange.as_str_name(),
            ClientError::RecordTooLarge { .. } => ErrorCode::RecordTooLarge.as_str_name(),
            ClientError::CorruptBatch { .. } => ErrorCode::CorruptBatch.as_str_name(),
            ClientError::Transport { .. } => "TRANSPORT",
            ClientError::Connect { .. } => "CONNECT",
            ClientError::Timeout { .. } => "TIMEOUT",
            ClientError::InvalidArgument { .. } => "INVALID_ARGUMENT",
            ClientError::NoOffset { .. } => "NO_OFFSET",
            ClientError::Protocol { .. } => "PROTOCOL",
            ClientError::Closed => "CLOSED",
        }
    }

    /// The broker's error code, when the reason is one this client knows.
    pub fn code(&self) -> Option<ErrorCode> {
        ErrorCode::from_str_name(self.reason())
    }

    /// Whether retrying the same operation may succeed: leadership moved,
    /// the broker timed out or is shutting down, or the network failed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClientError::Broker { .. } => self.code().is_some_and(|c| RETRIABLE_REASONS.contains(&c)),
            ClientError::Transport { source } => matches!(
                source.code(),
                tonic::Code::Unavailable
                    | tonic::Code::Unknown
                    | tonic::Code::Cancelled
                    | tonic::Code::Aborted
                    | tonic::Code::DeadlineExceeded
            ),
            ClientError::Connect { .. } | ClientError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// Whether the error suggests the cached leader or connection is stale,
    /// so metadata should be refreshed before retrying.
    pub(crate) fn needs_metadata_refresh(&self) -> bool {
        match self {
            ClientError::Broker { .. } => matches!(self.code(), Some(ErrorCode::NotLeader | ErrorCode::UnknownTopicId)),
            ClientError::Transport { .. } | ClientError::Connect { .. } | ClientError::Timeout { .. } => true,
            _ => false,
        }
    }

    /// Builds a broker error from a known code.
    pub(crate) fn broker(code: ErrorCode, message: impl Into<String>) -> Self {
        ClientError::Broker {
            reason: Cow::Borrowed(code.as_str_name()),
            message: message.into(),
        }
    }

    /// Builds an [`ClientError::InvalidArgument`].
    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        ClientError::InvalidArgument {
            message: message.into(),
        }
    }

    /// Converts a per-partition error of a response. `offset` is the offset
    /// the request asked for (used for `OFFSET_OUT_OF_RANGE`). Returns `None`
    /// when the error says `NONE`.
    pub(crate) fn from_partition_error(
        e: &strand_proto::v1::Error,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Option<Self> {
        let code = ErrorCode::try_from(e.code).ok();
        match code {
            Some(ErrorCode::None) => None,
            Some(ErrorCode::OffsetOutOfRange) => Some(ClientError::OffsetOutOfRange {
                topic: topic.to_owned(),
                partition,
                offset,
                earliest: e.earliest,
                latest: e.latest,
            }),
            Some(code) => Some(ClientError::broker(code, e.message.clone())),
            None => Some(ClientError::Broker {
                reason: Cow::Owned(format!("ERROR_CODE_{}", e.code)),
                message: e.message.clone(),
            }),
        }
    }
}

/// Reads the broker's reason from a status's [`REASON_METADATA_KEY`].
fn reason_of(status: &tonic::Status) -> Option<Cow<'static, str>> {
    let name = status.metadata().get(REASON_METADATA_KEY)?.to_str().ok()?.trim();
    match ErrorCode::from_str_name(name) {
        Some(ErrorCode::None) => None,
        Some(code) => Some(Cow::Borrowed(code.as_str_name())),
        None if name.is_empty() => None,
        None => Some(Cow::Owned(name.to_owned())),
    }
}

impl From<tonic::Status> for ClientError {
    /// A status carrying a broker reason becomes [`ClientError::Broker`]
    /// (reason and message kept); any other status is a
    /// [`ClientError::Transport`] error.
    fn from(status: tonic::Status) -> Self {
        match reason_of(&status) {
            Some(reason) => ClientError::Broker {
                reason,
                message: status.message().to_owned(),
            },
            None => ClientError::Transport {
                source: Arc::new(status),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_with_reason(code: tonic::Code, reason: &str, message: &str) -> tonic::Status {
        let mut s = tonic::Status::new(code, message);
        s.metadata_mut()
            .insert(REASON_METADATA_KEY, reason.parse().expect("ascii metadata"));
        s
    }

    #[test]
    fn status_with_reason_metadata_maps_to_broker_error_with_that_reason() {
        let cases = [
            (tonic::Code::NotFound, "UNKNOWN_TOPIC", false),
            (tonic::Code::NotFound, "UNKNOWN_TOPIC_ID", false),
            (tonic::Code::InvalidArgument, "RECORD_TOO_LARGE", false),
            (tonic::Code::OutOfRange, "OFFSET_OUT_OF_RANGE", false),
            (tonic::Code::Unavailable, "NOT_LEADER", true),
            (tonic::Code::Unavailable, "SHUTTING_DOWN", true),
            (tonic::Code::DeadlineExceeded, "REQUEST_TIMED_OUT", true),
            (tonic::Code::Internal, "STORAGE_FAILED", false),
            (tonic::Code::Internal, "SOME_FUTURE_REASON", false),
        ];
        for (i, (code, reason, retriable)) in cases.into_iter().enumerate() {
            let err = ClientError::from(status_with_reason(code, reason, "the message"));
            assert_eq!(err.reason(), reason, "#{i}: reason of {err:?}");
            assert_eq!(err.is_retriable(), retriable, "#{i}: retriable of {err:?}");
            match &err {
                ClientError::Broker { message, .. } => assert_eq!(message, "the message", "#{i}"),
                other => panic!("#{i}: expected a broker error, got {other:?}"),
            }
        }
    }

    #[test]
    fn known_reasons_expose_their_error_code() {
        let err = ClientError::from(status_with_reason(
            tonic::Code::NotFound,
            "UNKNOWN_TOPIC",
            "no such topic",
        ));
        assert_eq!(err.code(), Some(ErrorCode::UnknownTopic));
        assert_eq!(err.to_string(), "UNKNOWN_TOPIC: no such topic");
    }

    #[test]
    fn status_without_reason_is_a_transport_error() {
        for (i, (code, retriable)) in [
            (tonic::Code::Unavailable, true),
            (tonic::Code::Unknown, true),
            (tonic::Code::Cancelled, true),
            (tonic::Code::Unimplemented, false),
            (tonic::Code::ResourceExhausted, false),
        ]
        .into_iter()
        .enumerate()
        {
            let err = ClientError::from(tonic::Status::new(code, "boom"));
            assert_eq!(err.reason(), "TRANSPORT", "#{i}");
            assert_eq!(err.is_retriable(), retriable, "#{i}: {code:?}");
        }
    }

    #[test]
    fn none_or_empty_reason_metadata_is_ignored() {
        for r in ["NONE", ""] {
            let err = ClientError::from(status_with_reason(tonic::Code::Unavailable, r, "x"));
            assert_eq!(err.reason(), "TRANSPORT", "reason {r:?}");
        }
    }

    #[test]
    fn partition_errors_keep_reason_and_offset_range() {
        let e = strand_proto::v1::Error {
            code: ErrorCode::OffsetOutOfRange as i32,
            message: "out".into(),
            earliest: 5,
            latest: 9,
            leader_addr: String::new(),
        };
        match ClientError::from_partition_error(&e, "t", 2, 42) {
            Some(ClientError::OffsetOutOfRange {
                offset,
                earliest,
                latest,
                partition,
                ..
            }) => assert_eq!((offset, earliest, latest, partition), (42, 5, 9, 2)),
            other => panic!("expected OffsetOutOfRange, got {other:?}"),
        }
        let none = strand_proto::v1::Error::default();
        assert!(ClientError::from_partition_error(&none, "t", 0, 0).is_none());
        let unknown = strand_proto::v1::Error {
            code: 999,
            ..Default::default()
        };
        let err = ClientError::from_partition_error(&unknown, "t", 0, 0).expect("an error");
        assert_eq!(err.reason(), "ERROR_CODE_999");
    }
}
