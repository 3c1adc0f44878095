//! Identities in the replication layer, as distinct types: a broker's
//! [`NodeId`] and a Raft group's [`RaftGroupId`] (one per partition, plus the
//! controller's group 0). raft-rs itself speaks plain `u64`; conversion
//! happens where this crate calls it.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A broker's id in the cluster (≥ 1; raft-rs reserves 0 for "none").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

/// A Raft group's id: the controller is group 0; partition `p` of the topic
/// with numeric id `t` is group `t << 16 | p`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RaftGroupId(pub u64);

impl NodeId {
    /// The plain number raft-rs and the wire use.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl RaftGroupId {
    /// The plain number raft-rs and the wire use.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Display for RaftGroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}
