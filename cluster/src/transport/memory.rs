//! An in-process network for tests of the replication logic.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};

use super::{FetchRange, Inbox, LogChunks, LogSource, PeerBatch, Transport};
use crate::error::ClusterError;
use crate::ids::NodeId;

/// An in-process network of nodes with links that can be cut, for tests of
/// the replication logic (STYLE.md: raft-rs `harness/src/network.rs`).
#[derive(Clone, Default)]
pub struct MemoryNetwork {
    inner: Arc<Mutex<NetworkState>>,
}

#[derive(Default)]
struct NetworkState {
    inboxes: HashMap<NodeId, Arc<dyn Inbox>>,
    sources: HashMap<NodeId, Arc<dyn LogSource>>,
    cut: HashSet<(NodeId, NodeId)>,
}

impl MemoryNetwork {
    /// An empty network.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches node `id`: where its messages go and what serves its log.
    pub fn attach(&self, id: NodeId, inbox: Arc<dyn Inbox>, source: Arc<dyn LogSource>) {
        let mut s = self.state();
        s.inboxes.insert(id, inbox);
        s.sources.insert(id, source);
    }

    /// Detaches node `id` (as if it crashed).
    pub fn detach(&self, id: NodeId) {
        let mut s = self.state();
        s.inboxes.remove(&id);
        s.sources.remove(&id);
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

    /// Whether messages from `a` reach `b` (both attached, the link not cut).
    pub fn linked(&self, a: NodeId, b: NodeId) -> bool {
        let s = self.state();
        s.inboxes.contains_key(&a) && s.inboxes.contains_key(&b) && !s.cut.contains(&(a, b))
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
    fn send(&self, from: NodeId, to: NodeId, batch: PeerBatch) {
        let inbox = {
            let s = self.state();
            if s.cut.contains(&(from, to)) {
                return;
            }
            s.inboxes.get(&to).cloned()
        };
        if let Some(inbox) = inbox {
            inbox.deliver(from, batch);
        }
    }

    fn fetch_log(&self, from: NodeId, leader: NodeId, range: FetchRange) -> LogChunks {
        let net = self.clone();
        let stream = futures::stream::unfold(Some(range.from), move |next| {
            let net = net.clone();
            async move {
                let at = next?;
                if at > range.last {
                    return None;
                }
                let source = {
                    let s = net.state();
                    if s.cut.contains(&(from, leader)) || s.cut.contains(&(leader, from)) {
                        None
                    } else {
                        s.sources.get(&leader).cloned()
                    }
                };
                let Some(source) = source else {
                    let e = ClusterError::Malformed {
                        what: "fetch",
                        reason: format!("node {leader} cannot be reached"),
                    };
                    return Some((Err(e), None));
                };
                match source.read_committed(range.group, at, range.last, range.max_chunk_bytes) {
                    Ok(chunk) => {
                        let after = strand_storage::batches(&chunk)
                            .filter_map(|b| b.ok())
                            .last()
                            .map(|b| b.raft_index().next());
                        after.map(|after| (Ok(chunk), Some(after)))
                    }
                    Err(e) => Some((Err(e), None)),
                }
            }
        });
        Box::pin(stream)
    }
}
