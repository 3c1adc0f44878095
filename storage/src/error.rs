//! Errors of the storage crate.

use std::path::PathBuf;

use crate::coordinates::{Offset, RaftIndex};

/// Why a byte string is not a valid record batch.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// Fewer bytes than a batch header.
    #[error("batch of {len} bytes is shorter than a batch header")]
    TooShort {
        /// Bytes available.
        len: usize,
    },
    /// The length field disagrees with the bytes given.
    #[error("batch declares {declared} bytes but {actual} were given")]
    LengthMismatch {
        /// Total length the header declares.
        declared: usize,
        /// Bytes actually present.
        actual: usize,
    },
    /// A format version this build does not know.
    #[error("unsupported batch format version {magic}")]
    UnsupportedMagic {
        /// The version byte found.
        magic: u8,
    },
    /// The stored CRC does not match the bytes.
    #[error("batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC in the header.
        stored: u32,
        /// CRC of the bytes.
        computed: u32,
    },
    /// A data batch with no records, or a control batch with some.
    #[error("batch has no records (or is a control batch with records)")]
    Empty,
    /// A compression codec this build does not know.
    #[error("unknown compression codec {codec}")]
    UnknownCodec {
        /// The codec bits found.
        codec: u16,
    },
    /// Compressing or decompressing the records section failed.
    #[error("snappy: {source}")]
    Compression {
        /// The codec's error.
        #[source]
        source: snap::Error,
    },
    /// The records section does not decode.
    #[error("malformed records: {reason}")]
    MalformedRecords {
        /// What was wrong.
        reason: &'static str,
    },
    /// A record's offset delta is not its position in the batch.
    #[error("malformed records: record {record} has offset delta {delta}; deltas must run 0..count-1")]
    OffsetDelta {
        /// Position of the record in the batch.
        record: u32,
        /// The delta it carries.
        delta: i64,
    },
    /// The header's record count disagrees with the records section.
    #[error("record count is {declared} but the records section holds {found}")]
    RecordCount {
        /// `record_count` in the header.
        declared: u32,
        /// Records decoded before the section ended.
        found: u32,
    },
    /// A timestamp the header or the broker's clock does not allow.
    #[error("invalid timestamps: {reason}")]
    Timestamps {
        /// Which rule was broken, with the values.
        reason: String,
    },
    /// A compressed records section that would decompress past the limit.
    #[error("records section decompresses to {len} bytes, more than the {max} allowed")]
    DecompressedTooLarge {
        /// Claimed decompressed length.
        len: usize,
        /// The limit.
        max: usize,
    },
}

/// Why an idempotent producer's batch is refused (see
/// [`crate::ProducerStates::check`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SequenceError {
    /// The batch does not continue its producer's sequence: a batch before
    /// it was never stored.
    #[error("producer {producer_id}: sequence {got} is out of order, {expected} was expected")]
    OutOfOrderSequence {
        /// Producer id.
        producer_id: i64,
        /// The sequence that would continue the stored ones.
        expected: i32,
        /// The batch's base sequence.
        got: i32,
    },
    /// A newer incarnation of the producer (a higher epoch) wrote here.
    #[error("producer {producer_id}: epoch {epoch} is fenced by epoch {current}")]
    ProducerFenced {
        /// Producer id.
        producer_id: i64,
        /// The batch's epoch.
        epoch: i16,
        /// The newest stored epoch.
        current: i16,
    },
    /// The partition has no state for the producer (never wrote here, or
    /// expired) and the batch does not start a sequence.
    #[error("producer {producer_id} is unknown to this partition (never seen or expired)")]
    UnknownProducerId {
        /// Producer id.
        producer_id: i64,
    },
}

/// Errors of [`crate::PartitionLog`] and the files under it.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file system call failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The disk is full: the append was refused and nothing was written.
    #[error("no space left on device while extending {path}")]
    DiskFull {
        /// The file that could not grow.
        path: PathBuf,
    },
    /// The offset is outside the stored range.
    #[error("offset {requested} is out of range [{earliest}, {latest}]")]
    OffsetOutOfRange {
        /// Offset asked for.
        requested: Offset,
        /// First stored offset.
        earliest: Offset,
        /// Log end offset (the next offset to be written).
        latest: Offset,
    },
    /// A Raft entry that is not stored.
    #[error("Raft index {requested} is not stored (the log holds [{first}, {last}])")]
    RaftIndexOutOfRange {
        /// Raft index asked for.
        requested: RaftIndex,
        /// First stored Raft index.
        first: RaftIndex,
        /// Last stored Raft index.
        last: RaftIndex,
    },
    /// A batch larger than the configured maximum.
    #[error("batch of {size} bytes exceeds the maximum of {max} bytes")]
    RecordTooLarge {
        /// Batch size.
        size: usize,
        /// `max_batch_bytes`.
        max: u32,
    },
    /// The batch handed to append is malformed.
    #[error("invalid batch: {source}")]
    InvalidBatch {
        /// Why.
        #[source]
        source: BatchError,
    },
    /// Stored bytes fail validation: the partition will not serve them.
    #[error("corrupt batch in {file} at byte {position}: {reason}")]
    Corrupt {
        /// Segment file.
        file: PathBuf,
        /// Byte position of the bad batch.
        position: u64,
        /// What was wrong.
        reason: String,
    },
    /// Truncation must happen at a batch's first offset.
    #[error("offset {offset} is inside the batch starting at {batch_base}")]
    NotBatchBoundary {
        /// Offset asked for.
        offset: Offset,
        /// First offset of the batch that contains it.
        batch_base: Offset,
    },
    /// A replicated batch whose base offset is not the log end.
    #[error("batch starts at offset {got} but the log ends at {expected}")]
    UnexpectedOffset {
        /// Log end offset.
        expected: Offset,
        /// The batch's base offset.
        got: Offset,
    },
    /// A Raft entry that does not follow the last stored one.
    #[error("entry has Raft index {got} but the log expects {expected}")]
    UnexpectedRaftIndex {
        /// The index that would follow the log.
        expected: RaftIndex,
        /// The entry's index.
        got: RaftIndex,
    },
    /// An earlier fsync failed: the partition accepts no more writes.
    #[error("partition {dir} stopped accepting writes after a failed fsync: {reason}")]
    Failed {
        /// Partition directory.
        dir: PathBuf,
        /// The original failure.
        reason: String,
    },
    /// An idempotent producer's batch that must not be appended.
    #[error("{0}")]
    Sequence(#[from] SequenceError),
    /// A configuration value is out of range.
    #[error("invalid storage config {key}: {reason}")]
    InvalidConfig {
        /// Config key.
        key: &'static str,
        /// What is wrong with it.
        reason: String,
    },
}

impl StorageError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        if source.raw_os_error() == Some(libc::ENOSPC) {
            return StorageError::DiskFull { path };
        }
        StorageError::Io { op, path, source }
    }
}

/// Result alias for this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;
