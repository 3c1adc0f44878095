//! The replication loop of one node: a single thread drives every Raft group
//! hosted here — one tick timer for all groups (1,000 partitions are not
//! 1,000 timers), `Ready` processing with blocking fsyncs off the async
//! runtime, and one batch of outgoing messages per peer per iteration. It
//! also orders and runs catch-ups of followers far behind (`catch_up`),
//! whose streaming tasks run on the async runtime and report back here.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};
use raft::eraftpb::Message;
use raft::{Config, RawNode};
use strand_storage::{AppendInfo, PartitionLog, RaftIndex, RecordBatch, Term};
use tokio::sync::{oneshot, watch};

use crate::catch_up;
use crate::early::EarlyMessages;
use crate::error::{ClusterError, Result};
use crate::ids::{NodeId, RaftGroupId};
use crate::quiesce::PeerClocks;
use crate::raft_log::{RaftLog, validate_received};
use crate::replica::{Ack, Outbox, Replica, ReplicaChange, ReplicaHandle, ReplicaStatus, StagedReady};
use crate::transport::{CatchUpOrder, Inbox, LogSource, PeerBatch, Transport};

/// Timing of the replication loop.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// One Raft tick. Default 100 ms.
    pub tick: Duration,
    /// Ticks without a leader's heartbeat before an election (randomized up
    /// to twice this). Default 10 (1–2 s).
    pub election_ticks: usize,
    /// Ticks between a leader's heartbeats. Default 5 (500 ms): often enough
    /// for `check_quorum` within an election timeout, rare enough that a
    /// broker with 1,000 idle partitions stays cheap.
    pub heartbeat_ticks: usize,
    /// Largest append message to one follower. Default 1 MiB.
    pub max_size_per_msg: u64,
    /// Append messages in flight to one follower (so at most this many times
    /// `max_size_per_msg` per group is queued for a peer). Default 32.
    pub max_inflight_msgs: usize,
    /// A follower more than this many committed entries behind catches up
    /// by streaming the leader's log (see `catch_up`). Default
    /// [`catch_up::MIN_LAG_ENTRIES`].
    pub catch_up_min_lag_entries: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 5,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 32,
            catch_up_min_lag_entries: catch_up::MIN_LAG_ENTRIES,
        }
    }
}

/// A replica for the loop to host (see [`RaftNode::host`]).
#[derive(Debug)]
pub struct NewReplica {
    /// Its Raft group.
    pub group: RaftGroupId,
    /// Its log (which is its Raft log).
    pub log: Arc<RwLock<PartitionLog>>,
    /// The configuration a new group starts with; a group with stored Raft
    /// state keeps its own.
    pub voters: Vec<NodeId>,
    /// The replica may hold less than it once acknowledged: its disk was
    /// lost or replaced, its log was damaged and moved aside, or it is a
    /// fresh copy of a moved partition. It then neither votes nor campaigns
    /// until a leader elected without it has brought it up to date (see
    /// `Replica`'s recovery), so it can never help elect a leader that lacks
    /// a committed entry. A replica whose stored state says it is still
    /// recovering stays so whatever this says.
    pub recovering: bool,
    /// Entered whenever the loop works on this replica, so its log lines
    /// carry what the caller knows of it (topic, partition).
    pub span: tracing::Span,
}

enum LoopCommand {
    Host {
        replica: NewReplica,
        storage: RaftLog,
        reply: oneshot::Sender<Result<Arc<ReplicaHandle>>>,
    },
    Remove {
        group: RaftGroupId,
        reply: oneshot::Sender<()>,
    },
    Propose {
        group: RaftGroupId,
        batch: RecordBatch,
        ack: Ack,
        reply: oneshot::Sender<Result<AppendInfo>>,
    },
    Step {
        from: NodeId,
        batch: PeerBatch,
    },
    CatchUpProgress(catch_up::Progress),
    Campaign {
        group: RaftGroupId,
    },
    RaiseTerm {
        group: RaftGroupId,
        floor: Term,
    },
    TransferLeader {
        group: RaftGroupId,
        to: NodeId,
    },
    ChangeReplicas {
        group: RaftGroupId,
        change: ReplicaChange,
        reply: oneshot::Sender<Result<()>>,
    },
    Shutdown,
}

/// Handle to a node's replication loop. Cloning shares the loop.
#[derive(Clone)]
pub struct RaftNode {
    id: NodeId,
    /// Bumped whenever any hosted replica's high watermark moves.
    commits: Arc<watch::Sender<u64>>,
    tx: mpsc::Sender<LoopCommand>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    hosted: Hosted,
}

/// The replicas the loop hosts, for serving their committed entries to
/// peers without going through the loop.
type Hosted = Arc<RwLock<HashMap<RaftGroupId, Arc<ReplicaHandle>>>>;

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RaftNode({})", self.id)
    }
}

/// The node's inbox: messages from peers enter the loop through it.
struct NodeInbox(mpsc::Sender<LoopCommand>);

impl Inbox for NodeInbox {
    fn deliver(&self, from: NodeId, batch: PeerBatch) {
        let _ = self.0.send(LoopCommand::Step { from, batch });
    }
}

/// Serves committed entries of the hosted replicas.
struct HostedLogs(Hosted);

impl LogSource for HostedLogs {
    fn read_committed(
        &self,
        group: RaftGroupId,
        from: RaftIndex,
        last: RaftIndex,
        max_bytes: usize,
    ) -> Result<bytes::Bytes> {
        let handle = self
            .0
            .read()
            .get(&group)
            .cloned()
            .ok_or(ClusterError::UnknownGroup { group })?;
        let commit = handle.status.borrow().commit;
        if last > commit {
            return Err(ClusterError::Malformed {
                what: "fetch",
                reason: format!("entry {last} is not committed here (commit {commit})"),
            });
        }
        let log = handle.log.partition_log().read();
        Ok(log.read_raft_range(from, last, max_bytes)?)
    }
}

/// Forwards raft-rs's slog records to `tracing`.
struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;
    fn log(&self, r: &slog::Record<'_>, _: &slog::OwnedKVList) -> std::result::Result<(), slog::Never> {
        match r.level() {
            slog::Level::Critical | slog::Level::Error => tracing::error!(target: "raft", "{}", r.msg()),
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", r.msg()),
            slog::Level::Info => tracing::debug!(target: "raft", "{}", r.msg()),
            _ => tracing::trace!(target: "raft", "{}", r.msg()),
        }
        Ok(())
    }
}

impl RaftNode {
    /// Starts node `id`'s loop on its own thread; messages leave through
    /// `transport`.
    pub fn start(id: NodeId, config: NodeConfig, transport: Arc<dyn Transport>) -> Self {
        let (tx, rx) = mpsc::channel();
        let hosted: Hosted = Arc::default();
        let commits = Arc::new(watch::Sender::new(0));
        // Catch-up streams run on the runtime that starts the node, if any.
        let runtime = tokio::runtime::Handle::try_current().ok();
        let node = Loop {
            id,
            early: EarlyMessages::new(config.tick * config.election_ticks.max(1) as u32),
            cfg: config,
            replicas: HashMap::new(),
            hosted: Arc::clone(&hosted),
            ticks: 0,
            commits: Arc::clone(&commits),
            clocks: PeerClocks::default(),
            known_peers: HashSet::new(),
            peers_stale: true,
            touched: HashSet::new(),
            transport,
            runtime,
            events: tx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(format!("raft-{id}"))
            .spawn(move || run(node, rx))
            .ok();
        if thread.is_none() {
            tracing::error!(node = %id, "could not start the replication thread");
        }
        RaftNode {
            id,
            commits,
            tx,
            thread: Arc::new(Mutex::new(thread)),
            hosted,
        }
    }

    /// A counter that moves whenever any hosted replica's high watermark
    /// moves: one thing to wait on for a fetch of thousands of partitions,
    /// instead of one watch per partition.
    pub fn watch_commits(&self) -> watch::Receiver<u64> {
        self.commits.subscribe()
    }

    /// What serves this node's committed entries to followers catching up.
    pub fn log_source(&self) -> Arc<dyn LogSource> {
        Arc::new(HostedLogs(Arc::clone(&self.hosted)))
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The inbox peers' messages should be delivered to.
    pub fn inbox(&self) -> Arc<dyn Inbox> {
        Arc::new(NodeInbox(self.tx.clone()))
    }

    fn send(&self, c: LoopCommand) -> Result<()> {
        self.tx.send(c).map_err(|_| ClusterError::Stopped { node: self.id })
    }

    /// Hosts a replica of a group (see [`NewReplica`]); a group already
    /// hosted keeps running and its handle is returned.
    pub async fn host(&self, replica: NewReplica) -> Result<Arc<ReplicaHandle>> {
        // Reading (or creating) the state file is file work: done here, off
        // the loop, so hosting thousands of new replicas does not stall
        // every group's replication behind their fsyncs.
        let (log, voters, group) = (Arc::clone(&replica.log), replica.voters.clone(), replica.group);
        let open = move || RaftLog::open(log, &voters);
        let storage = match tokio::runtime::Handle::try_current() {
            Ok(rt) => rt
                .spawn_blocking(open)
                .await
                .map_err(|_| ClusterError::ReplicaFailed { group })??,
            Err(_) => open()?,
        };
        let (reply, rx) = oneshot::channel();
        self.send(LoopCommand::Host {
            replica,
            storage,
            reply,
        })?;
        rx.await.map_err(|_| ClusterError::Stopped { node: self.id })?
    }

    /// Stops hosting `group` and answers once the loop no longer touches
    /// its files (they stay; the caller deletes them).
    pub async fn remove(&self, group: RaftGroupId) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(LoopCommand::Remove { group, reply })?;
        rx.await.map_err(|_| ClusterError::Stopped { node: self.id })
    }

    /// Proposes a producer's batch, validated when it arrived; answers at
    /// the `ack` level with where it landed, or `NotLeader` naming the
    /// leader.
    pub async fn propose(&self, group: RaftGroupId, batch: RecordBatch, ack: Ack) -> Result<AppendInfo> {
        let (reply, rx) = oneshot::channel();
        self.send(LoopCommand::Propose {
            group,
            batch,
            ack,
            reply,
        })?;
        rx.await.map_err(|_| ClusterError::Stopped { node: self.id })?
    }

    /// Starts an election in `group` (tests, leader transfer).
    pub fn campaign(&self, group: RaftGroupId) -> Result<()> {
        self.send(LoopCommand::Campaign { group })
    }

    /// Gives a replica that lost its term (`ReplicaStatus::awaiting_term`)
    /// the floor its broker learned from the peers: the highest term of
    /// enough of the group's other replicas that one of them took part in
    /// every quorum the lost replica did (n − q + 1 of them, for n replicas
    /// and quorum q).
    pub fn raise_term(&self, group: RaftGroupId, floor: Term) -> Result<()> {
        self.send(LoopCommand::RaiseTerm { group, floor })
    }

    /// Asks this node, if it leads `group`, to hand leadership to `to` (the
    /// transfer happens once `to` is caught up; raft-rs aborts it otherwise).
    pub fn transfer_leader(&self, group: RaftGroupId, to: NodeId) -> Result<()> {
        self.send(LoopCommand::TransferLeader { group, to })
    }

    /// Proposes one membership change of `group` on its leader (here).
    /// Answers once proposed; the change is in effect when the group's
    /// status lists the new voters and learners.
    ///
    /// # Errors
    /// `NotLeader`, `UnknownGroup`, or raft-rs refusing it (another change
    /// is still pending).
    pub async fn change_replicas(&self, group: RaftGroupId, change: ReplicaChange) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(LoopCommand::ChangeReplicas { group, change, reply })?;
        rx.await.map_err(|_| ClusterError::Stopped { node: self.id })?
    }

    /// Stops the loop and waits for it.
    pub fn shutdown(&self) {
        let _ = self.tx.send(LoopCommand::Shutdown);
        let handle = self.thread.lock().take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn start_replica(
    id: NodeId,
    cfg: &NodeConfig,
    r: &NewReplica,
    storage: RaftLog,
    commits: &Arc<watch::Sender<u64>>,
) -> Result<Replica> {
    let group = r.group;
    // The commit index raft-rs starts from, clamped into the stored log.
    let commit = RaftIndex(raft::Storage::initial_state(&storage)?.hard_state.commit);
    let raft_cfg = Config {
        id: id.get(),
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        // Everything committed is already "applied": the log is the state.
        applied: commit.get(),
        max_size_per_msg: cfg.max_size_per_msg,
        // A follower further behind than a few windows catches up by
        // streaming instead (`catch_up`).
        max_inflight_msgs: cfg.max_inflight_msgs,
        // Entries handed to the loop to apply at once (after a catch-up a
        // follower may have gigabytes committed at once).
        max_committed_size_per_ready: 64 << 20,
        check_quorum: true,
        pre_vote: true,
        ..Config::default()
    };
    raft_cfg.validate()?;
    let hw = storage.next_offset_after(commit)?;
    let logger = slog::Logger::root(TracingDrain, slog::o!("group" => group.get()));
    let node = RawNode::new(&raft_cfg, storage.clone(), &logger)?;
    let handle = Arc::new(ReplicaHandle {
        group,
        high_watermark: watch::Sender::new(hw),
        commits: Arc::clone(commits),
        status: watch::Sender::new(ReplicaStatus::default()),
        leader_changes: std::sync::atomic::AtomicU64::new(0),
        caught_up_entries: std::sync::atomic::AtomicU64::new(0),
        log: storage.clone(),
    });
    Ok(Replica::new(group, node, storage, handle))
}

/// Heartbeat intervals between two gatherings of the peers every hosted
/// group has (see `Loop::check_peers`).
const PEERS_GATHERED_EVERY: u64 = 10;

/// Most threads one loop iteration uses for fsyncs.
const SYNC_THREADS: usize = 16;

/// The durable work of one staged `Ready`: the state file to write, then
/// the log to `fdatasync`.
type SyncWork<'a> = (Option<&'a RaftLog>, Option<&'a strand_storage::SyncPoint>);

fn run_sync((state, point): SyncWork<'_>) -> Option<Result<()>> {
    if state.is_none() && point.is_none() {
        return None;
    }
    let result = state
        .map_or(Ok(()), RaftLog::persist_state)
        .and_then(|()| point.map_or(Ok(()), |p| p.sync().map_err(ClusterError::from)));
    Some(result)
}

/// Runs every staged `Ready`'s state write and `fdatasync`, in parallel when
/// there are several (a topic of thousands of new partitions elects them all
/// at once); `None` where there was nothing to do.
fn sync_all(work: Vec<SyncWork<'_>>) -> Vec<Option<Result<()>>> {
    let wanted = work.iter().filter(|(s, p)| s.is_some() || p.is_some()).count();
    if wanted <= 1 {
        return work.into_iter().map(run_sync).collect();
    }
    let mut results: Vec<Option<Result<()>>> = work.iter().map(|_| None).collect();
    let chunk = work.len().div_ceil(SYNC_THREADS.min(wanted));
    std::thread::scope(|scope| {
        for (ws, rs) in work.chunks(chunk).zip(results.chunks_mut(chunk)) {
            scope.spawn(move || {
                for (w, r) in ws.iter().zip(rs.iter_mut()) {
                    *r = run_sync(*w);
                }
            });
        }
    });
    results
}

/// Messages that ask a replica to vote or to stand for election: a
/// recovering replica ignores them.
fn is_election_message(m: &Message) -> bool {
    matches!(
        m.get_msg_type(),
        raft::eraftpb::MessageType::MsgRequestVote
            | raft::eraftpb::MessageType::MsgRequestPreVote
            | raft::eraftpb::MessageType::MsgTimeoutNow
    )
}

fn run(mut node: Loop, rx: mpsc::Receiver<LoopCommand>) {
    let _node = tracing::info_span!("raft", node = %node.id).entered();
    let mut next_tick = Instant::now() + node.cfg.tick;
    let mut out = Outbox::new();
    loop {
        // A replica whose second half produced another `Ready` is not left
        // waiting for the next command or tick.
        let wait = if node.touched.is_empty() {
            next_tick.saturating_duration_since(Instant::now())
        } else {
            Duration::ZERO
        };
        let first = match rx.recv_timeout(wait) {
            Ok(c) => Some(c),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // Take whatever else is queued, bounded so ticks are not starved.
        let mut stop = false;
        for c in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()).take(4096))
        {
            stop |= node.handle(c, &mut out);
        }
        if stop {
            break;
        }
        let now = Instant::now();
        if now >= next_tick {
            node.tick(now, &mut out);
            next_tick = (next_tick + node.cfg.tick).max(now);
        }
        node.process_ready(&mut out);
        node.send_out(&mut out);
    }
    for r in node.replicas.values_mut() {
        let _ = r.in_span(Replica::release_pending);
    }
    // Every group's last state (its commit index), written in parallel: one
    // after another, a broker of 10,000 partitions took 20 s to stop.
    let work = node.replicas.values().map(|r| (Some(&r.storage), None)).collect();
    for (r, result) in node.replicas.values().zip(sync_all(work)) {
        if let Some(Err(e)) = result {
            let _span = r.span.enter();
            tracing::warn!(error = %e, "could not persist raft state at shutdown");
        }
    }
}

/// The loop's state: every hosted replica, driven from one thread.
struct Loop {
    id: NodeId,
    cfg: NodeConfig,
    replicas: HashMap<RaftGroupId, Replica>,
    /// The hosted replicas' handles, shared with [`HostedLogs`].
    hosted: Hosted,
    ticks: u64,
    /// Shared with every replica's handle (see [`RaftNode::watch_commits`]).
    commits: Arc<watch::Sender<u64>>,
    /// Node-level liveness of peers (see `quiesce`).
    clocks: PeerClocks,
    /// The nodes this one shares a group with, as last gathered.
    known_peers: HashSet<NodeId>,
    /// A replica was hosted or removed since `known_peers` was gathered.
    peers_stale: bool,
    /// Groups something happened to since the last `process_ready`: only
    /// they can have a `Ready` (quiet groups are never touched).
    touched: HashSet<RaftGroupId>,
    transport: Arc<dyn Transport>,
    /// Where catch-up tasks run (none outside a tokio runtime: then
    /// followers catch up through Raft's appends only).
    runtime: Option<tokio::runtime::Handle>,
    /// The loop's own command channel, for catch-up tasks to report on.
    events: mpsc::Sender<LoopCommand>,
    /// Messages for groups not hosted yet (see `early`).
    early: EarlyMessages,
}

impl Loop {
    /// Handles one command; `true` to stop.
    fn handle(&mut self, c: LoopCommand, out: &mut Outbox) -> bool {
        match c {
            LoopCommand::Host {
                replica,
                storage,
                reply,
            } => {
                let _ = reply.send(self.host(replica, storage));
            }
            LoopCommand::Remove { group, reply } => {
                if let Some(mut r) = self.replicas.remove(&group) {
                    // Its peers may be quiet, waiting on this replica.
                    for to in r.peers() {
                        out.entry(to).or_default().wake.push(group);
                    }
                    let _ = r.in_span(Replica::close);
                }
                self.peers_stale = true;
                self.hosted.write().remove(&group);
                let _ = reply.send(());
            }
            LoopCommand::Propose {
                group,
                batch,
                ack,
                reply,
            } => match self.wake(group) {
                // A panic drops `reply`: the caller sees the loop's answer missing.
                Some(r) => {
                    let _ = r.in_span(|r| r.propose(&batch, ack, strand_storage::now_ms(), reply));
                }
                None => {
                    let _ = reply.send(Err(ClusterError::UnknownGroup { group }));
                }
            },
            LoopCommand::Step { from, batch } => {
                self.clocks.heard(from, Instant::now());
                for (group, m) in batch.messages {
                    self.step(from, group, m);
                }
                for order in batch.catch_ups {
                    self.start_catch_up(from, order);
                }
                for group in batch.wake {
                    self.wake(group);
                }
                // After the batch's messages, which came before the notice.
                for notice in batch.quiesced {
                    if let Some(r) = self.replicas.get_mut(&notice.group)
                        && !r.is_quiet()
                    {
                        let _ = r.in_span(|r| r.accept_quiesce(from, &notice));
                    }
                }
            }
            LoopCommand::CatchUpProgress(p) => {
                if let Some(r) = self.wake(p.group)
                    && let Some(m) = r.in_span(|r| r.catch_up_progress(&p)).flatten()
                {
                    out.entry(NodeId(m.to)).or_default().messages.push((p.group, m));
                }
            }
            LoopCommand::Campaign { group } => {
                if let Some(r) = self.wake(group).filter(|r| r.may_stand()) {
                    let _ = r.in_span(|r| r.node.campaign());
                }
            }
            LoopCommand::RaiseTerm { group, floor } => {
                if let Some(r) = self.wake(group) {
                    let failed = r.in_span(|r| r.apply_term_floor(floor)).and_then(|r| r.err());
                    if let Some(e) = failed {
                        r.in_span(|r| r.fail(e));
                    }
                }
            }
            LoopCommand::TransferLeader { group, to } => self.transfer_leader(group, to),
            LoopCommand::ChangeReplicas { group, change, reply } => {
                let r = match self.wake(group) {
                    Some(r) => r
                        .in_span(|r| r.propose_replica_change(change))
                        .unwrap_or(Err(ClusterError::ReplicaFailed { group })),
                    None => Err(ClusterError::UnknownGroup { group }),
                };
                let _ = reply.send(r);
            }
            LoopCommand::Shutdown => return true,
        }
        false
    }

    fn host(&mut self, new: NewReplica, storage: RaftLog) -> Result<Arc<ReplicaHandle>> {
        if let Some(existing) = self.replicas.get(&new.group) {
            return Ok(Arc::clone(&existing.handle));
        }
        let _span = new.span.clone().entered();
        // raft-rs panics on some inconsistent stored states; one damaged
        // replica must not take the loop (and every other group) down.
        let started = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            start_replica(self.id, &self.cfg, &new, storage, &self.commits)
        }));
        let mut rep = match started {
            Ok(r) => r?,
            Err(_) => {
                tracing::error!(group = %new.group, "raft refused this replica's stored state: not hosted");
                return Err(ClusterError::ReplicaFailed { group: new.group });
            }
        };
        rep.span = new.span;
        if new.recovering || rep.storage.persisted().recovering {
            rep.start_recovering()?;
            let stored = rep.storage.persisted();
            if stored.term_unknown || stored.term == Term(0) {
                rep.await_term()?;
            }
        }
        rep.publish_status();
        rep.set_active_window(self.cfg.tick * (2 * self.cfg.election_ticks) as u32);
        let h = Arc::clone(&rep.handle);
        self.replicas.insert(new.group, rep);
        self.touched.insert(new.group);
        self.peers_stale = true;
        self.hosted.write().insert(new.group, Arc::clone(&h));
        for (from, m) in self.early.take(new.group, Instant::now()) {
            self.step(from, new.group, m);
        }
        Ok(h)
    }

    /// A follower's side of a leader's catch-up order: start streaming.
    fn start_catch_up(&mut self, from: NodeId, order: CatchUpOrder) {
        let Some(runtime) = self.runtime.clone() else {
            return;
        };
        let (id, events, transport) = (self.id, self.events.clone(), Arc::clone(&self.transport));
        let Some(r) = self.wake(order.group) else {
            return;
        };
        let Some(cancel) = r.in_span(|r| r.accept_catch_up(from, &order)).flatten() else {
            return;
        };
        let log = Arc::clone(r.storage.partition_log());
        let task = catch_up::run(id, from, order, transport, log, cancel, move |p| {
            let _ = events.send(LoopCommand::CatchUpProgress(p));
        });
        runtime.spawn(tracing::Instrument::instrument(task, r.span.clone()));
    }

    /// Steps one message from a peer into its replica.
    fn step(&mut self, from: NodeId, group: RaftGroupId, m: Message) {
        use raft::eraftpb::MessageType::{MsgHeartbeat, MsgHeartbeatResponse};
        let active = !matches!(m.get_msg_type(), MsgHeartbeat | MsgHeartbeatResponse);
        if !self.replicas.contains_key(&group) {
            let kind = m.get_msg_type();
            if !self.early.hold(group, from, m, Instant::now()) {
                tracing::debug!(%group, %from, ?kind, "message for a group not hosted here");
            }
            return;
        }
        let Some(r) = self.touch(group, active) else {
            return;
        };
        let _ = r.in_span(|r| step_replica(r, from, m));
    }

    fn transfer_leader(&mut self, group: RaftGroupId, to: NodeId) {
        let heartbeat_window = self.cfg.tick * (2 * self.cfg.heartbeat_ticks) as u32;
        let Some(r) = self
            .wake(group)
            .filter(|r| r.node.raft.state == raft::StateRole::Leader)
        else {
            return;
        };
        let _ = r.in_span(|r| {
            // Only to a replica that has every entry and answered within the
            // last two heartbeats, and never while a transfer is under way: a
            // transfer blocks proposals until it succeeds or times out.
            let last = r.last_index();
            let live = r.heard_within(to, heartbeat_window);
            let caught_up = r
                .node
                .raft
                .prs()
                .get(to.get())
                .is_some_and(|p| RaftIndex(p.matched) == last);
            if live && caught_up && r.node.raft.lead_transferee.is_none() {
                tracing::info!(%to, "transferring leadership to the preferred replica");
                r.node.transfer_leader(to.get());
            } else {
                tracing::debug!(%to, live, caught_up, "preferred replica not ready to lead");
            }
        });
    }

    /// The replica of `group`, woken (see `quiesce`) and marked touched:
    /// something happened to it.
    fn wake(&mut self, group: RaftGroupId) -> Option<&mut Replica> {
        self.touch(group, true)
    }

    /// The replica of `group`, marked touched; an `active` touch also wakes
    /// it if quiet and restarts its idle count. Heartbeats are not activity:
    /// an idle group exchanges them until it quiesces, the last ones cross
    /// the leader's notice, and a quiet group is kept safe by the node-level
    /// heartbeat, not by its own.
    fn touch(&mut self, group: RaftGroupId, active: bool) -> Option<&mut Replica> {
        let r = self.replicas.get_mut(&group)?;
        if active {
            if r.is_quiet() {
                let _ = r.in_span(Replica::wake);
            } else {
                r.idle_heartbeats = 0;
            }
        }
        self.touched.insert(group);
        Some(r)
    }

    /// One tick for every awake replica (a quiet one waits for something to
    /// happen; a recovering or failed one does not tick, so it never starts
    /// an election); leaders order catch-ups of followers far behind. On
    /// heartbeat ticks: idle leaders quiesce, and peers are pinged and
    /// checked (see `quiesce`).
    fn tick(&mut self, now: Instant, out: &mut Outbox) {
        self.ticks += 1;
        let heartbeat = self.ticks.is_multiple_of(self.cfg.heartbeat_ticks.max(1) as u64);
        let catch_ups = self.runtime.is_some();
        let min_lag = self.cfg.catch_up_min_lag_entries;
        let recently = self.cfg.tick * (2 * self.cfg.election_ticks) as u32;
        for (&g, r) in self.replicas.iter_mut().filter(|(_, r)| r.may_stand() && !r.is_quiet()) {
            self.touched.insert(g);
            let work = r.in_span(|r| {
                r.node.tick();
                let orders = if catch_ups {
                    r.plan_catch_ups(now, min_lag)
                } else {
                    Vec::new()
                };
                let mut notice = None;
                if heartbeat {
                    r.refresh_status();
                    r.forget_stale_catch_up();
                    notice = r.try_quiesce(recently).map(|n| (n, r.peers()));
                }
                (orders, notice)
            });
            let Some((orders, notice)) = work else { continue };
            for (to, order) in orders {
                out.entry(to).or_default().catch_ups.push(order);
            }
            if let Some((notice, peers)) = notice {
                for to in peers {
                    out.entry(to).or_default().quiesced.push(notice);
                }
            }
        }
        if heartbeat {
            self.early.expire(now);
            self.check_peers(now, out);
        }
    }

    /// Pings peers nothing went to for a heartbeat interval, wakes the
    /// quiet groups of peers that went down or came back, and tells the
    /// peers of a replica that failed here to wake theirs.
    fn check_peers(&mut self, now: Instant, out: &mut Outbox) {
        // Gathered from every replica's configuration: when replicas come or
        // go, else every 10 heartbeats (a membership change in between
        // happens in an awake group, which needs no node-level heartbeat).
        let heartbeats = self.ticks / self.cfg.heartbeat_ticks.max(1) as u64;
        if self.peers_stale || heartbeats.is_multiple_of(PEERS_GATHERED_EVERY) {
            self.peers_stale = false;
            let mut known: HashSet<NodeId> = HashSet::new();
            for (&g, r) in &mut self.replicas {
                let peers = r.peers();
                if r.is_failed() && !r.failure_announced {
                    // Its peers may be quiet, waiting on this replica.
                    r.failure_announced = true;
                    for &to in &peers {
                        out.entry(to).or_default().wake.push(g);
                    }
                }
                known.extend(peers);
            }
            self.known_peers = known;
        }
        let known = &self.known_peers;
        let heartbeat = self.cfg.tick * self.cfg.heartbeat_ticks.max(1) as u32;
        let timeout = self.cfg.tick * self.cfg.election_ticks.max(1) as u32;
        let check = self.clocks.check(known, now, heartbeat, timeout);
        for to in check.ping {
            out.entry(to).or_default().ping = true;
        }
        if check.changed.is_empty() {
            return;
        }
        tracing::info!(peers = ?check.changed, "peer liveness changed: waking its quiet groups");
        let changed: HashSet<NodeId> = check.changed.into_iter().collect();
        for (&g, r) in &mut self.replicas {
            if r.is_quiet() && r.peers().iter().any(|p| changed.contains(p)) {
                let _ = r.in_span(Replica::wake);
                self.touched.insert(g);
            }
        }
    }

    /// Sends what `out` holds, one batch per peer.
    fn send_out(&mut self, out: &mut Outbox) {
        let sent_at = Instant::now();
        for (to, batch) in out.drain() {
            if !batch.is_empty() {
                self.clocks.sent(to, sent_at);
                self.transport.send(self.id, to, batch);
            }
        }
    }

    /// Handles the `Ready` of every touched replica in two halves around one
    /// parallel round of fsyncs; the messages to send go to `out`, by peer.
    fn process_ready(&mut self, out: &mut Outbox) {
        let touched = std::mem::take(&mut self.touched);
        let mut staged: Vec<(RaftGroupId, StagedReady)> = Vec::new();
        for g in &touched {
            if let Some(r) = self.replicas.get_mut(g).filter(|r| r.has_ready())
                && let Some(st) = r.in_span(|r| r.stage_ready(out)).flatten()
            {
                staged.push((*g, st));
            }
        }
        // What staging produced (a leader's appends to its followers) goes
        // out before the fsyncs, so followers write while the leader syncs
        // (Raft thesis §10.2.1); raft-rs holds back what must wait for the
        // sync (votes, append responses) until `finish_ready`.
        self.send_out(out);
        // One fdatasync per group with new entries, all groups in parallel, so
        // a partition does not wait for the others' syncs one after another.
        let results = {
            let replicas = &self.replicas;
            sync_all(
                staged
                    .iter()
                    .map(|(g, st)| {
                        let state = st.state_write.then(|| replicas.get(g).map(|r| &r.storage)).flatten();
                        (state, st.sync.as_ref())
                    })
                    .collect(),
            )
        };
        for ((g, st), synced) in staged.into_iter().zip(results) {
            if let Some(r) = self.replicas.get_mut(&g) {
                let _ = r.in_span(|r| r.finish_ready(st, synced, out));
            }
        }
        // A replica with more to do (its second half produced another
        // `Ready`) is looked at again next time.
        for g in touched {
            if self.replicas.get(&g).is_some_and(Replica::has_ready) {
                self.touched.insert(g);
            }
        }
    }
}

/// Steps one message into `r` (inside its span).
fn step_replica(r: &mut Replica, from: NodeId, mut m: Message) {
    if r.is_failed() {
        return;
    }
    if r.is_awaiting_term() {
        tracing::debug!(%from, kind = ?m.get_msg_type(), "replica without a term floor ignores a message");
        return;
    }
    if r.is_recovering() && is_election_message(&m) {
        tracing::debug!(%from, kind = ?m.get_msg_type(), "recovering replica ignores an election message");
        return;
    }
    // Entries reach Raft checked once, here (a leader's own proposals
    // were checked when they arrived): see `RaftLog::append`.
    if let Err(e) = validate_received(&m) {
        tracing::warn!(%from, error = %e, "dropped a raft message with a bad entry");
        return;
    }
    r.heard_from(from);
    let last = r.last_index();
    let mut lost_entries = false;
    if m.get_msg_type() == raft::eraftpb::MessageType::MsgHeartbeat && RaftIndex(m.commit) > last {
        // The leader thinks this replica has entries it does not (its
        // data was lost or replaced): raft-rs would panic committing past
        // its log. Commit what it has, and tell the leader (below).
        tracing::warn!(
            %from,
            commit = m.commit,
            %last,
            "heartbeat commits past this replica's log: it lost entries it had"
        );
        m.commit = last.get();
        lost_entries = true;
    }
    if m.get_msg_type() == raft::eraftpb::MessageType::MsgAppendResponse && m.reject {
        r.forget_lost_progress(from, RaftIndex(m.reject_hint));
    }
    // A catch-up may have stored entries since the last Ready: raft-rs
    // must see them as its log before it appends after them.
    r.realign_unstable();
    if let Err(e) = r.node.step(m) {
        tracing::debug!(%from, error = %e, "dropped raft message");
    }
    if lost_entries {
        r.report_lost_entries(from);
    }
}
