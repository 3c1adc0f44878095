//! `raft::Storage` over a partition's segment log: the partition log *is*
//! the Raft log, so a record batch is written to disk once.
//!
//! Mapping (DESIGN.md, "Replication"): Raft entry `i` is the stored batch
//! whose header says `raft_index = i`. An entry with records is the batch
//! itself, stamped by the leader (offsets, term, index, append time) before it
//! is proposed, so every replica stores identical bytes. An entry without
//! records (a leader's no-op, a configuration change) is a control batch that
//! takes no offset; its payload is one kind byte followed by the entry data,
//! and its stamp is deterministic (append time 0), so it too is identical on
//! every replica.
//!
//! Raft's hard state (term, vote, commit) and configuration live beside the
//! segments in `raft-state.json`, replaced atomically and fsynced whenever the
//! term, vote or configuration changes, before any message that depends on it
//! is sent. The commit index is written lazily (it can be recomputed; a stale
//! one is safe).
//!
//! Snapshots. Retention removes whole sealed segments from the front of the
//! log ([`RaftLog::compact`]), and the index and term of the last removed
//! entry are recorded durably first. A follower that needs an entry that is
//! gone gets a Raft snapshot whose data is the offset at which the leader's
//! retained log starts and the idempotent producers' state of everything
//! before it: installing it empties the follower's log and restarts it at
//! that offset with that state, then the leader streams its retained batches
//! (whole stored batches, up to 1 MiB per message). There is no other state
//! machine to copy: the log is the state, and what retention removed is gone
//! on every replica alike.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};
use serde::{Deserialize, Serialize};
use strand_storage::{BatchRef, Offset, PartitionLog, RaftIndex, Stamp, Term, control_batch};

use crate::error::{ClusterError, Result};
use crate::ids::NodeId;

/// Control-batch payload kinds (first byte).
const KIND_EMPTY: u8 = 0;
const KIND_CONF_CHANGE: u8 = 1;
const KIND_CONF_CHANGE_V2: u8 = 2;

const STATE_FILE: &str = "raft-state.json";

/// What `raft-state.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersistedState {
    /// Current term.
    pub term: Term,
    /// Vote in the current term (`NodeId(0)`: none, as raft-rs has it).
    pub vote: NodeId,
    /// Last known commit index (may lag).
    pub commit: RaftIndex,
    /// Voters of the group.
    pub voters: Vec<NodeId>,
    /// Learners of the group.
    pub learners: Vec<NodeId>,
    /// Last Raft index removed from the front of the log (by retention or by
    /// installing a snapshot); 0: nothing removed.
    #[serde(default)]
    pub snapshot_index: RaftIndex,
    /// Term of that entry.
    #[serde(default)]
    pub snapshot_term: Term,
    /// The replica may hold less than it once acknowledged (its disk was
    /// lost or damaged, or it is a fresh copy of a moved partition): it takes
    /// no part in elections until a leader elected without it has brought it
    /// up to date (see `Replica::recovery`). Kept across restarts until then.
    #[serde(default)]
    pub recovering: bool,
    /// The replica's term and vote were lost with its state (a wiped disk,
    /// a missing state file, a fresh copy of a moved group): it takes no
    /// message at all until it learned a term floor from its peers (see
    /// `Replica::await_term`). Kept across restarts until then.
    #[serde(default)]
    pub term_unknown: bool,
}

fn node_ids(ids: &[u64]) -> Vec<NodeId> {
    ids.iter().copied().map(NodeId).collect()
}

fn raw_ids(ids: &[NodeId]) -> Vec<u64> {
    ids.iter().map(|n| n.0).collect()
}

/// The Raft view of one partition log.
#[derive(Clone)]
pub struct RaftLog {
    log: Arc<RwLock<PartitionLog>>,
    state: Arc<Mutex<PersistedState>>,
    state_path: PathBuf,
}

impl std::fmt::Debug for RaftLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftLog").field("state_path", &self.state_path).finish()
    }
}

fn other(e: impl std::error::Error + Send + Sync + 'static) -> raft::Error {
    raft::Error::Store(RaftStorageError::Other(Box::new(e)))
}

fn write_state(path: &Path, s: &PersistedState) -> Result<()> {
    let bytes = serde_json::to_vec(s).map_err(|e| ClusterError::State {
        op: "encode",
        path: path.to_path_buf(),
        source: std::io::Error::other(e),
    })?;
    Ok(strand_storage::replace_file(path, &bytes)?)
}

impl RaftLog {
    /// Opens the Raft state of `log`. A partition without `raft-state.json`
    /// starts with `voters` as its configuration.
    pub fn open(log: Arc<RwLock<PartitionLog>>, voters: &[NodeId]) -> Result<Self> {
        let dir = log.read().dir().to_path_buf();
        let state_path = dir.join(STATE_FILE);
        let mut state: PersistedState = match std::fs::read(&state_path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ClusterError::Malformed {
                what: "raft-state.json",
                reason: e.to_string(),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut s = PersistedState {
                    voters: voters.to_vec(),
                    ..Default::default()
                };
                if log.read().last_raft_index()?.is_some() {
                    // Entries but no term or vote: whom it voted for is
                    // lost, so it must not vote before it is whole again,
                    // nor follow a leader before it knows the term.
                    tracing::warn!(path = %state_path.display(), "raft state missing beside a non-empty log: recovering");
                    s.recovering = true;
                    s.term_unknown = true;
                    write_state(&state_path, &s)?;
                }
                // A new, empty replica has nothing to remember yet: its file
                // is written with its first term or vote (before any message
                // of it leaves), and until then it opens the same way again.
                s
            }
            Err(source) => {
                return Err(ClusterError::State {
                    op: "read",
                    path: state_path,
                    source,
                });
            }
        };
        // The log is the truth; the state file may describe a log that was
        // moved aside or emptied (raft-rs panics on a snapshot index past the
        // log's first entry or a commit outside it).
        if let Some(first) = log.read().first_raft_index()?
            && first <= state.snapshot_index
        {
            tracing::warn!(
                path = %state_path.display(),
                first = %first,
                snapshot_index = %state.snapshot_index,
                "raft state says entries were removed that the log still holds: recovering from the log"
            );
            state.snapshot_index = RaftIndex(first.get().saturating_sub(1));
            state.snapshot_term = if state.snapshot_index == RaftIndex::ZERO {
                Term(0)
            } else {
                state.snapshot_term
            };
            state.recovering = true;
            write_state(&state_path, &state)?;
        }
        Ok(RaftLog {
            log,
            state: Arc::new(Mutex::new(state)),
            state_path,
        })
    }

    /// Marks the replica as recovering (or whole again), durably: a
    /// recovering replica that restarts is still recovering.
    pub fn set_recovering(&self, recovering: bool) -> Result<()> {
        let mut s = self.state();
        if s.recovering != recovering {
            s.recovering = recovering;
            write_state(&self.state_path, &s)?;
        }
        Ok(())
    }

    /// Records, durably, that the replica's term is unknown.
    pub fn mark_term_unknown(&self) -> Result<()> {
        let mut s = self.state();
        if !s.term_unknown {
            s.term_unknown = true;
            write_state(&self.state_path, &s)?;
        }
        Ok(())
    }

    /// Raises the stored term to at least `floor` (then with a vote for
    /// `me`, so it can never vote for another candidate in a term in which
    /// its lost self may have voted) and clears `term_unknown`, in one
    /// durable write. Returns the term and vote stored.
    pub fn apply_term_floor(&self, floor: Term, me: NodeId) -> Result<(Term, NodeId)> {
        let mut s = self.state();
        if floor > s.term {
            s.term = floor;
            s.vote = me;
        }
        s.term_unknown = false;
        write_state(&self.state_path, &s)?;
        Ok((s.term, s.vote))
    }

    /// The partition log.
    pub fn partition_log(&self) -> &Arc<RwLock<PartitionLog>> {
        &self.log
    }

    fn read_log(&self) -> RwLockReadGuard<'_, PartitionLog> {
        self.log.read()
    }

    fn write_log(&self) -> RwLockWriteGuard<'_, PartitionLog> {
        self.log.write()
    }

    fn state(&self) -> MutexGuard<'_, PersistedState> {
        self.state.lock()
    }

    /// A copy of the persisted state.
    pub fn persisted(&self) -> PersistedState {
        self.state().clone()
    }

    /// Records Raft's hard state; fsyncs the file when the term or vote
    /// changed (required before answering a vote or sending in a new term).
    pub fn set_hard_state(&self, hs: &HardState) -> Result<()> {
        if self.stage_hard_state(hs) {
            self.persist_state()?;
        }
        Ok(())
    }

    /// Records Raft's hard state in memory; `true` when the term or vote
    /// changed, so the caller must [`RaftLog::persist_state`] before it
    /// answers a vote or sends in the new term (the replication loop does
    /// that for many groups in parallel, with their log syncs).
    pub fn stage_hard_state(&self, hs: &HardState) -> bool {
        let mut s = self.state();
        let durable_change = s.term.0 != hs.term || s.vote.0 != hs.vote;
        s.term = Term(hs.term);
        s.vote = NodeId(hs.vote);
        s.commit = RaftIndex(hs.commit);
        durable_change
    }

    /// Records the last known commit index (persisted on the next durable
    /// state change or [`RaftLog::persist_state`]).
    pub fn set_commit(&self, commit: RaftIndex) {
        let mut s = self.state();
        s.commit = s.commit.max(commit);
    }

    /// Writes the state file now (for example at shutdown).
    pub fn persist_state(&self) -> Result<()> {
        let s = self.state().clone();
        write_state(&self.state_path, &s)
    }

    /// Records a new configuration, durably.
    pub fn set_conf_state(&self, cs: &ConfState) -> Result<()> {
        let mut s = self.state();
        s.voters = node_ids(&cs.voters);
        s.learners = node_ids(&cs.learners);
        write_state(&self.state_path, &s)
    }

    /// Stores entries handed over by Raft (from a `Ready`): first drops any
    /// stored suffix they replace, then appends each as a batch. Not synced:
    /// sync (see [`RaftLog::sync_point`]) before sending messages that
    /// acknowledge them.
    ///
    /// Every data entry reached Raft validated, CRC included: a leader's own
    /// proposals are [`strand_storage::RecordBatch`]es, and a follower checks
    /// each entry of an append message when it receives it
    /// ([`validate_received`]). So only the header is read here.
    pub fn append(&self, entries: &[Entry]) -> Result<()> {
        let mut log = self.write_log();
        // Entries already stored with the same term are the same entries
        // (Raft's log matching) and stay: a catch-up may have stored them
        // behind raft-rs's back while it held them in memory. Only a real
        // conflict truncates, from the first entry that differs.
        let mut entries = entries;
        if let Some(last) = log.last_raft_index()? {
            while let Some(e) = entries.first() {
                let index = RaftIndex(e.index);
                if index > last || log.raft_term(index)? != Some(Term(e.term)) {
                    break;
                }
                entries = &entries[1..];
            }
            if let Some(first) = entries.first()
                && RaftIndex(first.index) <= last
            {
                log.truncate_from_raft_index(RaftIndex(first.index))?;
            }
        }
        for e in entries {
            let kind = match e.get_entry_type() {
                EntryType::EntryNormal if !e.data.is_empty() => None,
                EntryType::EntryNormal => Some(KIND_EMPTY),
                EntryType::EntryConfChange => Some(KIND_CONF_CHANGE),
                EntryType::EntryConfChangeV2 => Some(KIND_CONF_CHANGE_V2),
            };
            match kind {
                None => {
                    let b = stamped_entry(e)?;
                    log.append_replicated(b)?;
                }
                Some(kind) => {
                    let mut payload = Vec::with_capacity(1 + e.data.len());
                    payload.push(kind);
                    payload.extend_from_slice(&e.data);
                    let stamp = Stamp {
                        term: Term(e.term),
                        raft_index: RaftIndex(e.index),
                        append_time_ms: 0,
                    };
                    log.append_entry(&control_batch(&payload, 0), stamp)?;
                }
            }
        }
        Ok(())
    }

    /// Applies retention to committed segments (below `upper`, the high
    /// watermark) and records the last removed entry before removing it, so
    /// `term(first_index - 1)` stays answerable after a crash.
    pub fn compact(&self, now_ms: i64, upper: Offset) -> Result<strand_storage::RetentionReport> {
        let mut st = self.state();
        // Bounded by the commit index too: a sealed segment below the high
        // watermark may still end with uncommitted entries that take no
        // offset (a new leader's no-op, a configuration change).
        let plan = self.read_log().plan_retention(now_ms, upper, Some(st.commit))?;
        if let Some((index, term)) = plan.last_deleted {
            st.snapshot_index = st.snapshot_index.max(index);
            st.snapshot_term = if st.snapshot_index == index {
                term
            } else {
                st.snapshot_term
            };
            write_state(&self.state_path, &st)?;
        }
        self.write_log().delete_oldest_segments(plan.deleted_segments)?;
        Ok(plan)
    }

    /// Installs a leader's snapshot: the log restarts empty at the offset
    /// carried in the snapshot data, Raft's view starts after `index`.
    pub fn apply_snapshot(&self, snap: &Snapshot) -> Result<()> {
        let meta = snap.get_metadata();
        let (offset, producers) = decode_snapshot(&snap.data)?;
        let mut st = self.state();
        self.write_log().reset_with_producers(offset, producers)?;
        st.snapshot_index = RaftIndex(meta.index);
        st.snapshot_term = Term(meta.term);
        st.commit = st.commit.max(RaftIndex(meta.index));
        st.voters = node_ids(&meta.get_conf_state().voters);
        st.learners = node_ids(&meta.get_conf_state().learners);
        write_state(&self.state_path, &st)?;
        tracing::info!(
            index = meta.index,
            term = meta.term,
            %offset,
            "installed snapshot: log restarts at offset"
        );
        Ok(())
    }

    fn first_index_locked(&self, st: &PersistedState) -> raft::Result<RaftIndex> {
        let after_snapshot = st.snapshot_index.next();
        let stored = self.read_log().first_raft_index().map_err(other)?;
        Ok(stored.unwrap_or(after_snapshot).max(after_snapshot))
    }

    /// A handle to fsync the appended entries without holding the log.
    pub fn sync_point(&self) -> strand_storage::SyncPoint {
        self.read_log().sync_point()
    }

    /// Records that `point` was fsynced.
    pub fn mark_synced(&self, point: &strand_storage::SyncPoint) {
        self.write_log().mark_synced(point);
    }

    /// Records a failed fsync: the log takes no more writes.
    pub fn mark_failed(&self, e: &ClusterError) {
        let err = match e {
            ClusterError::Storage(s) => strand_storage::StorageError::Failed {
                dir: self.state_path.clone(),
                reason: s.to_string(),
            },
            other => strand_storage::StorageError::Failed {
                dir: self.state_path.clone(),
                reason: other.to_string(),
            },
        };
        self.write_log().mark_failed(&err);
    }

    /// The offset after Raft entry `index` (0 for index 0).
    pub fn next_offset_after(&self, index: RaftIndex) -> Result<Offset> {
        if index <= self.state().snapshot_index {
            return Ok(self.read_log().earliest());
        }
        let log = self.read_log();
        match log.raft_entry(index)? {
            // `raft_entry` checked the stored batch's CRC.
            Some((bytes, _)) => Ok(trusted(&bytes, "stored entry")?.next_offset()),
            None => Ok(log.latest()),
        }
    }
}

/// Checks the data entries of a message a follower received (an append
/// from its leader) once, CRC included, before Raft sees them: from then on
/// the entries are trusted ([`RaftLog::append`] reads only headers). A data
/// entry must be the batch the leader stamped for that index and term.
///
/// # Errors
/// `Malformed` naming the first bad entry.
pub fn validate_received(m: &raft::eraftpb::Message) -> Result<()> {
    for e in m.get_entries() {
        if e.get_entry_type() != EntryType::EntryNormal || e.data.is_empty() {
            continue;
        }
        let b = BatchRef::validate(&e.data).map_err(|err| ClusterError::Malformed {
            what: "received entry",
            reason: format!("entry {}: {err}", e.index),
        })?;
        check_stamp(&b, e)?;
    }
    Ok(())
}

fn check_stamp(b: &BatchRef<'_>, e: &Entry) -> Result<()> {
    if b.raft_index() != RaftIndex(e.index) || b.term() != Term(e.term) {
        return Err(ClusterError::Malformed {
            what: "entry",
            reason: format!(
                "stamped as entry {} term {} but carried by entry {} term {}",
                b.raft_index(),
                b.term(),
                e.index,
                e.term
            ),
        });
    }
    Ok(())
}

/// The batch a data entry carries, read as validated before (see
/// [`RaftLog::append`]).
fn stamped_entry(e: &Entry) -> Result<BatchRef<'_>> {
    let b = trusted(&e.data, "entry")?;
    check_stamp(&b, e)?;
    Ok(b)
}

/// A header view of bytes that were validated when they entered Raft or
/// were read from the log.
pub(crate) fn trusted<'a>(bytes: &'a [u8], what: &'static str) -> Result<BatchRef<'a>> {
    BatchRef::trusted(bytes).map_err(|e| ClusterError::Malformed {
        what,
        reason: e.to_string(),
    })
}

/// A Raft snapshot's data: the offset the leader's log starts at, then the
/// idempotent producers' state of everything before it (absent from a
/// leader that predates producer state: then empty).
fn decode_snapshot(data: &[u8]) -> Result<(Offset, strand_storage::ProducerStates)> {
    let malformed = |reason: String| ClusterError::Malformed {
        what: "snapshot",
        reason,
    };
    let head: [u8; 8] = data
        .get(..8)
        .and_then(|h| h.try_into().ok())
        .ok_or_else(|| malformed(format!("{} bytes of data, expected at least 8", data.len())))?;
    let offset = Offset(u64::from_le_bytes(head));
    if data.len() == 8 {
        return Ok((offset, strand_storage::ProducerStates::new()));
    }
    let (at, producers) =
        strand_storage::decode_producer_snapshot(&data[8..]).map_err(|r| malformed(format!("producer state: {r}")))?;
    if at != offset {
        return Err(malformed(format!(
            "producer state at offset {at}, log starts at {offset}"
        )));
    }
    Ok((offset, producers))
}

/// Converts a stored batch (CRC-checked by the read) into the Raft entry it
/// is.
fn to_entry(bytes: Bytes, term: Term) -> raft::Result<Entry> {
    let b = BatchRef::trusted(&bytes).map_err(other)?;
    let mut e = Entry {
        index: b.raft_index().get(),
        term: term.get(),
        ..Default::default()
    };
    if b.is_control() {
        let payload = b.records_section();
        let (kind, data) = payload
            .split_first()
            .ok_or_else(|| other(std::io::Error::other("empty control batch")))?;
        let data_start = bytes.len() - data.len();
        e.set_entry_type(match *kind {
            KIND_CONF_CHANGE => EntryType::EntryConfChange,
            KIND_CONF_CHANGE_V2 => EntryType::EntryConfChangeV2,
            _ => EntryType::EntryNormal,
        });
        e.data = bytes.slice(data_start..);
    } else {
        e.set_entry_type(EntryType::EntryNormal);
        e.data = bytes;
    }
    Ok(e)
}

impl raft::Storage for RaftLog {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let s = self.state();
        // Never claim a commit beyond what is stored, nor below what raft-rs
        // takes as committed (the entry before the first): raft-rs panics
        // on either, and one damaged log must not stop the node's loop.
        let last = self
            .read_log()
            .last_raft_index()
            .map_err(other)?
            .unwrap_or(s.snapshot_index);
        let floor = RaftIndex(self.first_index_locked(&s)?.get().saturating_sub(1));
        let hs = HardState {
            term: s.term.get(),
            vote: s.vote.get(),
            commit: s.commit.min(last).max(floor).get(),
            ..Default::default()
        };
        let cs = ConfState {
            voters: raw_ids(&s.voters),
            learners: raw_ids(&s.learners),
            ..Default::default()
        };
        Ok(RaftState::new(hs, cs))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max = max_size.into().unwrap_or(u64::MAX);
        let st = self.state();
        if low < self.first_index_locked(&st)?.get() {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        let stored = self
            .read_log()
            .raft_entries(RaftIndex(low), RaftIndex(high), max)
            .map_err(other)?;
        if stored.is_empty() && low < high {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        stored.into_iter().map(|(bytes, term)| to_entry(bytes, term)).collect()
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let st = self.state();
        if idx == 0 {
            return Ok(0);
        }
        let idx = RaftIndex(idx);
        if idx == st.snapshot_index {
            return Ok(st.snapshot_term.get());
        }
        match self.read_log().raft_term(idx).map_err(other)? {
            Some(t) => Ok(t.get()),
            None => {
                let first = self.first_index_locked(&st)?;
                if idx < first {
                    Err(raft::Error::Store(RaftStorageError::Compacted))
                } else {
                    Err(raft::Error::Store(RaftStorageError::Unavailable))
                }
            }
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        let st = self.state();
        self.first_index_locked(&st).map(RaftIndex::get)
    }

    fn last_index(&self) -> raft::Result<u64> {
        let st = self.state();
        Ok(self
            .read_log()
            .last_raft_index()
            .map_err(other)?
            .unwrap_or(st.snapshot_index)
            .get())
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let st = self.state();
        if st.snapshot_index == RaftIndex::ZERO {
            // Nothing was ever removed: the follower can be sent entries.
            return Err(raft::Error::Store(RaftStorageError::SnapshotTemporarilyUnavailable));
        }
        let (offset, producers) = {
            let log = self.read_log();
            (log.earliest(), log.producer_snapshot_at_earliest())
        };
        let mut data = Vec::with_capacity(8 + producers.len());
        data.extend_from_slice(&offset.get().to_le_bytes());
        data.extend_from_slice(&producers);
        let mut snap = Snapshot {
            data: data.into(),
            ..Default::default()
        };
        let meta = snap.mut_metadata();
        meta.index = st.snapshot_index.get();
        meta.term = st.snapshot_term.get();
        meta.mut_conf_state().voters = raw_ids(&st.voters);
        meta.mut_conf_state().learners = raw_ids(&st.learners);
        Ok(snap)
    }
}
