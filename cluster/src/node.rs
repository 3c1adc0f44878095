//! The replication loop of one node: a single thread drives every Raft group
//! hosted here — one tick timer for all groups (1,000 partitions are not
//! 1,000 timers), `Ready` processing with blocking fsyncs off the async
//! runtime, and one batch of outgoing messages per peer per iteration.

use std::collections::HashMap;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;
use raft::eraftpb::Message;
use raft::{Config, RawNode};
use strand_storage::{AppendInfo, PartitionLog};
use tokio::sync::{oneshot, watch};

use crate::error::{ClusterError, Result};
use crate::raft_log::RaftLog;
use crate::replica::{Ack, GroupHandle, GroupStatus, Replica, ReplicaChange, StagedReady};
use crate::transport::{Inbox, Transport};

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
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            tick: Duration::from_millis(100),
            election_ticks: 10,
            heartbeat_ticks: 5,
            max_size_per_msg: 1 << 20,
        }
    }
}

enum Command {
    AddGroup {
        group: u64,
        log: Arc<RwLock<PartitionLog>>,
        voters: Vec<u64>,
        recover_to: Option<u64>,
        reply: oneshot::Sender<Result<Arc<GroupHandle>>>,
    },
    RemoveGroup {
        group: u64,
        reply: oneshot::Sender<()>,
    },
    Propose {
        group: u64,
        batch: Bytes,
        ack: Ack,
        reply: oneshot::Sender<Result<AppendInfo>>,
    },
    Step {
        from: u64,
        msgs: Vec<(u64, Message)>,
    },
    Campaign {
        group: u64,
    },
    TransferLeader {
        group: u64,
        to: u64,
    },
    ChangeReplicas {
        group: u64,
        change: ReplicaChange,
        reply: oneshot::Sender<Result<()>>,
    },
    Shutdown,
}

/// Handle to a node's replication loop. Cloning shares the loop.
#[derive(Clone)]
pub struct RaftNode {
    id: u64,
    tx: mpsc::Sender<Command>,
    thread: Arc<std::sync::Mutex<Option<JoinHandle<()>>>>,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RaftNode({})", self.id)
    }
}

/// The node's inbox: messages from peers enter the loop through it.
struct NodeInbox(mpsc::Sender<Command>);

impl Inbox for NodeInbox {
    fn deliver(&self, from: u64, msgs: Vec<(u64, Message)>) {
        let _ = self.0.send(Command::Step { from, msgs });
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
    pub fn start(id: u64, config: NodeConfig, transport: Arc<dyn Transport>) -> Self {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name(format!("raft-{id}"))
            .spawn(move || run(id, config, rx, transport))
            .ok();
        if thread.is_none() {
            tracing::error!(node = id, "could not start the replication thread");
        }
        RaftNode {
            id,
            tx,
            thread: Arc::new(std::sync::Mutex::new(thread)),
        }
    }

    /// This node's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The inbox peers' messages should be delivered to.
    pub fn inbox(&self) -> Arc<dyn Inbox> {
        Arc::new(NodeInbox(self.tx.clone()))
    }

    fn send(&self, c: Command) -> Result<()> {
        self.tx.send(c).map_err(|_| ClusterError::Stopped { node: self.id })
    }

    /// Hosts a replica of `group` over `log`. A new group starts with `voters`
    /// as its configuration; an existing one keeps its stored configuration.
    pub async fn add_group(
        &self,
        group: u64,
        log: Arc<RwLock<PartitionLog>>,
        voters: Vec<u64>,
    ) -> Result<Arc<GroupHandle>> {
        self.add(group, log, voters, None).await
    }

    /// Hosts a replica whose log was found damaged and replaced by an empty
    /// one: until it has re-fetched every entry up to `recover_to` (the commit
    /// index it had persisted) it neither votes nor campaigns, so a replica
    /// that lost committed data can never help elect a leader that lacks it.
    pub async fn add_recovering_group(
        &self,
        group: u64,
        log: Arc<RwLock<PartitionLog>>,
        voters: Vec<u64>,
        recover_to: u64,
    ) -> Result<Arc<GroupHandle>> {
        self.add(group, log, voters, Some(recover_to)).await
    }

    async fn add(
        &self,
        group: u64,
        log: Arc<RwLock<PartitionLog>>,
        voters: Vec<u64>,
        recover_to: Option<u64>,
    ) -> Result<Arc<GroupHandle>> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::AddGroup {
            group,
            log,
            voters,
            recover_to,
            reply,
        })?;
        rx.await.map_err(|_| ClusterError::Stopped { node: self.id })?
    }

    /// Stops hosting `group` and answers once the loop no longer touches
    /// its files (they stay; the caller deletes them).
    pub async fn remove_group(&self, group: u64) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::RemoveGroup { group, reply })?;
        rx.await.map_err(|_| ClusterError::Stopped { node: self.id })
    }

    /// Proposes a producer's batch; answers at the `ack` level with where it
    /// landed, or `NotLeader` naming the leader.
    pub async fn propose(&self, group: u64, batch: Bytes, ack: Ack) -> Result<AppendInfo> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::Propose {
            group,
            batch,
            ack,
            reply,
        })?;
        rx.await.map_err(|_| ClusterError::Stopped { node: self.id })?
    }

    /// Starts an election in `group` (tests, leader transfer).
    pub fn campaign(&self, group: u64) -> Result<()> {
        self.send(Command::Campaign { group })
    }

    /// Asks this node, if it leads `group`, to hand leadership to `to` (the
    /// transfer happens once `to` is caught up; raft-rs aborts it otherwise).
    pub fn transfer_leader(&self, group: u64, to: u64) -> Result<()> {
        self.send(Command::TransferLeader { group, to })
    }

    /// Proposes one membership change of `group` on its leader (here).
    /// Answers once proposed; the change is in effect when the group's
    /// status lists the new voters and learners.
    ///
    /// # Errors
    /// `NotLeader`, `UnknownGroup`, or raft-rs refusing it (another change
    /// is still pending).
    pub async fn change_replicas(&self, group: u64, change: ReplicaChange) -> Result<()> {
        let (reply, rx) = oneshot::channel();
        self.send(Command::ChangeReplicas { group, change, reply })?;
        rx.await.map_err(|_| ClusterError::Stopped { node: self.id })?
    }

    /// Stops the loop and waits for it.
    pub fn shutdown(&self) {
        let _ = self.tx.send(Command::Shutdown);
        let handle = self
            .thread
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(h) = handle {
            let _ = h.join();
        }
    }
}

fn add_group(id: u64, cfg: &NodeConfig, group: u64, log: Arc<RwLock<PartitionLog>>, voters: &[u64]) -> Result<Replica> {
    let storage = RaftLog::open(log, voters)?;
    let persisted = storage.persisted();
    let last = raft::Storage::last_index(&storage)?;
    let raft_cfg = Config {
        id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        // Everything committed is already "applied": the log is the state.
        applied: persisted.commit.min(last),
        max_size_per_msg: cfg.max_size_per_msg,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Config::default()
    };
    raft_cfg.validate()?;
    let hw = storage.next_offset_after(persisted.commit.min(last))?;
    let logger = slog::Logger::root(TracingDrain, slog::o!("group" => group));
    let node = RawNode::new(&raft_cfg, storage.clone(), &logger)?;
    let handle = Arc::new(GroupHandle {
        group,
        high_watermark: watch::Sender::new(hw),
        status: watch::Sender::new(GroupStatus::default()),
        leader_changes: std::sync::atomic::AtomicU64::new(0),
        log: storage.clone(),
    });
    Ok(Replica::new(group, node, storage, handle))
}

/// Most threads one loop iteration uses for fsyncs.
const SYNC_THREADS: usize = 8;

/// Runs every sync point's `fdatasync`, in parallel when there are several;
/// `None` where there was nothing to sync.
fn sync_all(points: Vec<Option<&strand_storage::SyncPoint>>) -> Vec<Option<Result<()>>> {
    let wanted = points.iter().filter(|p| p.is_some()).count();
    if wanted <= 1 {
        return points
            .into_iter()
            .map(|p| p.map(|p| p.sync().map_err(ClusterError::from)))
            .collect();
    }
    let mut results: Vec<Option<Result<()>>> = points.iter().map(|_| None).collect();
    let chunk = points.len().div_ceil(SYNC_THREADS.min(wanted));
    std::thread::scope(|scope| {
        for (ps, rs) in points.chunks(chunk).zip(results.chunks_mut(chunk)) {
            scope.spawn(move || {
                for (p, r) in ps.iter().zip(rs.iter_mut()) {
                    *r = p.map(|p| p.sync().map_err(ClusterError::from));
                }
            });
        }
    });
    results
}

fn is_vote_request(m: &Message) -> bool {
    matches!(
        m.get_msg_type(),
        raft::eraftpb::MessageType::MsgRequestVote | raft::eraftpb::MessageType::MsgRequestPreVote
    )
}

fn run(id: u64, cfg: NodeConfig, rx: mpsc::Receiver<Command>, transport: Arc<dyn Transport>) {
    let mut groups: HashMap<u64, Replica> = HashMap::new();
    let mut next_tick = Instant::now() + cfg.tick;
    let mut ticks: u64 = 0;
    loop {
        let wait = next_tick.saturating_duration_since(Instant::now());
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
            match c {
                Command::AddGroup {
                    group,
                    log,
                    voters,
                    recover_to,
                    reply,
                } => {
                    let r = match groups.get(&group) {
                        Some(existing) => Ok(Arc::clone(&existing.handle)),
                        None => add_group(id, &cfg, group, log, &voters).map(|mut rep| {
                            rep.recover_to(recover_to);
                            rep.set_active_window(cfg.tick * (2 * cfg.election_ticks) as u32);
                            let h = Arc::clone(&rep.handle);
                            groups.insert(group, rep);
                            h
                        }),
                    };
                    let _ = reply.send(r);
                }
                Command::RemoveGroup { group, reply } => {
                    if let Some(mut r) = groups.remove(&group) {
                        r.close();
                    }
                    let _ = reply.send(());
                }
                Command::Propose {
                    group,
                    batch,
                    ack,
                    reply,
                } => match groups.get_mut(&group) {
                    Some(r) => r.propose(&batch, ack, strand_storage::now_ms(), reply),
                    None => {
                        let _ = reply.send(Err(ClusterError::UnknownGroup { group }));
                    }
                },
                Command::Step { from, msgs } => {
                    for (group, m) in msgs {
                        match groups.get_mut(&group) {
                            Some(r) if r.is_recovering() && is_vote_request(&m) => {
                                tracing::debug!(node = id, group, from, "recovering replica ignores a vote request");
                            }
                            Some(r) => {
                                r.heard_from(from);
                                let mut m = m;
                                let last = r.node.raft.raft_log.last_index();
                                if m.get_msg_type() == raft::eraftpb::MessageType::MsgHeartbeat && m.commit > last {
                                    // The leader thinks this replica has entries it
                                    // does not (its data was lost or replaced):
                                    // raft-rs would panic committing past its log.
                                    // Commit what it has; the leader's probing
                                    // re-sends the rest.
                                    tracing::warn!(
                                        node = id,
                                        group,
                                        from,
                                        commit = m.commit,
                                        last,
                                        "heartbeat commits past this replica's log: it lost entries it had"
                                    );
                                    m.commit = last;
                                }
                                if let Err(e) = r.node.step(m) {
                                    tracing::debug!(node = id, group, from, error = %e, "dropped raft message");
                                }
                            }
                            None => tracing::debug!(node = id, group, from, "message for a group not hosted here"),
                        }
                    }
                }
                Command::Campaign { group } => {
                    if let Some(r) = groups.get_mut(&group).filter(|r| !r.is_recovering()) {
                        let _ = r.node.campaign();
                    }
                }
                Command::TransferLeader { group, to } => {
                    if let Some(r) = groups
                        .get_mut(&group)
                        .filter(|r| r.node.raft.state == raft::StateRole::Leader)
                    {
                        // Only to a replica that has every entry and answered
                        // within the last two heartbeats, and never while a
                        // transfer is under way: a transfer blocks proposals
                        // until it succeeds or times out.
                        let last = r.node.raft.raft_log.last_index();
                        let live = r.heard_within(to, cfg.tick * (2 * cfg.heartbeat_ticks) as u32);
                        let caught_up = r.node.raft.prs().get(to).is_some_and(|p| p.matched == last);
                        if live && caught_up && r.node.raft.lead_transferee.is_none() {
                            tracing::info!(node = id, group, to, "transferring leadership to the preferred replica");
                            r.node.transfer_leader(to);
                        } else {
                            tracing::debug!(
                                node = id,
                                group,
                                to,
                                live,
                                caught_up,
                                "preferred replica not ready to lead"
                            );
                        }
                    }
                }
                Command::ChangeReplicas { group, change, reply } => {
                    let r = match groups.get_mut(&group) {
                        Some(r) => r.propose_replica_change(change),
                        None => Err(ClusterError::UnknownGroup { group }),
                    };
                    let _ = reply.send(r);
                }
                Command::Shutdown => stop = true,
            }
        }
        if stop {
            break;
        }
        let now = Instant::now();
        if now >= next_tick {
            // A recovering replica does not tick: without ticks it never
            // starts an election.
            ticks += 1;
            let heartbeat = ticks.is_multiple_of(cfg.heartbeat_ticks.max(1) as u64);
            for r in groups.values_mut().filter(|r| !r.is_recovering()) {
                r.node.tick();
                if heartbeat {
                    r.refresh_status();
                }
            }
            next_tick = (next_tick + cfg.tick).max(now);
        }
        let mut out: HashMap<u64, Vec<(u64, Message)>> = HashMap::new();
        let staged: Vec<(u64, StagedReady)> = groups
            .iter_mut()
            .filter_map(|(&g, r)| r.stage_ready(&mut out).map(|st| (g, st)))
            .collect();
        // One fdatasync per group with new entries, all groups in parallel, so
        // a partition does not wait for the others' syncs one after another.
        let results = sync_all(staged.iter().map(|(_, st)| st.sync.as_ref()).collect());
        for ((g, st), synced) in staged.into_iter().zip(results) {
            if let Some(r) = groups.get_mut(&g) {
                r.finish_ready(st, synced, &mut out);
            }
        }
        for (to, msgs) in out {
            transport.send(id, to, msgs);
        }
    }
    for r in groups.values_mut() {
        r.close();
    }
}
