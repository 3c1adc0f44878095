//! Producer ids in the controller's metadata: blocks of ids handed to
//! brokers (each broker gives out its block without a Raft round trip per
//! producer), and the id and newest epoch of every producer with a stable
//! key, so that a restarted producer gets its id back with a higher epoch
//! and fences its earlier incarnation (Kafka's `InitProducerId`, KIP-98 and
//! KIP-360).
//!
//! Invariant: ids are never handed out twice: a block is granted only from
//! `next`, and `next` only grows. Ids start at 1 (0 means "none" in the
//! protocol, -1 in a batch header).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use strand_cluster::NodeId;

/// Ids in one block granted to a broker.
pub const BLOCK_SIZE: u32 = 1000;

/// A producer with a stable key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyedProducer {
    /// Its id.
    pub id: i64,
    /// Its newest epoch.
    pub epoch: i16,
    /// Which request gave it this epoch (so the requester can tell its
    /// answer from a concurrent one's).
    pub nonce: u64,
}

/// The controller's producer-id state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProducerIdState {
    /// The next id not yet handed out (0 before the first: read
    /// [`ProducerIdState::next_id`]).
    pub next: i64,
    /// The last block each broker was granted: first id and count.
    pub blocks: BTreeMap<NodeId, (i64, u32)>,
    /// Producers with a stable key.
    pub keyed: BTreeMap<String, KeyedProducer>,
}

/// Why a keyed producer may not get a new epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fenced {
    /// The id and epoch stored for the key.
    pub current: (i64, i16),
}

impl ProducerIdState {
    /// The first id of the next block or keyed producer.
    pub fn next_id(&self) -> i64 {
        self.next.max(1)
    }

    /// Grants `broker` the block at `first` if it is still the next one.
    pub fn apply_block(&mut self, broker: NodeId, first: i64, count: u32) -> bool {
        if first != self.next_id() || count == 0 {
            return false;
        }
        self.next = first + i64::from(count);
        self.blocks.insert(broker, (first, count));
        true
    }

    /// The id and epoch a producer with `key` gets now: its id with the
    /// next epoch (a new id once epochs run out), or a new id. `expected`,
    /// when given, is the caller's current id and epoch: it must still be
    /// the newest, or the caller is a zombie.
    ///
    /// # Errors
    /// [`Fenced`] when `expected` is not the newest incarnation.
    pub fn plan_key(&self, key: &str, expected: Option<(i64, i16)>) -> Result<(i64, i16), Fenced> {
        match self.keyed.get(key) {
            Some(p) => {
                if expected.is_some_and(|e| e != (p.id, p.epoch)) {
                    return Err(Fenced {
                        current: (p.id, p.epoch),
                    });
                }
                if p.epoch == i16::MAX {
                    Ok((self.next_id(), 0))
                } else {
                    Ok((p.id, p.epoch + 1))
                }
            }
            None => Ok((self.next_id(), 0)),
        }
    }

    /// Records the id and epoch given to `key`.
    pub fn apply_key(&mut self, key: &str, p: KeyedProducer) -> bool {
        if self.keyed.get(key) == Some(&p) {
            return false;
        }
        self.next = self.next_id().max(p.id + 1);
        self.keyed.insert(key.to_string(), p);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_never_overlap_and_a_stale_grant_changes_nothing() {
        let mut s = ProducerIdState::default();
        assert!(s.apply_block(NodeId(1), 1, BLOCK_SIZE));
        assert!(!s.apply_block(NodeId(2), 1, BLOCK_SIZE), "the same block twice");
        assert!(s.apply_block(NodeId(2), s.next_id(), BLOCK_SIZE));
        assert_eq!(s.blocks[&NodeId(1)], (1, BLOCK_SIZE));
        assert_eq!(s.blocks[&NodeId(2)], (1 + i64::from(BLOCK_SIZE), BLOCK_SIZE));
    }

    #[test]
    fn a_key_keeps_its_id_with_a_higher_epoch_and_fences_zombies() {
        let mut s = ProducerIdState::default();
        assert!(s.apply_block(NodeId(1), 1, 10));
        let (id, epoch) = s.plan_key("orders", None).unwrap();
        assert_eq!((id, epoch), (11, 0), "a new key takes the next id");
        assert!(s.apply_key("orders", KeyedProducer { id, epoch, nonce: 1 }));
        assert_eq!(s.next_id(), 12);
        assert_eq!(s.plan_key("orders", None), Ok((11, 1)));
        assert_eq!(s.plan_key("orders", Some((11, 0))), Ok((11, 1)));
        assert!(s.apply_key(
            "orders",
            KeyedProducer {
                id: 11,
                epoch: 1,
                nonce: 2
            }
        ));
        assert_eq!(
            s.plan_key("orders", Some((11, 0))),
            Err(Fenced { current: (11, 1) }),
            "the old incarnation cannot bump past the new one"
        );
        s.keyed.get_mut("orders").unwrap().epoch = i16::MAX;
        assert_eq!(s.plan_key("orders", None), Ok((12, 0)), "epochs ran out: a new id");
    }
}
