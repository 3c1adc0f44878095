//! Share groups: queues on the log (Kafka's KIP-932).
//!
//! Any number of members read the same topic partitions; each record is
//! handed to one member at a time, locked to it for a lock duration, and
//! acknowledged one by one (accept, release, reject, renew). A lock that
//! runs out, or a member that leaves or goes silent, makes its records
//! available again; a record delivered `share_delivery_count_limit` times
//! without being accepted, or rejected, is archived and copied to
//! `<topic>.dlq` with the `strand.dlq.*` headers. A record whose
//! `strand.deliver_at` header names a later time is not handed out before
//! it.
//!
//! The coordinator of a share group is its consumer-group coordinator (the
//! leader of the group's `__consumer_offsets` partition). It keeps each
//! share-partition's state ([`state`]) in that partition's shard, writes
//! every change there through Raft (`acks=all`) before it answers or applies
//! it, and rebuilds the state from the partition when it becomes leader. It
//! reads the records it hands out from their partition's leader
//! ([`source`]).
//!
//! - [`acquire`]: share fetches (acknowledge, then acquire);
//! - [`acknowledge`]: acknowledgements, leaving, and upkeep (silent
//!   members, records out of deliveries, dead letters);
//! - [`views`]: list and describe.
//!
//! Invariants:
//! - every change is committed before it is applied to memory or answered,
//!   so a new coordinator knows every acknowledgement that was confirmed and
//!   every delivery that was made (delivery counts never go back);
//! - changes of one shard are serialized by the shard's write lock;
//! - only committed records (below the leader's high watermark) are read.

pub mod acknowledge;
pub mod acquire;
pub(crate) mod source;
pub mod state;
pub mod views;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use strand_proto::v1 as pb;

use super::store::StoredShare;
pub use state::AckKind;

/// A member of a share group, as its requests show it.
#[derive(Clone, Debug)]
pub(crate) struct ShareMember {
    /// Topics it reads.
    pub topics: Vec<String>,
    /// Its last request.
    pub last_seen: Instant,
    /// It leaves when silent this long.
    pub session_timeout: Duration,
    /// How long it holds what it acquires.
    pub lock: Duration,
}

/// A share group's state in its coordinator.
#[derive(Clone, Debug, Default)]
pub(crate) struct ShareGroup {
    /// State per (topic, partition).
    pub partitions: BTreeMap<(String, u32), StoredShare>,
    /// Live members (memory only: a new coordinator learns them from their
    /// next request; the locks they held are in `partitions`).
    pub members: BTreeMap<String, ShareMember>,
}

/// Where a partition the group never read starts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ShareReset {
    /// At the high watermark (Kafka's default).
    #[default]
    Latest,
    /// At the first stored offset.
    Earliest,
}

/// An acknowledgement of `first..=last`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShareAck {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// First offset.
    pub first: u64,
    /// Last offset (inclusive).
    pub last: u64,
    /// What the member says.
    pub kind: AckKind,
}

/// The outcome of one acknowledgement: for a renewal, the new deadline.
pub type AckResult = crate::error::Result<Option<i64>>;

/// A share fetch.
#[derive(Clone, Debug)]
pub struct ShareFetch {
    /// Group id.
    pub group: String,
    /// Member id (chosen by the member).
    pub member: String,
    /// Topics to read.
    pub topics: Vec<String>,
    /// Most records to acquire.
    pub max_records: usize,
    /// Longest wait for any.
    pub max_wait: Duration,
    /// Lock duration asked for (`None`: the broker's).
    pub lock: Option<Duration>,
    /// Session timeout asked for (`None`: the broker's).
    pub session_timeout: Option<Duration>,
    /// Where never-read partitions start.
    pub reset: ShareReset,
    /// Acknowledgements to process first.
    pub acks: Vec<ShareAck>,
}

/// A record handed to a member.
#[derive(Clone, Debug)]
pub struct Acquired {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// The record.
    pub record: pb::Record,
    /// 1 on its first delivery.
    pub delivery_count: u32,
    /// The member holds it until then (ms since the Unix epoch).
    pub deadline_ms: i64,
}

/// Longest acknowledgement range accepted (a range is checked record by
/// record).
pub const MAX_ACK_RANGE: u64 = 100_000;

/// The wall clock in ms (lock deadlines and delivery times are wall-clock
/// instants, so they mean the same on the next coordinator).
pub(crate) fn now_ms() -> i64 {
    strand_storage::now_ms()
}
