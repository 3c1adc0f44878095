//! One partition's Raft group on this node: the `RawNode`, the proposals
//! waiting for their acknowledgement level, and the published state (high
//! watermark, leader, term).
//!
//! `handle_ready` follows raft-rs's order: send the leader's messages, apply
//! committed entries, append new entries, persist the hard state, fsync once
//! (group commit for everything in this `Ready`), only then send the messages
//! that acknowledge those entries, advance.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message};
use raft::{RawNode, StateRole};
use strand_storage::{AppendInfo, Offset, RaftIndex, RecordBatch, Stamp, Term};
use tokio::sync::{oneshot, watch};

use crate::catch_up::{CatchUps, Progress};
use crate::error::{ClusterError, Result};
use crate::ids::{NodeId, RaftGroupId};
use crate::raft_log::{RaftLog, trusted};
use crate::transport::{CatchUpOrder, PeerBatch};

/// Outgoing messages by destination node.
pub(crate) type Outbox = HashMap<NodeId, PeerBatch>;

/// When a proposal is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ack {
    /// Once stored and fsynced on the leader.
    Leader,
    /// Once committed: stored and fsynced on a majority.
    All,
}

/// A follower's progress as its leader sees it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplicaProgress {
    /// Node id.
    pub node: NodeId,
    /// Highest Raft index known to be stored on it.
    pub matched: RaftIndex,
    /// Whether it answered within the last election timeout.
    pub active: bool,
}

/// What a replica publishes to the rest of the broker: its group's
/// leadership and progress as this node sees them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Leader's node id, if known.
    pub leader: Option<NodeId>,
    /// Current term.
    pub term: Term,
    /// Whether this node is the leader.
    pub is_leader: bool,
    /// Highest committed Raft index.
    pub commit: RaftIndex,
    /// Last Raft index stored here.
    pub last_index: RaftIndex,
    /// Every voter's and learner's progress (only on the leader; empty
    /// elsewhere).
    pub replicas: Vec<ReplicaProgress>,
    /// The group's voters, as this replica's configuration says.
    pub voters: Vec<NodeId>,
    /// The group's learners (replicas being added, not yet voting).
    pub learners: Vec<NodeId>,
    /// This replica may hold less than it once acknowledged and takes no
    /// part in elections until a leader has brought it up to date.
    pub recovering: bool,
    /// This replica's storage failed (or raft-rs panicked on it): it
    /// stopped, stepped down, and is retried when the broker restarts.
    pub failed: bool,
    /// This replica lost its term (see `Replica::await_term`) and waits
    /// for a term floor from its peers ([`crate::RaftNode::raise_term`])
    /// before it takes any message.
    pub awaiting_term: bool,
    /// The group is idle and this replica stopped ticking (see `quiesce`).
    pub quiet: bool,
}

/// One step of moving a group's replicas: raft single-server membership
/// changes, proposed by the leader one at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplicaChange {
    /// Start replicating to a node that does not vote yet.
    AddLearner(NodeId),
    /// Let a caught-up learner vote.
    Promote(NodeId),
    /// Remove a voter or learner.
    Remove(NodeId),
}

/// Shared, read-mostly view of a replica hosted by the loop.
#[derive(Debug)]
pub struct ReplicaHandle {
    /// Raft group id.
    pub group: RaftGroupId,
    /// Offset after the last committed record: what consumers may read.
    pub high_watermark: watch::Sender<Offset>,
    /// The node's counter of high-watermark moves (any replica's).
    pub commits: Arc<watch::Sender<u64>>,
    /// Leadership and progress.
    pub status: watch::Sender<ReplicaStatus>,
    /// Times this replica saw the group's leader change.
    pub leader_changes: std::sync::atomic::AtomicU64,
    /// Entries this replica received by catching up from its leader's log
    /// (streamed, not through Raft's appends).
    pub caught_up_entries: std::sync::atomic::AtomicU64,
    /// The group's Raft view of the log (for retention, which must record
    /// what it removes).
    pub log: RaftLog,
}

impl ReplicaHandle {
    /// Raises the high watermark to `hw` (never lowers it) and, if it
    /// moved, the node's counter.
    pub(crate) fn publish_high_watermark(&self, hw: Offset) {
        let moved = self.high_watermark.send_if_modified(|cur| {
            let moved = hw > *cur;
            *cur = (*cur).max(hw);
            moved
        });
        if moved {
            self.commits.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// A `Ready` between its two halves: entries appended, waiting for `sync`.
pub(crate) struct StagedReady {
    rd: raft::Ready,
    appended: Option<RaftIndex>,
    /// What to fsync before the second half (`None`: nothing to sync).
    pub(crate) sync: Option<strand_storage::SyncPoint>,
    /// The term or vote changed: the state file must be written (and
    /// fsynced) before the second half.
    pub(crate) state_write: bool,
}

/// What a proposal became.
enum Proposed {
    /// A new entry at `index`.
    New {
        index: RaftIndex,
        info: AppendInfo,
        term: Term,
    },
    /// The retry of an idempotent batch stored at `index` (in `term`).
    Duplicate {
        index: RaftIndex,
        info: AppendInfo,
        term: Term,
    },
}

struct Pending {
    term: Term,
    ack: Ack,
    info: AppendInfo,
    reply: oneshot::Sender<Result<AppendInfo>>,
}

pub(crate) struct Replica {
    pub(crate) group: RaftGroupId,
    pub(crate) node: RawNode<RaftLog>,
    pub(crate) storage: RaftLog,
    /// Proposals waiting for their acknowledgement level, by Raft index.
    pending: BTreeMap<RaftIndex, Pending>,
    /// Retries of idempotent batches already in the log, waiting for the
    /// original entry's acknowledgement level (answered with its offsets).
    duplicates: BTreeMap<RaftIndex, Vec<Pending>>,
    pub(crate) handle: Arc<ReplicaHandle>,
    last_append_ms: i64,
    last_leader: NodeId,
    /// See [`Replica::start_recovering`].
    recovering: bool,
    /// See [`Replica::await_term`].
    awaiting_term: bool,
    /// When each peer was last heard from in this group (leader's view of
    /// liveness; raft-rs's own flag resets every election timeout).
    pub(crate) last_heard: HashMap<NodeId, std::time::Instant>,
    /// A peer heard from within this long counts as active.
    pub(crate) active_window: std::time::Duration,
    failed: bool,
    /// Entered while the loop works on this replica (see
    /// [`Replica::in_span`]).
    pub(crate) span: tracing::Span,
    /// Catch-ups ordered (as leader) or under way (as follower).
    catch_ups: CatchUps,
    /// Not ticking: the group is idle (see `quiesce`).
    pub(crate) quiet: bool,
    /// Heartbeat intervals since anything happened to the group.
    pub(crate) idle_heartbeats: u32,
    /// Its peers were told it failed (see `Loop::check_peers`).
    pub(crate) failure_announced: bool,
}

impl Replica {
    pub(crate) fn new(
        group: RaftGroupId,
        node: RawNode<RaftLog>,
        storage: RaftLog,
        handle: Arc<ReplicaHandle>,
    ) -> Self {
        Replica {
            group,
            node,
            storage,
            pending: BTreeMap::new(),
            duplicates: BTreeMap::new(),
            handle,
            last_append_ms: 0,
            last_leader: NodeId(0),
            recovering: false,
            awaiting_term: false,
            last_heard: HashMap::new(),
            active_window: std::time::Duration::from_secs(2),
            failed: false,
            span: tracing::Span::none(),
            catch_ups: CatchUps::default(),
            quiet: false,
            idle_heartbeats: 0,
            failure_announced: false,
        }
    }

    /// As leader: catch-up orders for followers far behind (see `catch_up`).
    pub(crate) fn plan_catch_ups(&mut self, now: std::time::Instant, min_lag: u64) -> Vec<(NodeId, CatchUpOrder)> {
        let (last_heard, window) = (&self.last_heard, self.active_window);
        let alive = |n: NodeId| last_heard.get(&n).is_some_and(|t| now.duration_since(*t) <= window);
        self.catch_ups.plan(&mut self.node, self.group, alive, now, min_lag)
    }

    /// As follower: whether to carry out a leader's order (its cancel flag).
    pub(crate) fn accept_catch_up(
        &mut self,
        from: NodeId,
        order: &CatchUpOrder,
    ) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        if self.awaiting_term {
            return None;
        }
        self.catch_ups.accept(&self.node, from, order)
    }

    /// As follower: a catch-up task's progress; the response for the leader.
    pub(crate) fn catch_up_progress(&mut self, p: &Progress) -> Option<Message> {
        self.catch_ups
            .progress(&mut self.node, &self.handle.caught_up_entries, p)
    }

    /// As follower: drops a catch-up whose leader or term changed.
    pub(crate) fn forget_stale_catch_up(&mut self) {
        self.catch_ups.forget_stale(&self.node);
    }

    /// Runs `f` inside this replica's span (moved out for the call, so no
    /// reference count moves: the loop does this for every busy replica on
    /// every iteration), containing a panic: raft-rs panics on states it
    /// takes for impossible, and a damaged disk can produce them. The replica
    /// is then failed (stepped down, inert) and the node's other groups go
    /// on. `None` when `f` panicked.
    pub(crate) fn in_span<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> Option<T> {
        let span = std::mem::replace(&mut self.span, tracing::Span::none());
        let out = {
            let _entered = span.enter();
            let out = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(self)));
            if let Err(panic) = &out {
                let what = panic
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| panic.downcast_ref::<&str>().copied())
                    .unwrap_or("unknown panic");
                tracing::error!(
                    panic = what,
                    "raft panicked on this replica: it is stopped, the others go on"
                );
                self.failed = true;
                self.fail_all_pending(None);
                // raft-rs's state is not to be trusted after a panic: the
                // status is written by hand.
                self.handle.status.send_modify(|st| {
                    st.is_leader = false;
                    st.leader = None;
                    st.failed = true;
                    st.replicas.clear();
                });
            }
            out.ok()
        };
        self.span = span;
        out
    }

    /// Whether no proposal waits for its acknowledgement.
    pub(crate) fn has_nothing_pending(&self) -> bool {
        self.pending.is_empty() && self.duplicates.is_empty()
    }

    /// Whether no catch-up is ordered or under way.
    pub(crate) fn catch_ups_idle(&self) -> bool {
        self.catch_ups.is_idle()
    }

    /// Whether the loop has anything to do for this replica.
    pub(crate) fn has_ready(&self) -> bool {
        !self.failed && self.node.has_ready()
    }

    /// Sets how recently a peer must have answered to count as active
    /// (normally twice the election timeout).
    pub(crate) fn set_active_window(&mut self, window: std::time::Duration) {
        self.active_window = window;
    }

    /// Whether `peer` answered within `window`.
    pub(crate) fn heard_within(&self, peer: NodeId, window: std::time::Duration) -> bool {
        self.last_heard.get(&peer).is_some_and(|t| t.elapsed() <= window)
    }

    /// Notes a message from `peer` (for liveness in the published status).
    pub(crate) fn heard_from(&mut self, peer: NodeId) {
        self.last_heard.insert(peer, std::time::Instant::now());
    }

    /// Republishes the status of a leader, so follower liveness and progress
    /// stay current while the group is idle (called on heartbeat ticks).
    pub(crate) fn refresh_status(&self) {
        if self.node.raft.state == StateRole::Leader {
            self.publish_status();
        }
    }

    /// Starts recovery: the replica may hold less than it once acknowledged
    /// (lost or damaged disk, a fresh copy of a moved partition, Raft state
    /// missing beside a log). Until it is whole again it neither votes, nor
    /// stands for election, nor takes a leadership transfer, so every
    /// leader is elected without it and holds every committed entry. It does
    /// store and acknowledge what its leader sends (an acknowledgement says
    /// only what it now holds, durably). It is whole once it holds, durably,
    /// an entry its leader committed in the leader's own term: every entry
    /// committed before that term precedes that one, so it has them all.
    /// The state is stored, so a restart in the middle goes on recovering.
    pub(crate) fn start_recovering(&mut self) -> Result<()> {
        self.storage.set_recovering(true)?;
        if !self.recovering {
            tracing::warn!("replica recovering: no votes until a leader has brought it up to date");
        }
        self.recovering = true;
        Ok(())
    }

    /// A recovering replica whose term and vote were lost with its state
    /// must not take a leader's messages before it knows the group's term:
    /// a leader deposed while it was gone still believes it leads, and the
    /// replica's acknowledgements would let it commit in its stale term
    /// (the lost self had moved on to newer terms; the new one would not
    /// know). So it takes no message at all until the broker found a term
    /// floor among its peers ([`Replica::apply_term_floor`]): the highest
    /// term of enough of the other replicas that one of them was in every
    /// quorum its lost self took part in.
    pub(crate) fn await_term(&mut self) -> Result<()> {
        self.storage.mark_term_unknown()?;
        if !self.awaiting_term {
            tracing::warn!("replica lost its term: waiting for a term floor from its peers before following a leader");
        }
        self.awaiting_term = true;
        Ok(())
    }

    /// Whether the replica waits for a term floor (see
    /// [`Replica::await_term`]).
    pub(crate) fn is_awaiting_term(&self) -> bool {
        self.awaiting_term
    }

    /// Takes the term floor the broker found (see [`Replica::await_term`]):
    /// the stored term becomes at least `floor`, with a vote for itself in
    /// it, durably, before any message is taken.
    pub(crate) fn apply_term_floor(&mut self, floor: Term) -> Result<()> {
        if !self.awaiting_term {
            return Ok(());
        }
        let me = NodeId(self.node.raft.id);
        let (term, vote) = self.storage.apply_term_floor(floor, me)?;
        let raft = &mut self.node.raft;
        if term.get() > raft.term {
            raft.become_follower(term.get(), raft::INVALID_ID);
            raft.vote = vote.get();
        }
        let now = raft.term;
        self.awaiting_term = false;
        tracing::info!(%floor, term = now, "term floor learned from the peers: following leaders again");
        self.publish_status();
        Ok(())
    }

    /// Ends recovery once the replica durably holds an entry its leader
    /// committed in the leader's term (see [`Replica::start_recovering`]).
    fn check_recovered(&mut self) -> Result<()> {
        if !self.recovering {
            return Ok(());
        }
        let raft = &self.node.raft;
        if raft.leader_id == 0 || raft.leader_id == raft.id || raft.term == 0 {
            return Ok(());
        }
        let held = raft.raft_log.committed.min(raft.raft_log.persisted);
        if raft.raft_log.term(held).unwrap_or(0) != raft.term {
            return Ok(());
        }
        self.storage.set_recovering(false)?;
        self.recovering = false;
        tracing::info!(
            index = held,
            term = raft.term,
            leader = raft.leader_id,
            "replica recovered: it holds its leader's committed entries; voting again"
        );
        Ok(())
    }

    /// Last Raft index in this replica's log (stored or not yet).
    pub(crate) fn last_index(&self) -> RaftIndex {
        RaftIndex(self.node.raft.raft_log.last_index())
    }

    /// Whether the replica is recovering (see [`Replica::start_recovering`]).
    pub(crate) fn is_recovering(&self) -> bool {
        self.recovering
    }

    /// Whether the replica stopped on a storage failure or a panic.
    pub(crate) fn is_failed(&self) -> bool {
        self.failed
    }

    /// Whether the replica may tick and stand for election.
    pub(crate) fn may_stand(&self) -> bool {
        !self.recovering && !self.failed
    }

    /// As follower: the leader's heartbeat named a commit past this log, so
    /// the leader counts entries here that are gone. An idle leader sends no
    /// appends (its progress says there is nothing to send), so nothing
    /// would ever be rejected: answer with the rejection of an append after
    /// this log's end, whose hint tells the leader what is really here
    /// (see [`Replica::forget_lost_progress`]).
    pub(crate) fn report_lost_entries(&mut self, leader: NodeId) {
        let raft = &mut self.node.raft;
        if raft.leader_id != leader.get() {
            return;
        }
        let last = raft.raft_log.last_index();
        let mut m = Message::default();
        m.set_msg_type(raft::eraftpb::MessageType::MsgAppendResponse);
        m.to = leader.get();
        m.from = raft.id;
        m.term = raft.term;
        m.reject = true;
        m.index = last;
        m.reject_hint = last;
        m.log_term = raft.raft_log.term(last).unwrap_or(0);
        raft.msgs.push(m);
    }

    /// As leader: a follower rejected an append with a hint below what it
    /// had acknowledged, so it lost entries (a replaced disk, a damaged log
    /// moved aside). raft-rs never lowers a progress's `matched` and would
    /// keep sending from past the follower's end, and count it as holding
    /// what it no longer has; the progress is set back to what the follower
    /// says it holds and probes from there.
    pub(crate) fn forget_lost_progress(&mut self, follower: NodeId, holds: RaftIndex) {
        if self.node.raft.state != StateRole::Leader {
            return;
        }
        let Some(pr) = self.node.raft.mut_prs().get_mut(follower.get()) else {
            return;
        };
        if holds.get() >= pr.matched {
            return;
        }
        tracing::warn!(
            %follower,
            acknowledged = pr.matched,
            %holds,
            "follower lost entries it had acknowledged; replicating them again"
        );
        pr.matched = holds.get();
        pr.become_probe();
    }

    fn leader(&self) -> Option<NodeId> {
        let l = self.node.raft.leader_id;
        (l != 0).then_some(NodeId(l))
    }

    /// Offset the next proposed batch gets: after the last data entry in
    /// Raft's unstable tail, else the stored log end (a leader's unstable
    /// entries always extend its stored log).
    fn next_offset(&self) -> Result<Offset> {
        for e in self.node.raft.raft_log.unstable.entries.iter().rev() {
            if e.get_entry_type() == EntryType::EntryNormal && !e.data.is_empty() {
                // This leader's own proposal: a stamped RecordBatch.
                return Ok(trusted(&e.data, "unstable entry")?.next_offset());
            }
        }
        Ok(self.storage.partition_log().read().latest())
    }

    /// Stamps `batch` with the offsets, term and index it will have and
    /// proposes it. The reply fires at the acknowledgement level.
    pub(crate) fn propose(
        &mut self,
        batch: &RecordBatch,
        ack: Ack,
        now_ms: i64,
        reply: oneshot::Sender<Result<AppendInfo>>,
    ) {
        let r = self.try_propose(batch, ack, now_ms);
        match r {
            Ok(Proposed::New { index, info, term }) => {
                self.pending.insert(index, Pending { term, ack, info, reply });
            }
            Ok(Proposed::Duplicate { index, info, term }) => self.await_original(index, term, ack, info, reply),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        }
    }

    /// Answers the retry of a batch stored at `index` with the original's
    /// offsets once that entry reached `ack` (at once if it has).
    fn await_original(
        &mut self,
        index: RaftIndex,
        term: Term,
        ack: Ack,
        info: AppendInfo,
        reply: oneshot::Sender<Result<AppendInfo>>,
    ) {
        let log = &self.node.raft.raft_log;
        let reached = match ack {
            Ack::All => index.get() <= log.committed,
            Ack::Leader => index.get() <= log.persisted || index.get() <= log.committed,
        };
        if index == RaftIndex::ZERO || reached {
            let _ = reply.send(Ok(info));
            return;
        }
        self.duplicates
            .entry(index)
            .or_default()
            .push(Pending { term, ack, info, reply });
    }

    /// Judges an idempotent producer's batch against the producer's state in
    /// this log, including this leader's proposals not yet stored (so that
    /// the check covers the whole log this leader would commit).
    fn check_sequence(
        &self,
        producer: strand_storage::ProducerInfo,
        record_count: u32,
        now_ms: i64,
    ) -> Result<strand_storage::SequenceCheck> {
        let log = self.storage.partition_log().read();
        let stored_last = log.last_raft_index()?.unwrap_or(RaftIndex::ZERO);
        let unstable = &self.node.raft.raft_log.unstable;
        if !unstable.entries.is_empty() && unstable.offset <= stored_last.get() {
            // Entries not yet stored replace stored ones (a follower that
            // was elected before persisting a leader's rewrite): the stored
            // state still counts the replaced ones. Only until the next
            // Ready stores them; the producer retries.
            return Err(ClusterError::ProposalDropped {
                group: self.group,
                reason: "the log is being rewritten",
            });
        }
        let later = self
            .node
            .raft
            .raft_log
            .unstable
            .entries
            .iter()
            .filter(|e| e.index > stored_last.get() && e.get_entry_type() == EntryType::EntryNormal)
            .filter_map(|e| strand_storage::BatchRef::trusted(&e.data).ok())
            .filter_map(|b| {
                Some(strand_storage::ProducerAppend {
                    producer: b.producer()?,
                    record_count: b.record_count(),
                    base_offset: b.base_offset(),
                    raft_index: b.raft_index(),
                    append_ms: b.append_time_ms(),
                })
            });
        let states = log.producers();
        let entry = states.entry_with(producer.producer_id, later);
        Ok(states
            .check(entry.as_ref(), producer, record_count, now_ms)
            .map_err(strand_storage::StorageError::from)?)
    }

    fn try_propose(&mut self, batch: &RecordBatch, _ack: Ack, now_ms: i64) -> Result<Proposed> {
        if self.failed {
            return Err(ClusterError::ProposalDropped {
                group: self.group,
                reason: "the replica's storage failed",
            });
        }
        if self.node.raft.state != StateRole::Leader {
            return Err(ClusterError::NotLeader {
                group: self.group,
                leader: self.leader(),
            });
        }
        // A batch the log would refuse must never reach Raft: stored nowhere,
        // it would stop every replica that tried to append it.
        let max = self.storage.partition_log().read().config().max_batch_bytes;
        if batch.len() > max as usize {
            return Err(ClusterError::Storage(strand_storage::StorageError::RecordTooLarge {
                size: batch.len(),
                max,
            }));
        }
        let idx = self.last_index().next();
        let term = Term(self.node.raft.term);
        let base = self.next_offset()?;
        // Append times never go back, also across leaders whose clocks
        // differ: retention and producer expiry count by them.
        let stored_ms = self.storage.partition_log().read().last_append_ms();
        self.last_append_ms = self.last_append_ms.max(now_ms).max(stored_ms);
        if let Some(producer) = batch.view().producer() {
            let count = batch.view().record_count();
            if let strand_storage::SequenceCheck::Duplicate(original) =
                self.check_sequence(producer, count, self.last_append_ms)?
            {
                let index = original.raft_index;
                let term = Term(self.node.raft.raft_log.term(index.get()).unwrap_or(0));
                let info = AppendInfo {
                    base_offset: original.base_offset,
                    last_offset: original.last_offset,
                    append_time_ms: original.append_ms,
                };
                return Ok(Proposed::Duplicate { index, info, term });
            }
        }
        let stamp = Stamp {
            term,
            raft_index: idx,
            append_time_ms: self.last_append_ms,
        };
        let stamped = batch.stamp(base, &stamp);
        let count = stamped.view().record_count();
        // raft-rs takes a Vec; `Bytes` into `Vec` reuses the buffer when the
        // stamp holds the only reference, as it does here.
        match self.node.propose(Vec::new(), stamped.into_bytes().into()) {
            Ok(()) => {}
            // raft-rs drops proposals during a leadership transfer: the
            // client retries against the new leader.
            Err(raft::Error::ProposalDropped) => {
                return Err(ClusterError::ProposalDropped {
                    group: self.group,
                    reason: "leadership is being transferred",
                });
            }
            Err(e) => return Err(e.into()),
        }
        if self.last_index() != idx {
            return Err(ClusterError::ProposalDropped {
                group: self.group,
                reason: "raft did not append the proposal",
            });
        }
        let info = AppendInfo {
            base_offset: base,
            last_offset: Offset(base.plus(u64::from(count)).get().saturating_sub(1)),
            append_time_ms: self.last_append_ms,
        };
        Ok(Proposed::New { index: idx, info, term })
    }

    fn fail_all_pending(&mut self, leader: Option<NodeId>) {
        let duplicates = std::mem::take(&mut self.duplicates).into_values().flatten();
        for p in std::mem::take(&mut self.pending).into_values().chain(duplicates) {
            let _ = p.reply.send(Err(ClusterError::NotLeader {
                group: self.group,
                leader,
            }));
        }
    }

    pub(crate) fn publish_status(&self) {
        let is_leader = self.node.raft.state == StateRole::Leader;
        let mut replicas: Vec<ReplicaProgress> = if is_leader {
            self.node
                .raft
                .prs()
                .iter()
                .map(|(&node, p)| ReplicaProgress {
                    node: NodeId(node),
                    matched: RaftIndex(p.matched),
                    active: node == self.node.raft.id
                        || self
                            .last_heard
                            .get(&NodeId(node))
                            .is_some_and(|t| t.elapsed() <= self.active_window),
                })
                .collect()
        } else {
            Vec::new()
        };
        replicas.sort_by_key(|r| r.node);
        let conf = self.node.raft.prs().conf();
        let mut voters: Vec<NodeId> = conf.voters().ids().iter().map(NodeId).collect();
        voters.sort_unstable();
        let mut learners: Vec<NodeId> = conf.learners().iter().copied().map(NodeId).collect();
        learners.sort_unstable();
        let status = ReplicaStatus {
            leader: self.leader(),
            term: Term(self.node.raft.term),
            is_leader,
            commit: RaftIndex(self.node.raft.raft_log.committed),
            last_index: self.last_index(),
            replicas,
            voters,
            learners,
            recovering: self.recovering,
            failed: self.failed,
            awaiting_term: self.awaiting_term,
            quiet: self.quiet,
        };
        self.handle.status.send_if_modified(|s| {
            let changed = *s != status;
            *s = status;
            changed
        });
    }

    /// Proposes one membership change (leader only; raft-rs refuses a second
    /// one while the first is not applied).
    pub(crate) fn propose_replica_change(&mut self, change: ReplicaChange) -> Result<()> {
        use raft::eraftpb::ConfChangeType;
        if self.node.raft.state != StateRole::Leader {
            return Err(ClusterError::NotLeader {
                group: self.group,
                leader: self.leader(),
            });
        }
        let (kind, node) = match change {
            ReplicaChange::AddLearner(n) => (ConfChangeType::AddLearnerNode, n),
            ReplicaChange::Promote(n) => (ConfChangeType::AddNode, n),
            ReplicaChange::Remove(n) => (ConfChangeType::RemoveNode, n),
        };
        let mut cc = ConfChange::default();
        cc.set_change_type(kind);
        cc.node_id = node.get();
        self.node.propose_conf_change(vec![], cc)?;
        tracing::info!(?change, "proposed a replica change");
        Ok(())
    }

    /// Applies committed entries: moves the high watermark, answers `acks=all`
    /// proposals, applies configuration changes.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        let mut hw = None;
        let mut answers = Vec::new();
        let mut conf_changed = false;
        for e in entries {
            match e.get_entry_type() {
                EntryType::EntryNormal if !e.data.is_empty() => {
                    hw = Some(trusted(&e.data, "committed entry")?.next_offset());
                }
                EntryType::EntryNormal => {}
                EntryType::EntryConfChange => {
                    use protobuf::Message as _;
                    let cc = ConfChange::parse_from_bytes(&e.data).map_err(|err| ClusterError::Malformed {
                        what: "conf change",
                        reason: err.to_string(),
                    })?;
                    let cs = self.node.apply_conf_change(&cc)?;
                    self.storage.set_conf_state(&cs)?;
                    conf_changed = true;
                }
                EntryType::EntryConfChangeV2 => {
                    use protobuf::Message as _;
                    let cc = ConfChangeV2::parse_from_bytes(&e.data).map_err(|err| ClusterError::Malformed {
                        what: "conf change",
                        reason: err.to_string(),
                    })?;
                    let cs = self.node.apply_conf_change(&cc)?;
                    self.storage.set_conf_state(&cs)?;
                    conf_changed = true;
                }
            }
            let index = RaftIndex(e.index);
            let waiting = self.pending.remove(&index).into_iter();
            let waiting = waiting.chain(self.duplicates.remove(&index).into_iter().flatten());
            for p in waiting {
                let result = if p.term == Term(e.term) {
                    Ok(p.info)
                } else {
                    Err(ClusterError::ProposalDropped {
                        group: self.group,
                        reason: "another leader's entry took its place",
                    })
                };
                answers.push((p.reply, result));
            }
        }
        // Publish the high watermark before answering, so a producer that
        // reads right after its acknowledgement sees its own records.
        if let Some(hw) = hw {
            self.handle.publish_high_watermark(hw);
        }
        for (reply, result) in answers {
            let _ = reply.send(result);
        }
        if conf_changed {
            self.publish_status();
        }
        Ok(())
    }

    /// Answers `acks=leader` proposals whose entries are now fsynced here.
    fn resolve_persisted(&mut self, up_to: RaftIndex) {
        let ready: Vec<RaftIndex> = self
            .pending
            .range(..=up_to)
            .filter(|(_, p)| p.ack == Ack::Leader)
            .map(|(&i, _)| i)
            .collect();
        for i in ready {
            if let Some(p) = self.pending.remove(&i) {
                let _ = p.reply.send(Ok(p.info));
            }
        }
        let ready: Vec<RaftIndex> = self.duplicates.range(..=up_to).map(|(&i, _)| i).collect();
        for i in ready {
            let Some(waiting) = self.duplicates.remove(&i) else {
                continue;
            };
            let (now, later): (Vec<Pending>, Vec<Pending>) = waiting.into_iter().partition(|p| p.ack == Ack::Leader);
            for p in now {
                let _ = p.reply.send(Ok(p.info));
            }
            if !later.is_empty() {
                self.duplicates.insert(i, later);
            }
        }
    }

    /// Processes one `Ready`; outgoing messages are added to `out` by
    /// destination node.
    /// First half of handling a `Ready`: send the leader's appends, install a
    /// snapshot, apply committed entries, append new entries and record the
    /// hard state. Returns what must be fsynced before the rest may happen
    /// (`None` when there is no `Ready` or the replica failed).
    pub(crate) fn stage_ready(&mut self, out: &mut Outbox) -> Option<StagedReady> {
        if self.failed || !self.node.has_ready() {
            return None;
        }
        match self.try_stage(out) {
            Ok(staged) => Some(staged),
            Err(e) => {
                self.fail(e);
                None
            }
        }
    }

    /// Second half, once the staged sync (if any) ended with `synced`: answer
    /// `acks=leader`, send the messages that acknowledge the entries, advance,
    /// apply what committed, publish.
    pub(crate) fn finish_ready(&mut self, staged: StagedReady, synced: Option<Result<()>>, out: &mut Outbox) {
        if let Err(e) = self.try_finish(staged, synced, out) {
            self.fail(e);
        }
    }

    pub(crate) fn fail(&mut self, e: ClusterError) {
        // Storage failed under Raft: stop this replica rather than
        // acknowledge anything that may not be on disk, and step down so
        // that clients and the group's other replicas stop counting on it
        // (a failed replica neither ticks nor answers: another is elected).
        tracing::error!(error = %e, "replica stopped: storage failure");
        self.failed = true;
        if self.node.raft.state == StateRole::Leader {
            let term = self.node.raft.term;
            self.node.raft.become_follower(term, raft::INVALID_ID);
        }
        self.fail_all_pending(None);
        self.publish_status();
    }

    fn push(group: RaftGroupId, out: &mut Outbox, msgs: Vec<Message>) {
        for m in msgs {
            out.entry(NodeId(m.to)).or_default().messages.push((group, m));
        }
    }

    /// raft-rs keeps its unstable part starting right after the stored log
    /// (when it holds no unstable entry, everything is in storage). A
    /// catch-up stores entries behind its back; if raft-rs's offset ever
    /// lags the stored log with nothing unstable, it would read committed
    /// entries from an empty unstable part and panic (seen once in the long
    /// fault profile: `unstable.slice[436, 454] out of bound[436, 436]`),
    /// or append a leader's next entries after that empty part and panic
    /// the same way (`unstable.slice[521, 563] out of bound[521, 521]`, in
    /// `truncate_and_append`, the message stepped before the next Ready).
    /// So it runs before every Ready and before every message is stepped.
    /// Realigning is what raft-rs itself would have: the stored entries are
    /// its log, and `persisted` never reaches past what is stored.
    pub(crate) fn realign_unstable(&mut self) {
        let log = &mut self.node.raft.raft_log;
        if !log.unstable.entries.is_empty() || log.unstable.snapshot.is_some() {
            return;
        }
        let Ok(stored) = raft::Storage::last_index(&log.store) else {
            return;
        };
        if log.unstable.offset <= stored {
            log.unstable.offset = stored + 1;
        }
        if log.persisted > stored {
            log.persisted = stored;
        }
    }

    fn try_stage(&mut self, out: &mut Outbox) -> Result<StagedReady> {
        let group = self.group;
        self.realign_unstable();
        let mut rd = self.node.ready();
        if let Some(ss) = rd.ss() {
            let leader = (ss.leader_id != 0).then_some(NodeId(ss.leader_id));
            tracing::info!(group = group.get(), leader = ?leader, role = ?ss.raft_state, term = self.node.raft.term, "raft role change");
            if ss.leader_id != 0 && NodeId(ss.leader_id) != self.last_leader {
                self.last_leader = NodeId(ss.leader_id);
                self.handle
                    .leader_changes
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if ss.raft_state != StateRole::Leader {
                self.fail_all_pending(leader);
            }
        }
        Self::push(group, out, rd.take_messages());
        if !rd.snapshot().is_empty() {
            self.storage.apply_snapshot(rd.snapshot())?;
            let offset = self
                .storage
                .next_offset_after(RaftIndex(rd.snapshot().get_metadata().index))?;
            self.handle.publish_high_watermark(offset);
        }
        self.apply(rd.take_committed_entries())?;
        let appended = rd.entries().last().map(|e| RaftIndex(e.index));
        if appended.is_some() {
            self.storage.append(rd.entries())?;
        }
        let state_write = rd.hs().is_some_and(|hs| self.storage.stage_hard_state(hs));
        let sync = (appended.is_some() || rd.must_sync()).then(|| self.storage.sync_point());
        Ok(StagedReady {
            rd,
            appended,
            sync,
            state_write,
        })
    }

    fn try_finish(&mut self, staged: StagedReady, synced: Option<Result<()>>, out: &mut Outbox) -> Result<()> {
        let group = self.group;
        let StagedReady {
            mut rd,
            appended,
            sync,
            state_write,
        } = staged;
        match (&sync, synced) {
            (_, Some(Err(e))) => {
                self.storage.mark_failed(&e);
                return Err(e);
            }
            (Some(point), Some(Ok(()))) => self.storage.mark_synced(point),
            (None, Some(Ok(()))) => {}
            (_, None) if sync.is_some() || state_write => {
                return Err(ClusterError::Malformed {
                    what: "ready",
                    reason: "a staged sync was never run".into(),
                });
            }
            (_, None) => {}
        }
        if let Some(last) = appended {
            self.resolve_persisted(last);
        }
        Self::push(group, out, rd.take_persisted_messages());
        let mut light = self.node.advance(rd);
        if let Some(c) = light.commit_index() {
            self.storage.set_commit(RaftIndex(c));
        }
        Self::push(group, out, light.take_messages());
        self.apply(light.take_committed_entries())?;
        self.node.advance_apply();
        self.check_recovered()?;
        self.publish_status();
        Ok(())
    }

    /// Persists the commit index (shutdown).
    pub(crate) fn close(&mut self) {
        self.release_pending();
        if let Err(e) = self.storage.persist_state() {
            tracing::warn!(error = %e, "could not persist raft state at shutdown");
        }
    }

    /// Answers every waiting proposal (the replica is going away).
    pub(crate) fn release_pending(&mut self) {
        self.fail_all_pending(self.leader());
    }
}
