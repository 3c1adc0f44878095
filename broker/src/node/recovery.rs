//! Opening a replica's log, and recovering one that is damaged.
//!
//! A log that refuses to open because it is damaged is moved aside whole
//! (kept for an operator) and replaced by an empty one that keeps the Raft
//! state; the replica then re-fetches the committed entries from its peers
//! and takes part in no election until it has them back.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use strand_cluster::{NodeId, RaftGroupId};
use strand_storage::{LogConfig, PartitionLog, RaftIndex};

use super::Node;
use crate::error::{BrokerError, Result};

/// File in a partition directory naming the topic id it belongs to.
const TOPIC_ID_FILE: &str = "topic-id";

/// Opens the log of a partition replica for `topic_id`, clearing a
/// directory left by an older topic of the same name.
pub(super) fn open_partition_log(
    dir: &Path,
    topic_id: u64,
    config: LogConfig,
    replicated: bool,
) -> Result<(PartitionLog, Option<RaftIndex>)> {
    let marker = dir.join(TOPIC_ID_FILE);
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| BrokerError::Metadata { op, path, source }
    };
    match std::fs::read_to_string(&marker) {
        Ok(s) if s.trim() == topic_id.to_string() => {}
        Ok(_) => {
            tracing::warn!(dir = %dir.display(), topic_id, "removing the data of an older topic with this name");
            std::fs::remove_dir_all(dir).map_err(io("remove stale partition", dir))?;
        }
        Err(_) if dir.exists() => {
            tracing::warn!(dir = %dir.display(), "removing a partition directory without a topic id");
            std::fs::remove_dir_all(dir).map_err(io("remove stale partition", dir))?;
        }
        Err(_) => {}
    }
    let (log, recover_to) = open_or_quarantine(dir, config, replicated)?;
    if !marker.exists() {
        std::fs::write(&marker, topic_id.to_string()).map_err(io("write topic id", &marker))?;
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync dir", dir))?;
    }
    Ok((log, recover_to))
}

/// Opens a replica's log. A log that refuses to open because it is damaged
/// is moved aside whole (`<dir>.corrupt-<ms>`, kept for an operator) and
/// replaced by an empty one that keeps the Raft state; the Raft index the
/// replica must re-fetch up to before it may vote again is returned (the
/// higher of its persisted commit index and the last entry it can still find
/// in the damaged files).
///
/// A replica without peers (replication factor 1) has nobody to re-fetch
/// from: its damaged log is an error, never silently emptied.
pub(super) fn open_or_quarantine(
    dir: &Path,
    config: LogConfig,
    replicated: bool,
) -> Result<(PartitionLog, Option<RaftIndex>)> {
    let err = match PartitionLog::open(dir, config.clone()) {
        Ok(log) => return Ok((log, None)),
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
        "damaged replica log moved aside; re-fetching it from the other replicas");
    let damaged_last = PartitionLog::open(
        dir,
        LogConfig {
            verify_sealed_on_open: false,
            ..config.clone()
        },
    )
    .ok()
    .and_then(|l| l.last_raft_index().ok().flatten())
    .unwrap_or_default();
    strand_storage::rename_durably(dir, &aside)?;
    std::fs::create_dir_all(dir).map_err(io("create dir", dir))?;
    let mut commit = RaftIndex::ZERO;
    for f in ["raft-state.json", TOPIC_ID_FILE] {
        let from = aside.join(f);
        if from.exists() {
            let to = dir.join(f);
            std::fs::copy(&from, &to).map_err(io("copy raft state", &from))?;
            std::fs::File::open(&to)
                .and_then(|c| c.sync_all())
                .map_err(io("fsync", &to))?;
        }
    }
    if let Ok(bytes) = std::fs::read(dir.join("raft-state.json"))
        && let Ok(state) = serde_json::from_slice::<strand_cluster::PersistedState>(&bytes)
    {
        commit = state.commit;
    }
    // The new directory's entries, then the parent's (the rename and the
    // new directory): a power loss must not bring the damaged log back.
    for d in [Some(dir), dir.parent()].into_iter().flatten() {
        std::fs::File::open(d)
            .and_then(|f| f.sync_all())
            .map_err(io("fsync dir", d))?;
    }
    let log = PartitionLog::open(dir, config)?;
    Ok((log, Some(commit.max(damaged_last))))
}

/// Re-fetches the committed entries of `group` from the other replicas into
/// an emptied log, before the replica joins its group. Returns the index the
/// replica must still reach before it may vote (`None`: it is whole again).
pub(super) async fn refetch(
    node: &Node,
    group: RaftGroupId,
    replicas: &[NodeId],
    log: &Arc<RwLock<PartitionLog>>,
    target: RaftIndex,
) -> Option<RaftIndex> {
    use strand_proto::v1::{ReadLogRequest, peer_client::PeerClient};
    let peers: Vec<String> = replicas
        .iter()
        .filter(|&&r| r != node.id)
        .filter_map(|r| node.addr_of(*r))
        .collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let max = node.config.limits.max_message_bytes;
    let mut next = log
        .read()
        .last_raft_index()
        .ok()
        .flatten()
        .map_or(RaftIndex(1), RaftIndex::next);
    'peers: while tokio::time::Instant::now() < deadline {
        for addr in &peers {
            let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{addr}")) else {
                continue;
            };
            let Ok(channel) = endpoint
                .connect_timeout(Duration::from_secs(1))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
            else {
                continue;
            };
            let mut client = PeerClient::new(channel)
                .max_decoding_message_size(max)
                .max_encoding_message_size(max);
            while tokio::time::Instant::now() < deadline {
                let req = ReadLogRequest {
                    cluster_id: node.cluster_id.clone(),
                    group: group.get(),
                    from_index: next.get(),
                    max_bytes: (max / 2) as u32,
                    from: node.id.get(),
                };
                let Ok(resp) = client.read_log(req).await else { break };
                let resp = resp.into_inner();
                if resp.batches.is_empty() {
                    let commit = RaftIndex(resp.commit);
                    if next > commit.min(target) || next > target {
                        break 'peers;
                    }
                    break;
                }
                let mut l = log.write();
                // `batches` checks each batch's CRC: bytes from a peer.
                for b in strand_storage::batches(&resp.batches) {
                    let appended = b
                        .ok()
                        .filter(|b| b.raft_index() == next)
                        .map(|b| l.append_replicated(b));
                    match appended {
                        Some(Ok(_)) => next = next.next(),
                        other => {
                            tracing::warn!(peer = %addr, ?other, "re-fetch got an unexpected entry; trying elsewhere");
                            break;
                        }
                    }
                }
                if let Err(e) = l.flush() {
                    tracing::error!(error = %e, "cannot sync the re-fetched log");
                    return Some(target);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let have = RaftIndex(next.get().saturating_sub(1));
    tracing::info!(
        re_fetched_up_to = %have,
        %target,
        "re-fetched a damaged log from the other replicas"
    );
    (have < target).then_some(target)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use strand_storage::{BatchBuilder, Compression, NewRecord, RecordBatch, Stamp, Term};

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
        let (log, recover) = open_partition_log(&dir, 1, config(), true).expect("open");
        assert!(recover.is_none());
        drop(log);
        write_entries(&dir, 5);
        let (log, _) = open_partition_log(&dir, 1, config(), true).expect("reopen, same topic");
        assert_eq!(
            log.last_raft_index().expect("read"),
            Some(RaftIndex(5)),
            "same topic keeps its data"
        );
        drop(log);
        let (log, recover) = open_partition_log(&dir, 2, config(), true).expect("open as a new topic");
        assert!(recover.is_none());
        assert_eq!(
            log.last_raft_index().expect("read"),
            None,
            "an older topic's data is gone"
        );
    }

    #[test]
    fn a_damaged_replicated_log_is_moved_aside_and_must_be_refetched_but_an_unreplicated_one_is_an_error() {
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
        let (log, recover) = open_or_quarantine(&dir, config(), true).expect("quarantined");
        assert_eq!(log.last_raft_index().expect("read"), None, "starts empty");
        assert_eq!(
            recover,
            Some(RaftIndex(60)),
            "re-fetch up to the last entry it still had"
        );
        let aside = std::fs::read_dir(tmp.path())
            .expect("list")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("t-0.corrupt-"));
        assert!(aside, "the damaged files are kept for an operator");
    }
}
