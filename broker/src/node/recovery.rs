//! Opening a replica's log, and quarantining one that is damaged.
//!
//! A log that refuses to open because it is damaged is moved aside whole
//! (kept for an operator) and replaced by an empty one whose Raft state says
//! *recovering*: the replica then takes no part in elections until a leader
//! elected without it has brought it up to date (by Raft's appends, a
//! snapshot if the leader compacted, or the catch-up stream). Nothing here
//! has to know how far it had got: a leader elected without it holds every
//! committed entry.

use std::path::Path;

use strand_cluster::PersistedState;
use strand_storage::{LogConfig, PartitionLog};

use crate::error::{BrokerError, Result};
use crate::topic::TopicUuid;

/// File in a partition directory naming the topic it belongs to: the
/// cluster-internal id, then the id clients see (`<id> <uuid>`; directories
/// written before topics had a uuid hold the internal id alone).
pub(super) const TOPIC_ID_FILE: &str = "topic-id";

/// The Raft state file beside a replica's segments (`strand_cluster`).
const STATE_FILE: &str = "raft-state.json";

/// The internal topic id a partition directory's marker names, if it has a
/// readable one.
pub(super) fn marked_topic_id(dir: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join(TOPIC_ID_FILE)).ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// Opens the log of a partition replica of `topic`, clearing a directory
/// left by an older topic of the same name. Returns whether the log was
/// damaged and quarantined (the replica must recover).
pub(super) fn open_partition_log(
    dir: &Path,
    topic: (u64, TopicUuid),
    config: LogConfig,
    replicated: bool,
) -> Result<(PartitionLog, bool)> {
    let (topic_id, uuid) = topic;
    let marker = dir.join(TOPIC_ID_FILE);
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BrokerError::Metadata { op, path, source }
    };
    match marked_topic_id(dir) {
        Some(id) if id == topic_id => {}
        Some(_) => {
            tracing::warn!(dir = %dir.display(), topic_id = %uuid, "removing the data of an older topic with this name");
            std::fs::remove_dir_all(dir).map_err(io("remove stale partition", dir))?;
        }
        // An empty directory is one `reconcile` made for a new replica.
        None if dir.exists() && !is_empty_dir(dir) => {
            tracing::warn!(dir = %dir.display(), "removing a partition directory without a topic id");
            std::fs::remove_dir_all(dir).map_err(io("remove stale partition", dir))?;
        }
        None => {}
    }
    let wanted = format!("{topic_id} {uuid}\n");
    let fresh = !dir.exists() || is_empty_dir(dir);
    if fresh {
        // A new replica: the marker is written in place before the log, whose
        // first segment's directory sync makes both names durable. (A torn
        // marker can only come from a crash before any record was stored.)
        write_new_marker(dir, &marker, wanted.as_bytes())?;
    }
    let (log, quarantined) = open_or_quarantine(dir, config, replicated)?;
    if !fresh && std::fs::read_to_string(&marker).ok().as_deref() != Some(wanted.as_str()) {
        strand_storage::replace_file(&marker, wanted.as_bytes())?;
    }
    Ok((log, quarantined))
}

fn write_new_marker(dir: &Path, marker: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let io = |op: &'static str| {
        let path = marker.to_path_buf();
        move |source| BrokerError::Metadata { op, path, source }
    };
    if !dir.exists() {
        std::fs::create_dir_all(dir).map_err(io("create partition directory"))?;
        if let Some(parent) = dir.parent() {
            strand_storage::sync_dir(parent)?;
        }
    }
    let mut f = std::fs::File::create(marker).map_err(io("create topic id marker"))?;
    f.write_all(contents).map_err(io("write topic id marker"))?;
    f.sync_all().map_err(io("fsync topic id marker"))
}

fn is_empty_dir(dir: &Path) -> bool {
    std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none())
}

/// Creates the directories of new replicas, then fsyncs `data_dir` once: the
/// new names must survive a power loss, and one sync of a directory holding
/// thousands of partitions costs as much as one per partition would.
pub(super) fn create_partition_dirs(data_dir: &Path, dirs: &[std::path::PathBuf]) -> Result<()> {
    let mut created = false;
    for dir in dirs {
        match std::fs::create_dir(dir) {
            Ok(()) => created = true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(BrokerError::Metadata {
                    op: "create partition directory",
                    path: dir.clone(),
                    source,
                });
            }
        }
    }
    if created {
        strand_storage::sync_dir(data_dir)?;
    }
    Ok(())
}

/// Opens a replica's log. A log that refuses to open because it is damaged
/// is moved aside whole (`<dir>.corrupt-<ms>`, kept for an operator) and
/// replaced by an empty one; its Raft state keeps the term, vote and
/// configuration and says *recovering* (nothing removed, nothing committed
/// yet). Returns whether that happened.
///
/// A replica without peers (replication factor 1) has nobody to recover
/// from: its damaged log is an error, never silently emptied.
pub(super) fn open_or_quarantine(dir: &Path, config: LogConfig, replicated: bool) -> Result<(PartitionLog, bool)> {
    let err = match PartitionLog::open(dir, config.clone()) {
        Ok(log) => return Ok((log, false)),
        Err(e @ strand_storage::StorageError::Corrupt { .. }) if replicated => e,
        Err(e) => return Err(e.into()),
    };
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BrokerError::Metadata { op, path, source }
    };
    let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or("partition");
    let aside = dir.with_file_name(format!("{name}.corrupt-{}", strand_storage::now_ms()));
    tracing::error!(dir = %dir.display(), moved_to = %aside.display(), error = %err,
        "damaged replica log moved aside; the replica recovers it from the other replicas and does not vote meanwhile");
    let old: PersistedState = std::fs::read(dir.join(STATE_FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default();
    strand_storage::rename_durably(dir, &aside)?;
    std::fs::create_dir_all(dir).map_err(io("create dir", dir))?;
    let state = PersistedState {
        // Term and vote stay: it must not vote twice in a term it voted in.
        term: old.term,
        vote: old.vote,
        voters: old.voters,
        learners: old.learners,
        recovering: true,
        ..PersistedState::default()
    };
    let bytes = serde_json::to_vec(&state).map_err(|e| BrokerError::Metadata {
        op: "encode raft state",
        path: dir.join(STATE_FILE),
        source: std::io::Error::other(e),
    })?;
    strand_storage::replace_file(&dir.join(STATE_FILE), &bytes)?;
    let marker = aside.join(TOPIC_ID_FILE);
    if let Ok(id) = std::fs::read(&marker) {
        strand_storage::replace_file(&dir.join(TOPIC_ID_FILE), &id)?;
    }
    let log = PartitionLog::open(dir, config)?;
    Ok((log, true))
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use strand_storage::{BatchBuilder, Compression, NewRecord, RaftIndex, RecordBatch, Stamp, Term};

    use super::*;

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 4096,
            max_batch_bytes: 1024,
            index_interval_bytes: 256,
            ..LogConfig::default()
        }
    }

    /// A log holding Raft entries 1..=n, one record each, rolled into
    /// several segments.
    fn write_entries(dir: &Path, n: u64) {
        let mut log = PartitionLog::open(dir, config()).expect("open");
        for i in 1..=n {
            let mut b = BatchBuilder::new(Compression::None);
            b.push(&NewRecord {
                timestamp_ms: 1,
                key: None,
                value: Some(&[0u8; 200]),
                headers: &[],
            });
            let batch = RecordBatch::validate(Bytes::from(b.build().expect("build"))).expect("valid");
            let stamp = Stamp {
                term: Term(1),
                raft_index: RaftIndex(i),
                append_time_ms: 1,
            };
            let stamped = batch.stamp(log.latest(), &stamp);
            log.append_replicated(stamped.view()).expect("append");
        }
        log.close().expect("close");
    }

    #[test]
    fn a_directory_of_another_topic_with_the_same_name_is_cleared() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("t-0");
        let (log, quarantined) = open_partition_log(&dir, (1, TopicUuid::legacy(1)), config(), true).expect("open");
        assert!(!quarantined);
        drop(log);
        write_entries(&dir, 5);
        let (log, _) = open_partition_log(&dir, (1, TopicUuid::legacy(1)), config(), true).expect("reopen, same topic");
        assert_eq!(
            log.last_raft_index().expect("read"),
            Some(RaftIndex(5)),
            "same topic keeps its data"
        );
        drop(log);
        let (log, quarantined) =
            open_partition_log(&dir, (2, TopicUuid::legacy(2)), config(), true).expect("open as a new topic");
        assert!(!quarantined);
        assert_eq!(
            log.last_raft_index().expect("read"),
            None,
            "an older topic's data is gone"
        );
    }

    #[test]
    fn a_damaged_replicated_log_is_moved_aside_and_recovers_but_an_unreplicated_one_is_an_error() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("t-0");
        write_entries(&dir, 60);
        let first = std::fs::read_dir(&dir)
            .expect("list")
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .min()
            .expect("a segment");
        // Damage a sealed segment: the log refuses to open.
        let mut bytes = std::fs::read(&first).expect("read segment");
        let middle = bytes.len() / 2;
        bytes[middle] ^= 0xff;
        std::fs::write(&first, bytes).expect("write segment");
        assert!(matches!(
            open_or_quarantine(&dir, config(), false),
            Err(BrokerError::Storage(strand_storage::StorageError::Corrupt { .. }))
        ));
        let state = PersistedState {
            term: Term(4),
            vote: strand_cluster::NodeId(2),
            commit: RaftIndex(60),
            voters: vec![strand_cluster::NodeId(1), strand_cluster::NodeId(2)],
            snapshot_index: RaftIndex(10),
            snapshot_term: Term(1),
            ..PersistedState::default()
        };
        std::fs::write(dir.join(STATE_FILE), serde_json::to_vec(&state).expect("encode")).expect("write state");
        let (log, quarantined) = open_or_quarantine(&dir, config(), true).expect("quarantined");
        assert!(quarantined);
        assert_eq!(log.last_raft_index().expect("read"), None, "starts empty");
        let kept: PersistedState =
            serde_json::from_slice(&std::fs::read(dir.join(STATE_FILE)).expect("state")).expect("decode");
        assert_eq!(
            kept,
            PersistedState {
                term: Term(4),
                vote: strand_cluster::NodeId(2),
                voters: state.voters.clone(),
                recovering: true,
                ..PersistedState::default()
            },
            "term, vote and voters kept; nothing removed or committed; recovering"
        );
        let aside = std::fs::read_dir(tmp.path())
            .expect("list")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("t-0.corrupt-"));
        assert!(aside, "the damaged files are kept for an operator");
    }
}
