//! An in-process network for tests of the replication logic.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use raft::eraftpb::Message;

use super::{Inbox, Transport};

/// An in-process network of nodes with links that can be cut, for tests of
/// the replication logic (STYLE.md: raft-rs `harness/src/network.rs`).
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<NetworkState>>,
}

#[derive(Default)]
struct NetworkState {
    inboxes: HashMap<u64, Arc<dyn Inbox>>,
    cut: HashSet<(u64, u64)>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches node `id`'s inbox.
    pub fn attach(&self, id: u64, inbox: Arc<dyn Inbox>) {
        self.state().inboxes.insert(id, inbox);
    }

    /// Detaches node `id` (as if it crashed).
    pub fn detach(&self, id: u64) {
        self.state().inboxes.remove(&id);
    }

    /// Cuts both directions between node `id` and every other node.
    pub fn isolate(&self, id: u64) {
        let mut s = self.state();
        let others: Vec<u64> = s.inboxes.keys().copied().filter(|&o| o != id).collect();
        for o in others {
            s.cut.insert((id, o));
            s.cut.insert((o, id));
        }
    }

    /// Restores every link.
    pub fn heal(&self) {
        self.state().cut.clear();
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NetworkState> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Transport for MemoryNetwork {
    fn send(&self, from: u64, to: u64, msgs: Vec<(u64, Message)>) {
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
