//! Catch-up of a follower far behind, at disk speed.
//!
//! Raft's own path moves a lagging follower forward one append message at a
//! time, each answered before the window moves on; for a follower hundreds of
//! megabytes behind that is slow, and it competes with live traffic. So, as
//! Kafka's replica fetcher and Redpanda's recovery stream do, a follower far
//! behind pulls whole stored batches from its leader instead:
//!
//! 1. The leader, on a tick, sees a follower in Raft's replicate state whose
//!    matched index is more than [`MIN_LAG_ENTRIES`] behind its commit. It
//!    pauses Raft's appends to it (raft-rs's snapshot state, pending at the
//!    commit index) and sends it an order: fetch `matched+1 ..= commit`.
//! 2. The follower, if it is still that leader's follower in that term and
//!    its log ends where the order starts (or holds a prefix of the range with
//!    the same terms), starts a task that streams the range (`Peer/FetchLog`,
//!    chunks read straight from the leader's segment maps), checks each
//!    batch's CRC and Raft coordinates, appends it, and fsyncs every
//!    [`SYNC_EVERY_BYTES`].
//! 3. After each fsync the follower tells its leader how far it durably is,
//!    with the append response Raft itself would send; when that reaches the
//!    order's end, raft-rs leaves the snapshot state and normal replication
//!    resumes from there. Only committed entries are fetched, so nothing
//!    fetched can conflict with what any later leader has.
//!
//! A catch-up that makes no progress for [`STALL`] is abandoned by the
//! leader (raft-rs's snapshot failure: back to probing); a follower abandons
//! its task when its term or leader changes. Either way Raft's normal path
//! takes over, so a failed catch-up costs time, never safety.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use parking_lot::RwLock;
use raft::eraftpb::{Message, MessageType};
use raft::{ProgressState, RawNode};
use strand_storage::{PartitionLog, RaftIndex, Term};

use crate::error::{ClusterError, Result};
use crate::ids::{NodeId, RaftGroupId};
use crate::raft_log::RaftLog;
use crate::transport::{CatchUpOrder, FetchRange, Transport};

/// A follower this many committed entries behind catches up by streaming.
pub const MIN_LAG_ENTRIES: u64 = 4_096;
/// Bytes per streamed chunk.
pub const CHUNK_BYTES: usize = 4 << 20;
/// The follower fsyncs (and reports its progress) at least this often.
pub const SYNC_EVERY_BYTES: u64 = 64 << 20;
/// A catch-up whose follower reports no progress for this long is
/// abandoned by the leader.
pub const STALL: Duration = Duration::from_secs(10);
/// An order its follower has not started on within this long is abandoned
/// (it was lost, or the follower restarted or died); if the follower is
/// still far behind once Raft has found where its log ends again, a new
/// order with a fresh range follows.
const START: Duration = Duration::from_secs(2);

/// A replica's catch-ups: those it ordered as leader, the one it runs as
/// follower.
#[derive(Debug, Default)]
pub(crate) struct CatchUps {
    leading: HashMap<NodeId, Leading>,
    following: Option<Following>,
}

/// The leader's record of a follower it ordered to catch up.
#[derive(Debug)]
struct Leading {
    order: CatchUpOrder,
    matched: RaftIndex,
    progress_at: Instant,
    started: bool,
}

/// The follower's side of a catch-up under way.
#[derive(Debug)]
struct Following {
    leader: NodeId,
    term: Term,
    last: RaftIndex,
    cancel: Arc<AtomicBool>,
}

impl Drop for Following {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Release);
    }
}

/// What a catch-up task reports to the replication loop.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Progress {
    pub(crate) group: RaftGroupId,
    pub(crate) term: Term,
    /// Everything up to here is stored and fsynced.
    pub(crate) durable: RaftIndex,
    /// The task ended (done, or failed: see `failed`).
    pub(crate) finished: bool,
    pub(crate) failed: bool,
}

impl CatchUps {
    /// On the leader (each tick): abandons stalled catch-ups and orders new
    /// ones for followers far behind that are `alive`. Cheap when nobody
    /// lags: one pass over the group's progress entries.
    pub(crate) fn plan(
        &mut self,
        node: &mut RawNode<RaftLog>,
        group: RaftGroupId,
        alive: impl Fn(NodeId) -> bool,
        now: Instant,
        min_lag: u64,
    ) -> Vec<(NodeId, CatchUpOrder)> {
        if node.raft.state != raft::StateRole::Leader {
            self.leading.clear();
            return Vec::new();
        }
        let me = node.raft.id;
        let term = Term(node.raft.term);
        let commit = RaftIndex(node.raft.raft_log.committed);
        let first = RaftIndex(raft::Storage::first_index(&node.raft.raft_log.store).unwrap_or(u64::MAX));
        let mut orders = Vec::new();
        let mut abandoned = Vec::new();
        let leading = &mut self.leading;
        for (&id, pr) in node.raft.mut_prs().iter_mut() {
            if id == me {
                continue;
            }
            let peer = NodeId(id);
            if let Some(c) = leading.get_mut(&peer) {
                if pr.state == ProgressState::Snapshot && pr.pending_snapshot == c.order.last.get() {
                    let idle = now.duration_since(c.progress_at);
                    if RaftIndex(pr.matched) > c.matched {
                        c.matched = RaftIndex(pr.matched);
                        c.progress_at = now;
                        c.started = true;
                    } else if idle > STALL || (!c.started && idle > START) {
                        abandoned.push(peer);
                    }
                    continue;
                }
                // raft-rs moved on (caught up, or the follower rejected).
                leading.remove(&peer);
            }
            let matched = RaftIndex(pr.matched);
            let behind = commit.since(matched);
            if pr.state != ProgressState::Replicate || !alive(peer) || behind <= min_lag || matched.next() < first {
                continue;
            }
            pr.become_snapshot(commit.get());
            let order = CatchUpOrder {
                group,
                term,
                from: matched.next(),
                last: commit,
            };
            leading.insert(
                peer,
                Leading {
                    order,
                    matched,
                    progress_at: now,
                    started: false,
                },
            );
            tracing::info!(follower = %peer, from = %order.from, last = %order.last, behind, "follower far behind: ordering a catch-up");
            orders.push((peer, order));
        }
        for peer in abandoned {
            tracing::warn!(follower = %peer, "catch-up made no progress: back to Raft's replication");
            self.leading.remove(&peer);
            node.report_snapshot(peer.get(), raft::SnapshotStatus::Failure);
        }
        orders
    }

    /// On a follower: whether to carry out `order` from `from`; returns the
    /// catch-up's cancel flag (the caller starts its task). A recovering
    /// replica takes orders like any other: streaming is how it gets whole.
    pub(crate) fn accept(
        &mut self,
        node: &RawNode<RaftLog>,
        from: NodeId,
        order: &CatchUpOrder,
    ) -> Option<Arc<AtomicBool>> {
        let raft = &node.raft;
        let same_leader =
            raft.state == raft::StateRole::Follower && raft.term == order.term.get() && raft.leader_id == from.get();
        if !same_leader {
            tracing::debug!(leader = %from, ?order, "catch-up order not for this replica's state; ignored");
            return None;
        }
        if self
            .following
            .as_ref()
            .is_some_and(|f| f.term == order.term && f.last >= order.last)
        {
            return None;
        }
        let last = RaftIndex(raft.raft_log.last_index());
        if last.next() < order.from {
            tracing::debug!(%last, ?order, "catch-up order starts past this replica's log; ignored");
            return None;
        }
        let cancel = Arc::new(AtomicBool::new(false));
        self.following = Some(Following {
            leader: from,
            term: order.term,
            last: order.last,
            cancel: Arc::clone(&cancel),
        });
        tracing::info!(leader = %from, from = %order.from, last = %order.last, "catching up from the leader's log");
        Some(cancel)
    }

    /// On a follower: a task reported progress. Returns the append response
    /// that tells the leader how far this replica durably is; counts the
    /// entries received this way in `caught_up_entries`.
    pub(crate) fn progress(
        &mut self,
        node: &mut RawNode<RaftLog>,
        caught_up_entries: &AtomicU64,
        p: &Progress,
    ) -> Option<Message> {
        let f = self.following.as_ref()?;
        if f.term != p.term {
            return None;
        }
        let raft = &node.raft;
        let current = raft.term == p.term.get() && raft.leader_id == f.leader.get();
        let leader = f.leader;
        if p.finished {
            if p.failed {
                tracing::warn!(durable = %p.durable, "catch-up failed; Raft's replication takes over");
            } else {
                tracing::info!(durable = %p.durable, "caught up from the leader's log");
            }
            self.following = None;
        }
        if !current || p.durable == RaftIndex::ZERO {
            return None;
        }
        let before = RaftIndex(node.raft.raft_log.persisted);
        caught_up_entries.fetch_add(p.durable.since(before), Ordering::Relaxed);
        // Tell raft-rs what was stored behind its back: its unstable part
        // must start right after the stored log (else it would slice past
        // it when the leader's appends resume), and what is durable is
        // persisted.
        let stored = raft::Storage::last_index(&node.raft.raft_log.store).unwrap_or(0);
        let log = &mut node.raft.raft_log;
        if log.unstable.entries.is_empty() && log.unstable.snapshot.is_none() && log.unstable.offset <= stored {
            log.unstable.offset = stored + 1;
        }
        if p.durable.get() > log.persisted && p.durable.get() < log.unstable.offset {
            log.persisted = p.durable.get();
        }
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppendResponse);
        m.from = node.raft.id;
        m.to = leader.get();
        m.term = p.term.get();
        m.index = p.durable.get();
        m.commit = node.raft.raft_log.committed;
        Some(m)
    }
}

/// Fetches `order`'s range from `leader` into `log`, reporting durable
/// progress through `report`, until done, failed, or `cancel`.
pub(crate) async fn run(
    me: NodeId,
    leader: NodeId,
    order: CatchUpOrder,
    transport: Arc<dyn Transport>,
    log: Arc<RwLock<PartitionLog>>,
    cancel: Arc<AtomicBool>,
    report: impl Fn(Progress) + Send + 'static,
) {
    let progress = |durable: RaftIndex, finished: bool, failed: bool| Progress {
        group: order.group,
        term: order.term,
        durable,
        finished,
        failed,
    };
    let started = Instant::now();
    let mut fetched_bytes = 0u64;
    let result = fetch_into(me, leader, order, transport, &log, &cancel, &report, &mut fetched_bytes).await;
    let seconds = started.elapsed().as_secs_f64().max(1e-3);
    match result {
        Ok(durable) => {
            tracing::info!(
                group = %order.group,
                %durable,
                mib = fetched_bytes as f64 / f64::from(1 << 20),
                mib_per_s = fetched_bytes as f64 / f64::from(1 << 20) / seconds,
                "catch-up stream done"
            );
            report(progress(durable, true, false));
        }
        Err((durable, e)) => {
            tracing::warn!(group = %order.group, %durable, error = %e, "catch-up stream stopped");
            report(progress(durable, true, true));
        }
    }
}

/// The fetch loop; on failure returns how far it durably got.
#[allow(clippy::too_many_arguments)]
async fn fetch_into(
    me: NodeId,
    leader: NodeId,
    order: CatchUpOrder,
    transport: Arc<dyn Transport>,
    log: &Arc<RwLock<PartitionLog>>,
    cancel: &AtomicBool,
    report: &impl Fn(Progress),
    fetched_bytes: &mut u64,
) -> std::result::Result<RaftIndex, (RaftIndex, ClusterError)> {
    let mut next = order.from;
    let mut durable = RaftIndex::ZERO;
    let mut unsynced = 0u64;
    let range = FetchRange {
        group: order.group,
        from: order.from,
        last: order.last,
        max_chunk_bytes: CHUNK_BYTES,
    };
    let mut chunks = transport.fetch_log(me, leader, range);
    while next <= order.last {
        let chunk = match chunks.next().await {
            Some(Ok(c)) => c,
            Some(Err(e)) => return Err((durable, e)),
            None => {
                return Err((
                    durable,
                    ClusterError::Malformed {
                        what: "catch-up stream",
                        reason: format!("ended at entry {next} before {}", order.last),
                    },
                ));
            }
        };
        if cancel.load(Ordering::Acquire) {
            return Err((
                durable,
                ClusterError::Malformed {
                    what: "catch-up",
                    reason: "cancelled: the leader or term changed".into(),
                },
            ));
        }
        *fetched_bytes += chunk.len() as u64;
        unsynced += chunk.len() as u64;
        let appended = {
            let mut l = log.write();
            append_fetched(&mut l, &chunk, next)
        };
        next = appended.map_err(|e| (durable, e))?;
        if unsynced >= SYNC_EVERY_BYTES || next > order.last {
            durable = sync(log, next).await.map_err(|e| (durable, e))?;
            unsynced = 0;
            if next <= order.last {
                report(Progress {
                    group: order.group,
                    term: order.term,
                    durable,
                    finished: false,
                    failed: false,
                });
            }
        }
    }
    Ok(durable)
}

/// Fsyncs the log off the async workers; everything before `next` is then
/// durable.
async fn sync(log: &Arc<RwLock<PartitionLog>>, next: RaftIndex) -> Result<RaftIndex> {
    let point = log.read().sync_point();
    let synced = {
        let point = point.clone();
        tokio::task::spawn_blocking(move || point.sync())
            .await
            .map_err(|e| ClusterError::Malformed {
                what: "catch-up sync",
                reason: e.to_string(),
            })?
    };
    match synced {
        Ok(()) => {
            log.write().mark_synced(&point);
            Ok(RaftIndex(next.get().saturating_sub(1)))
        }
        Err(e) => {
            log.write().mark_failed(&e);
            Err(e.into())
        }
    }
}

/// Appends the batches of `chunk`, which must start at entry `next`, to
/// `log`; returns the entry after the last. An entry the log already holds
/// must carry the same term (it then is the same entry, by Raft's log
/// matching) and is skipped; a different term is a conflict this path does
/// not resolve (Raft's own appends do), so it stops there.
pub(crate) fn append_fetched(log: &mut PartitionLog, chunk: &[u8], mut next: RaftIndex) -> Result<RaftIndex> {
    for b in strand_storage::batches(chunk) {
        let b = b.map_err(|e| ClusterError::Malformed {
            what: "fetched batch",
            reason: e.to_string(),
        })?;
        if b.raft_index() != next {
            return Err(ClusterError::Malformed {
                what: "fetched batch",
                reason: format!("entry {} where {next} was expected", b.raft_index()),
            });
        }
        match log.last_raft_index()? {
            Some(last) if next <= last => {
                let stored = log.raft_term(next)?;
                if stored != Some(b.term()) {
                    return Err(ClusterError::Malformed {
                        what: "fetched batch",
                        reason: format!(
                            "entry {next} has term {} here but {} on the leader",
                            stored.map_or(0, Term::get),
                            b.term()
                        ),
                    });
                }
            }
            _ => {
                log.append_replicated(b)?;
            }
        }
        next = next.next();
    }
    Ok(next)
}

impl CatchUps {
    /// Whether no catch-up is ordered or under way.
    pub(crate) fn is_idle(&self) -> bool {
        self.leading.is_empty() && self.following.is_none()
    }

    /// On a follower (each heartbeat tick): drops a catch-up whose leader or
    /// term is no longer current, which cancels its task.
    pub(crate) fn forget_stale(&mut self, node: &RawNode<RaftLog>) {
        let raft = &node.raft;
        let stale = self.following.as_ref().is_some_and(|f| {
            raft.state != raft::StateRole::Follower || raft.term != f.term.get() || raft.leader_id != f.leader.get()
        });
        if stale {
            tracing::info!("leader or term changed: catch-up abandoned");
            self.following = None;
        }
    }
}
