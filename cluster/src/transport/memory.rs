//! An in-process network for tests of the replication logic.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use raft::eraftpb::Message;

use super::{Inbox, Transport};
use crate::ids::{NodeId, RaftGroupId};

/// An in-process network of nodes with links that can be cut, for tests of
/// the replication logic (STYLE.md: raft-rs `harness/src/network.rs`).
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<NetworkState>>,
}

#[derive(Default)]
struct NetworkState {
    inboxes: HashMap<NodeId, Arc<dyn Inbox>>,
    cut: HashSet<(NodeId, NodeId)>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches node `id`'s inbox.
    pub fn attach(&self, id: NodeId, inbox: Arc<dyn Inbox>) {
        self.state().inboxes.insert(id, inbox);
    }

    /// Detaches node `id` (as if it crashed).
    pub fn detach(&self, id: NodeId) {
        self.state().inboxes.remove(&id);
    }

    /// Cuts both directions between node `id` and every other node.
    pub fn isolate(&self, id: NodeId) {
        let mut s = self.state();
        let others: Vec<NodeId> = s.inboxes.keys().copied().filter(|&o| o != id).collect();
        for o in others {
            s.cut.insert((id, o));
            s.cut.insert((o, id));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.state().cut.clear();
    }

    fn state(&self) -> MutexGuard<'_, NetworkState> {
        self.inner.lock()
    }
}

impl Transport for MemoryNetwork {
    fn send(&self, from: NodeId, to: NodeId, msgs: Vec<(RaftGroupId, Message)>) {
        let inbox = {
            let s = self.state();
            if s.cut.contains(&(from, to)) {
                return;
            }
            s.inboxes.get(&to).cloned()
        };
        if let Some(inbox) = inbox {
            inbox.deliver(from, msgs);
        }
    }
}
