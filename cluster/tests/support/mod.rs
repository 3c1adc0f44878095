//! The in-process three-node cluster the replication tests share: nodes over
//! a memory network, logs in a temporary directory, waits with deadlines.
#![allow(dead_code, unused_imports)]

pub use std::sync::Arc;
pub use std::time::Duration;

pub use bytes::Bytes;
pub use parking_lot::RwLock;
pub use strand_cluster::{
    Ack, ClusterError, MemoryNetwork, NewReplica, NodeConfig, NodeId, PersistedState, RaftGroupId, RaftNode,
    ReplicaHandle, ReplicaStatus,
};
pub use strand_storage::{
    BatchBuilder, Compression, FsyncPolicy, LogConfig, NewRecord, Offset, PartitionLog, RaftIndex, RecordBatch, batches,
};

pub const GROUP: RaftGroupId = RaftGroupId(7);

pub fn log_config() -> LogConfig {
    LogConfig {
        segment_bytes: 64 * 1024,
        max_batch_bytes: 16 * 1024,
        preallocate_bytes: 64 * 1024,
        index_max_bytes: 64 * 1024,
        fsync: FsyncPolicy::Never,
        retention_ms: None,
        ..LogConfig::default()
    }
}

pub fn fast() -> NodeConfig {
    NodeConfig {
        tick: Duration::from_millis(20),
        // A follower 64 entries behind already catches up by streaming.
        catch_up_min_lag_entries: 64,
        ..NodeConfig::default()
    }
}

pub fn batch(tag: &str, n: u32) -> RecordBatch {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        let v = format!("{tag}-{i}");
        b.push(&NewRecord {
            timestamp_ms: 1,
            key: None,
            value: Some(v.as_bytes()),
            headers: &[],
        });
    }
    RecordBatch::validate(Bytes::from(b.build().expect("batch"))).expect("valid")
}

pub fn ids(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

pub struct Member {
    pub node: RaftNode,
    pub log: Arc<RwLock<PartitionLog>>,
    pub handle: Arc<ReplicaHandle>,
    pub dir: std::path::PathBuf,
}

pub struct Cluster {
    pub net: MemoryNetwork,
    pub members: Vec<Option<Member>>,
    pub config: NodeConfig,
    pub _tmp: tempfile::TempDir,
}

impl Cluster {
    pub async fn start(n: u64) -> Self {
        Self::start_with(n, fast()).await
    }

    pub async fn start_with(n: u64, config: NodeConfig) -> Self {
        Self::start_in(tempfile::tempdir().expect("tempdir"), n, config).await
    }

    /// Nodes keep their data in `tmp/node-<id>`.
    pub async fn start_in(tmp: tempfile::TempDir, n: u64, config: NodeConfig) -> Self {
        let net = MemoryNetwork::new();
        let mut c = Cluster {
            net,
            members: Vec::new(),
            config,
            _tmp: tmp,
        };
        for id in 1..=n {
            let dir = c._tmp.path().join(format!("node-{id}"));
            let m = c.start_member(id, dir, n).await;
            c.members.push(Some(m));
        }
        c
    }

    pub async fn start_member(&self, id: u64, dir: std::path::PathBuf, n: u64) -> Member {
        self.start_member_with(id, dir, (1..=n).collect()).await
    }

    pub async fn start_member_with(&self, id: u64, dir: std::path::PathBuf, voters: Vec<u64>) -> Member {
        self.start_replica(id, dir, voters, false).await
    }

    pub async fn start_replica(&self, id: u64, dir: std::path::PathBuf, voters: Vec<u64>, recovering: bool) -> Member {
        self.start_replica_with(id, dir, voters, recovering, self.config.clone())
            .await
    }

    pub async fn start_replica_with(
        &self,
        id: u64,
        dir: std::path::PathBuf,
        voters: Vec<u64>,
        recovering: bool,
        config: NodeConfig,
    ) -> Member {
        let log = Arc::new(RwLock::new(PartitionLog::open(&dir, log_config()).expect("open log")));
        let node = RaftNode::start(NodeId(id), config, Arc::new(self.net.clone()));
        self.net.attach(NodeId(id), node.inbox(), node.log_source());
        let handle = node
            .host(NewReplica {
                group: GROUP,
                log: Arc::clone(&log),
                voters: ids(&voters),
                recovering,
                span: tracing::Span::none(),
            })
            .await
            .expect("host replica");
        Member { node, log, handle, dir }
    }

    /// Proposes `n` batches of `records` records through `via` (which must
    /// lead), each committed; returns the offset after the last.
    pub async fn write(&self, via: u64, tag: &str, n: u32, records: u32) -> Offset {
        let mut end = Offset::ZERO;
        for i in 0..n {
            end = self
                .member(via)
                .node
                .propose(GROUP, batch(&format!("{tag}{i:04}"), records), Ack::All)
                .await
                .expect("committed")
                .last_offset
                .next();
        }
        end
    }

    /// Like [`Cluster::write`] through whichever node leads, for a moment
    /// when leadership may still move (right after a partition heals): a
    /// batch refused with `NotLeader` is proposed again through the next
    /// leader. Returns the leader that took the last batch and the offset
    /// after it.
    pub async fn write_via_leader(&self, tag: &str, n: u32, records: u32) -> (u64, Offset) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let mut end = Offset::ZERO;
        let mut via = self.leader().await;
        for i in 0..n {
            loop {
                let b = batch(&format!("{tag}{i:04}"), records);
                match self.member(via).node.propose(GROUP, b, Ack::All).await {
                    Ok(info) => {
                        end = info.last_offset.next();
                        break;
                    }
                    Err(ClusterError::NotLeader { .. }) if tokio::time::Instant::now() < deadline => {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        via = self.leader().await;
                    }
                    Err(e) => panic!("write through node {via}: {e}"),
                }
            }
        }
        (via, end)
    }

    pub fn member(&self, id: u64) -> &Member {
        self.members[(id - 1) as usize].as_ref().expect("running")
    }

    pub async fn leader(&self) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            for m in self.members.iter().flatten() {
                let s = m.handle.status.borrow().clone();
                if s.is_leader {
                    return m.node.id().get();
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader elected within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub async fn leader_other_than(&self, old: u64) -> u64 {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            for m in self.members.iter().flatten() {
                let s = m.handle.status.borrow().clone();
                if s.is_leader && m.node.id() != NodeId(old) {
                    return m.node.id().get();
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no new leader within 10 s");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// What a broker does for a replica that lost its term (`admin::
    /// term_floor`): the highest term among the other replicas it can
    /// reach, once every other one of the three answered. Returns whether a
    /// floor was given.
    pub fn raise_term_floors(&self) -> bool {
        let mut raised = false;
        for m in self.members.iter().flatten() {
            if !m.handle.status.borrow().awaiting_term {
                continue;
            }
            let me = m.node.id();
            let answers: Vec<u64> = self
                .members
                .iter()
                .flatten()
                .filter(|o| o.node.id() != me && self.net.linked(me, o.node.id()) && self.net.linked(o.node.id(), me))
                .map(|o| o.handle.status.borrow().term.get())
                .filter(|&t| t > 0)
                .collect();
            if answers.len() + 1 == self.members.len() {
                let floor = answers.into_iter().max().unwrap_or(0);
                m.node
                    .raise_term(GROUP, strand_storage::Term(floor))
                    .expect("raise term");
                raised = true;
            }
        }
        raised
    }

    /// Makes retention remove the start of the log on every running
    /// member but `lagger`, once each committed `end`.
    pub async fn compact_all_but(&self, lagger: u64, end: Offset) {
        let retention = LogConfig {
            retention_bytes: Some(64 * 1024),
            ..log_config()
        };
        for id in (1..=3).filter(|&i| i != lagger) {
            let m = self.member(id);
            wait_hw(&m.handle, end).await;
            m.log.write().set_config(retention.clone()).expect("config");
            let report = m.handle.log.compact(strand_storage::now_ms(), end).expect("compact");
            assert!(
                report.deleted_segments > 0,
                "node {id}: retention removed the log's start"
            );
        }
    }

    /// Stops node `id` abruptly (no state persisted beyond what Raft synced).
    pub fn kill(&mut self, id: u64) -> std::path::PathBuf {
        let m = self.members[(id - 1) as usize].take().expect("running");
        self.net.detach(NodeId(id));
        m.node.shutdown();
        m.dir
    }
}

/// Every record batch stored by `log` below `upper`, as raw bytes.
pub fn raw(log: &Arc<RwLock<PartitionLog>>, upper: Offset) -> Vec<u8> {
    let log = log.read();
    let mut out = Vec::new();
    let mut next = log.earliest();
    while next < upper {
        let bytes = log.read_bounded(next, 1 << 20, upper).expect("read");
        if bytes.is_empty() {
            break;
        }
        for b in batches(&bytes) {
            next = b.expect("valid").next_offset();
        }
        out.extend_from_slice(&bytes);
    }
    out
}

pub async fn wait_hw(h: &ReplicaHandle, at_least: Offset) {
    let mut rx = h.high_watermark.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|&hw| hw >= at_least))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "high watermark {} did not reach {at_least} in time: {:?}",
                *h.high_watermark.borrow(),
                h.status.borrow()
            )
        })
        .expect("group alive");
}

/// Fails if any of `ids` becomes leader within `window`.
pub async fn assert_no_leader(c: &Cluster, ids: &[u64], window: Duration) {
    let watchers = ids.iter().map(|&id| {
        let h = Arc::clone(&c.member(id).handle);
        Box::pin(async move {
            wait_status(&h, "a leadership", |s| s.is_leader).await;
            id
        })
    });
    if let Ok((id, _, _)) = tokio::time::timeout(window, futures::future::select_all(watchers)).await {
        panic!("node {id} must not become leader");
    }
}

pub async fn wait_status(h: &ReplicaHandle, what: &str, ok: impl Fn(&ReplicaStatus) -> bool) {
    let mut rx = h.status.subscribe();
    tokio::time::timeout(Duration::from_secs(10), rx.wait_for(|s| ok(s)))
        .await
        .unwrap_or_else(|_| panic!("timed out waiting for {what}: {:?}", h.status.borrow()))
        .expect("group alive");
}
