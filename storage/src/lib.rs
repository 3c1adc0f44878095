//! Strand's storage engine: the log of one partition as memory-mapped
//! segment files.
//!
//! This is a plain synchronous library: no async runtime, no networking. Of
//! Raft it knows only what a replicated log must answer: each stored batch
//! carries the [`Term`] and [`RaftIndex`] of the entry it is, and the log can
//! be read and truncated by Raft index ([`PartitionLog::raft_entries`],
//! [`PartitionLog::truncate_from_raft_index`]). Its main types:
//!
//! - [`BatchBuilder`] encodes records into a record batch, the unit that is
//!   written, replicated and served; [`BatchRef`] is a validated view of one,
//!   [`RecordBatch`] an owned batch validated once (a type that vouches for
//!   its bytes, so nothing re-checks them), and [`DecodedRecords`] iterates
//!   its records.
//! - [`Offset`], [`RaftIndex`] and [`Term`] keep a record's position and a
//!   Raft entry's coordinates apart.
//! - [`PartitionLog`] stores batches in segments, assigns offsets, serves
//!   reads straight from the memory map, looks offsets up by timestamp,
//!   truncates (for Raft), recovers after a crash and applies retention.
//!
//! ```
//! use strand_storage::{BatchBuilder, Compression, LogConfig, NewRecord, Offset, PartitionLog, batches};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut log = PartitionLog::open(dir.path(), LogConfig::default()).unwrap();
//! let mut b = BatchBuilder::new(Compression::None);
//! for i in 0..3u8 {
//!     b.push(&NewRecord { timestamp_ms: 1_000 + i64::from(i), key: None, value: Some(&[i]), headers: &[] });
//! }
//! let appended = log.append(&b.build().unwrap()).unwrap();
//! assert_eq!((appended.base_offset, appended.last_offset), (Offset(0), Offset(2)));
//! let bytes = log.read(Offset(1), 1 << 20).unwrap();  // whole batches, from the map
//! let batch = batches(&bytes).next().unwrap().unwrap();
//! assert_eq!(batch.base_offset(), Offset(0));          // the batch holding offset 1
//! assert_eq!(log.lookup_by_timestamp(1_002).unwrap(), Some(Offset(2)));
//! ```
//!
//! # Record batch layout
//!
//! All integers are little-endian.
//!
//! | offset | type | field | written by |
//! |---|---|---|---|
//! | 0 | u64 | base offset | leader, at append |
//! | 8 | u32 | batch length: bytes after this field | producer |
//! | 12 | u32 | CRC-32 (IEEE) of bytes `[0,12)` then `[16,end)` | producer, re-stamped by leader |
//! | 16 | u64 | Raft term | leader |
//! | 24 | u64 | Raft index (0 when not replicated) | leader |
//! | 32 | i64 | append time, ms since the epoch (retention clock) | leader |
//! | 40 | u8 | magic (format version) = 1 | producer |
//! | 41 | u16 | attributes: bits 0-2 codec (0 none, 1 snappy), bit 5 control | producer |
//! | 43 | u32 | record count (≥ 1; 0 exactly for a control batch) | producer |
//! | 47 | i64 | first record timestamp, ms | producer |
//! | 55 | i64 | max record timestamp, ms | producer |
//! | 63 | i64 | producer id (-1 none) | producer |
//! | 71 | i16 | producer epoch (-1 none) | producer |
//! | 73 | i32 | base sequence (-1 none) | producer |
//! | 77 | | records section, compressed as a whole if the codec says so | producer |
//!
//! Each record: varlong length, u8 attributes, varlong timestamp delta, varlong
//! offset delta, varlong key length (-1 null) + key, varlong value length (-1
//! null) + value, varlong header count, then per header varlong key length +
//! UTF-8 key, varlong value length (-1 null) + value. Varlongs are zig-zag.
//!
//! A control batch (bit 5) has no records and takes no offset; it stores a
//! Raft entry that carries no data (a no-op, a configuration change).
//!
//! The CRC covers every byte but itself. The fields the leader sets come
//! first, so re-stamping a batch hashes those 36 bytes and combines the result
//! with the CRC of the producer's part, computed once during validation.
//!
//! # Files and durability
//!
//! A partition directory holds segments `<base offset:020>.log` with a sparse
//! offset index `.index` (`u32` relative offset, `u32` position, one entry per
//! `index_interval_bytes`) and a time index `.timeindex` (`i64` running max
//! timestamp, `u32` relative offset). Log files grow in `fallocate`d steps and
//! are written with `pwrite`; readers get `Bytes` slices of a read-only map.
//! Index files are written through a map, also only inside reserved space.
//! A full disk therefore fails an append with [`StorageError::DiskFull`], never
//! with `SIGBUS`. When appended bytes reach disk is set by [`FsyncPolicy`]; a
//! failed fsync stops the log for good ([`StorageError::Failed`]).
//!
//! On open, every batch of the active segment is validated (length, offsets,
//! CRC); a torn or corrupt tail is zeroed, reported and logged, and the active
//! segment's indexes are rebuilt. Sealed segments are CRC-checked too (unless
//! [`LogConfig::verify_sealed_on_open`] is off) and a damaged one makes the log
//! refuse to open, naming the file and byte; their indexes are rebuilt if
//! missing or inconsistent.
#![deny(missing_docs)]

mod batch;
mod clock;
mod config;
mod coordinates;
mod dir;
mod error;
mod index;
mod journal;
mod log;
mod prealloc;
mod producers;
mod recovery;
mod segment;

pub use batch::{
    BatchBuilder, BatchRef, Compression, DecodedRecords, HEADER_LEN, Header, LENGTH_PREFIX, MAGIC,
    MAX_DECOMPRESSED_BYTES, NewRecord, ProducerInfo, RecordBatch, RecordIter, RecordRules, RecordView, Stamp, batches,
    control_batch, encoded_len_estimate, framed_len, set_producer,
};
pub use clock::now_ms;
pub use config::{FsyncPolicy, LogConfig};
pub use coordinates::{Offset, RaftIndex, Term};
pub use dir::{rename_durably, replace_file, sync_dir};
pub use error::{BatchError, Result, SequenceError, StorageError};
pub use journal::JOURNAL_ENV;
pub use log::{AppendInfo, BatchLocation, PartitionLog, RetentionReport, SyncPoint};
pub use producers::snapshot::{decode as decode_producer_snapshot, encode as encode_producer_snapshot};
pub use producers::{
    ProducerAppend, ProducerEntry, ProducerStates, REMEMBERED_BATCHES, SequenceCheck, SequencedBatch, next_sequence,
};
pub use recovery::{RecoveryReport, Truncation};
