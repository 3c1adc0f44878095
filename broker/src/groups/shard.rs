//! The groups of one `__consumer_offsets` partition, as loaded by its
//! leader in one term.
//!
//! Invariants: a shard serves only while its partition is led in the term it
//! was loaded in; writes to the partition are serialized by `write`, checked
//! before they are proposed and applied to memory only once committed, so
//! memory never shows an offset that a failover could lose. The same holds
//! for share-group state.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, MutexGuard};
use strand_cluster::Ack;
use strand_storage::{Offset, Term};

use super::membership::Group;
use super::share::ShareGroup;
use super::store::{self, GroupRecord, StoredGroup};
use crate::error::Result;
use crate::node::Node;
use crate::partition::Partition;

/// The groups of one offsets partition, loaded in one leader term.
pub(crate) struct Shard {
    pub(crate) partition: Arc<Partition>,
    pub(crate) term: Term,
    /// Serializes writes (commits, resets, deletes) to the partition.
    pub(crate) write: tokio::sync::Mutex<()>,
    groups: Mutex<BTreeMap<String, Group>>,
    shares: Mutex<BTreeMap<String, ShareGroup>>,
}

impl Shard {
    /// Builds the shard from what a read of its partition found: every group
    /// with members held for their old session timeout (they may still
    /// think they hold partitions).
    pub(crate) fn new(partition: Arc<Partition>, term: Term, stored: BTreeMap<String, StoredGroup>) -> Self {
        let now = Instant::now();
        let mut shares = BTreeMap::new();
        let groups = stored
            .into_iter()
            .filter_map(|(name, mut s)| {
                if !s.shares.is_empty() {
                    let partitions = std::mem::take(&mut s.shares);
                    shares.insert(
                        name.clone(),
                        ShareGroup {
                            partitions,
                            members: BTreeMap::new(),
                        },
                    );
                }
                // A share group only (no consumer-group state).
                (!s.offsets.is_empty() || s.epoch > 0 || s.members > 0).then_some((name, s))
            })
            .map(|(name, s)| {
                let mut g = Group::new(name.clone());
                g.epoch = s.epoch;
                g.offsets = s.offsets;
                if s.members > 0 {
                    g.hold_until = Some(now + Duration::from_millis(s.session_timeout_ms));
                }
                (name, g)
            })
            .collect();
        Shard {
            partition,
            term,
            write: tokio::sync::Mutex::new(()),
            groups: Mutex::new(groups),
            shares: Mutex::new(shares),
        }
    }

    /// The groups (a short lock: never held across an `.await`).
    pub(crate) fn groups(&self) -> MutexGuard<'_, BTreeMap<String, Group>> {
        self.groups.lock()
    }

    /// The share groups (a short lock: never held across an `.await`).
    pub(crate) fn shares(&self) -> MutexGuard<'_, BTreeMap<String, ShareGroup>> {
        self.shares.lock()
    }

    /// Still the leader in the term it was loaded in.
    pub(crate) fn current(&self) -> bool {
        let st = self.partition.status();
        st.is_leader && st.term == self.term
    }

    /// Writes records to the partition and waits for a majority.
    /// In as many batches as the partition's batch limit needs (in order,
    /// each acknowledged before the next is proposed).
    pub(crate) async fn write_records(&self, node: &Node, records: &[GroupRecord]) -> Result<()> {
        let max = self.partition.log().read().config().max_batch_bytes as usize;
        for batch in store::encode_all(records, max)? {
            node.raft()
                .propose(self.partition.raft_group(), batch, Ack::All)
                .await
                .map_err(|e| node.not_leader(self.partition.topic(), self.partition.id(), e))?;
        }
        Ok(())
    }
}

/// Reads every committed group record of an offsets partition (blocking).
pub(crate) fn read_groups(p: &Partition) -> Result<BTreeMap<String, StoredGroup>> {
    let mut groups = BTreeMap::new();
    let st = p.offsets();
    let mut at: Offset = st.log_start_offset;
    while at < st.high_watermark {
        let buf = p.read(at, 1 << 20)?;
        if buf.is_empty() {
            break;
        }
        let next = store::fold_batches(&mut groups, &buf)?;
        if next <= at {
            break;
        }
        at = next;
    }
    Ok(groups)
}
