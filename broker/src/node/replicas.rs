//! Hosting the partition replicas the metadata assigns to this node.
//!
//! [`plan`] decides, from the applied metadata and what is hosted now, which
//! replicas to stop (their topic was deleted or re-created, or the replica
//! moved away) and which to start; [`Node::reconcile`] carries it out.
//! Stopped replicas' directories are deleted.
//!
//! A node hosts partition replicas only once the cluster registered its data
//! directory (its incarnation), so a replica whose directory is missing is
//! known to be new, or known to have possibly existed on a lost disk: then
//! it starts *recovering* (no votes until a leader brought it up to date).
//! So does a damaged log moved aside, and a fresh copy of a moved partition
//! (it starts from the configuration its group was created with).
//!
//! Deleting a topic finishes also on a broker that was down meanwhile: the
//! first reconcile after registration removes every partition directory
//! whose topic id the applied metadata shows was deleted ([`orphans`]), so
//! an old topic's data is never served, replicated or mistaken for a new
//! topic of the same name.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use parking_lot::RwLock;
use strand_cluster::{NewReplica, NodeId, RaftGroupId};

use super::recovery::{create_partition_dirs, marked_topic_id, open_partition_log};
use super::{Node, ReplicaKey};
use crate::blocking::run_blocking;
use crate::controller::{MetadataState, TopicState};
use crate::error::{BrokerError, Result};
use crate::partition::Partition;
use crate::topic;

/// Raft's state file in a partition directory (`strand_cluster`): present
/// once the replica was ever hosted.
const RAFT_STATE_FILE: &str = "raft-state.json";

pub(super) fn partition_dir(data_dir: &Path, topic: &str, partition: u32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

/// Replica logs opened at once by one reconcile.
const STARTS_IN_FLIGHT: usize = 128;

/// A replica whose log is open, about to be hosted.
struct OpenedReplica<'m> {
    topic: &'m TopicState,
    partition: u32,
    /// The brokers hosting it (current replicas, then a move's target).
    replicas: Vec<NodeId>,
    log: strand_storage::PartitionLog,
    /// New here and never hosted: the preferred leader campaigns at once.
    fresh: bool,
    recovering: bool,
}

/// One damaged partition must not take the others down: it stays offline
/// (and says why) while the rest are served.
fn offline(topic: &str, partition: u32, e: &BrokerError) {
    tracing::error!(topic, partition, error = %e, "partition replica offline");
}

/// What reconciling changes.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReconcilePlan {
    /// Hosted replicas to stop and delete.
    pub stop: Vec<ReplicaKey>,
    /// Replicas to start: key, Raft group and the brokers hosting it.
    pub start: Vec<(ReplicaKey, RaftGroupId, Vec<NodeId>)>,
}

/// Compares what `me` should host under `meta` with what it hosts (`hosted`:
/// key → Raft group). A hosted replica whose group differs belongs to an
/// older topic of the same name: it is stopped, and the new one started.
pub fn plan(meta: &MetadataState, me: NodeId, hosted: &BTreeMap<ReplicaKey, RaftGroupId>) -> ReconcilePlan {
    let mut wanted: BTreeMap<ReplicaKey, (RaftGroupId, Vec<NodeId>)> = BTreeMap::new();
    for t in meta.topics.values() {
        for p in 0..t.assignment.len() as u32 {
            let hosts = t.hosts_of(p);
            if hosts.contains(&me) {
                wanted.insert((t.meta.name.clone(), p), (t.raft_group(p), hosts));
            }
        }
    }
    let mut out = ReconcilePlan::default();
    for (key, group) in hosted {
        if wanted.get(key).is_none_or(|(g, _)| g != group) {
            out.stop.push(key.clone());
        }
    }
    for (key, (group, hosts)) in wanted {
        if hosted.get(&key) != Some(&group) {
            out.start.push((key, group, hosts));
        }
    }
    out
}

/// Partition directories under `data_dir` whose topic the metadata shows
/// was deleted: their marker names a topic id below the next one to be
/// handed out (so its creation was applied) that no topic has any more.
/// That includes a deleted topic's damaged logs moved aside; directories
/// without a readable marker (the controller's) are not this sweep's.
pub fn orphans(data_dir: &Path, meta: &MetadataState) -> Vec<PathBuf> {
    let live: std::collections::BTreeSet<u64> = meta.topics.values().map(|t| t.id).collect();
    let Ok(entries) = std::fs::read_dir(data_dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|d| d.is_dir())
        .filter(|d| marked_topic_id(d).is_some_and(|id| id < meta.allocate_topic_id() && !live.contains(&id)))
        .collect();
    out.sort();
    out
}

fn remove_orphans(data_dir: &Path, meta: &MetadataState) {
    for dir in orphans(data_dir, meta) {
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {
                tracing::info!(dir = %dir.display(), "removed the partition of a topic deleted while this broker was away")
            }
            Err(e) => tracing::warn!(dir = %dir.display(), error = %e, "could not remove a deleted topic's partition"),
        }
    }
}

impl Node {
    /// Starts replicas this node should host and stops those of deleted
    /// topics (or that moved away).
    pub(super) async fn reconcile(self: &Arc<Self>) -> Result<()> {
        let meta = self.metadata();
        let hosted: BTreeMap<ReplicaKey, RaftGroupId> = self
            .replicas
            .read()
            .iter()
            .map(|(k, p)| (k.clone(), p.raft_group()))
            .collect();
        let mut plan = plan(&meta, self.id, &hosted);
        let registered = meta.registered_as(self.id, &self.incarnation);
        if registered && !self.swept.swap(true, std::sync::atomic::Ordering::AcqRel) {
            let (data_dir, meta) = (self.config.data_dir.clone(), meta.clone());
            run_blocking("remove deleted topics' partitions", move || {
                remove_orphans(&data_dir, &meta);
                Ok(())
            })
            .await?;
        }
        if !registered {
            // Not before this data directory is registered (see the module
            // doc); stopping what moved away or was deleted is still right.
            if !plan.start.is_empty() {
                tracing::info!(
                    replicas = plan.start.len(),
                    "waiting for the cluster to register this data directory before hosting replicas"
                );
            }
            plan.start.clear();
        }
        for key in &plan.stop {
            self.stop_replica(key).await?;
        }
        if !plan.start.is_empty() {
            let data_dir = self.config.data_dir.clone();
            let dirs: Vec<PathBuf> = plan
                .start
                .iter()
                .map(|((name, p), _, _)| partition_dir(&data_dir, name, *p))
                .collect();
            run_blocking("create partition directories", move || {
                create_partition_dirs(&data_dir, &dirs)
            })
            .await?;
        }
        // Opening a log is file work on the blocking pool, several at a
        // time. Hosting is a round trip to the replication loop, which
        // answers every hosting queued when it comes round (between its
        // rounds of fsyncs, which take long while thousands of new groups
        // elect): so as many as are open are handed over at once, and a
        // topic of 10,000 partitions is hosted in a few loop rounds, not in
        // one round per 128.
        let meta = &meta;
        futures::stream::iter(plan.start)
            .map(|((name, p), _, hosts)| async move {
                let t = meta.topics.get(&name)?;
                match self.open_replica(meta, t, p, hosts).await {
                    Ok(opened) => Some(opened),
                    Err(e) => {
                        offline(&name, p, &e);
                        None
                    }
                }
            })
            .buffer_unordered(STARTS_IN_FLIGHT)
            .for_each_concurrent(None, |opened| async move {
                let Some(opened) = opened else { return };
                let (name, p) = (opened.topic.meta.name.clone(), opened.partition);
                if let Err(e) = self.host_replica(opened).await {
                    offline(&name, p, &e);
                }
            })
            .await;
        Ok(())
    }

    /// Opens the log of replica `p` of `t` and decides how it starts.
    async fn open_replica<'m>(
        &self,
        meta: &MetadataState,
        t: &'m TopicState,
        p: u32,
        replicas: Vec<NodeId>,
    ) -> Result<OpenedReplica<'m>> {
        let log_config = topic::log_config(&self.config.log, &t.meta.configs)?;
        let dir = partition_dir(&self.config.data_dir, &t.meta.name, p);
        let (topic_id, uuid) = (t.id, t.uuid());
        let replicated = replicas.len() > 1;
        let (log, quarantined, had_state) = run_blocking("open partition log", move || {
            let had_state = dir.join(RAFT_STATE_FILE).exists();
            let (log, quarantined) = open_partition_log(&dir, (topic_id, uuid), log_config, replicated)?;
            Ok((log, quarantined, had_state))
        })
        .await?;
        let moved = !t.origin.is_empty();
        let recovering = replicated
            && (quarantined || (!had_state && (moved || !meta.replica_is_new(self.id, &self.incarnation, topic_id))));
        if recovering && !quarantined {
            tracing::warn!(
                topic = %t.meta.name,
                partition = p,
                "replica starts recovering: {}",
                if moved {
                    "a fresh copy of a moved partition"
                } else {
                    "it may have existed on a disk this broker no longer has"
                }
            );
        }
        Ok(OpenedReplica {
            topic: t,
            partition: p,
            replicas,
            log,
            fresh: !had_state && !recovering,
            recovering,
        })
    }

    /// Hands an opened replica to the replication loop and serves it.
    async fn host_replica(&self, opened: OpenedReplica<'_>) -> Result<()> {
        let OpenedReplica {
            topic: t,
            partition: p,
            replicas,
            log,
            fresh,
            recovering,
        } = opened;
        let group = t.raft_group(p);
        let span = tracing::info_span!("replica", node = %self.id, topic = %t.meta.name, partition = p);
        let moved = !t.origin.is_empty();
        let log = Arc::new(RwLock::new(log));
        // A new group starts with the configuration it was created with; its
        // log's membership changes (if it moved) follow from there.
        let handle = self
            .raft
            .host(NewReplica {
                group,
                log: Arc::clone(&log),
                voters: t.origin_of(p),
                recovering,
                span,
            })
            .await?;
        if !moved && ((fresh && replicas.first() == Some(&self.id)) || replicas == [self.id]) {
            // The preferred leader of a new partition stands at once, so
            // leaders spread as placed and a new topic is usable quickly; a
            // sole replica need not wait out an election timeout either.
            let _ = self.raft.campaign(group);
        }
        let name: Arc<str> = Arc::from(t.meta.name.as_str());
        let partition = Arc::new(Partition::new(name, p, replicas, log, handle));
        self.replicas.write().insert((t.meta.name.clone(), p), partition);
        tracing::info!(topic = %t.meta.name, partition = p, %group, recovering, "hosting partition replica");
        Ok(())
    }

    async fn stop_replica(&self, key: &ReplicaKey) -> Result<()> {
        let removed = self.replicas.write().remove(key);
        let Some(p) = removed else {
            return Ok(());
        };
        self.raft.remove(p.raft_group()).await?;
        let dir = p.log().read().dir().to_path_buf();
        let shown = partition_dir(&self.config.data_dir, &key.0, key.1);
        run_blocking("delete partition", move || {
            std::fs::remove_dir_all(&dir).map_err(|source| BrokerError::Metadata {
                op: "delete partition",
                path: shown,
                source,
            })
        })
        .await?;
        tracing::info!(topic = %key.0, partition = key.1, "stopped hosting partition replica");
        Ok(())
    }

    /// Hands leadership back to each partition's preferred replica once it is
    /// caught up (the leader of a partition asks its loop, which checks the
    /// preferred replica's live progress; followers do nothing).
    pub fn balance_leaders(&self) {
        let replicas: HashMap<RaftGroupId, Arc<Partition>> =
            self.all_partitions().into_iter().map(|p| (p.raft_group(), p)).collect();
        for (group, p) in replicas {
            let Some(&preferred) = p.replicas().first() else {
                continue;
            };
            if p.is_leader() && preferred != self.id {
                let _ = self.raft.transfer_leader(group, preferred);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::{MetadataCommand, TopicState};
    use crate::topic::TopicMeta;

    fn topic(name: &str, id: u64, assignment: &[&[u64]]) -> TopicState {
        TopicState {
            meta: TopicMeta {
                name: name.into(),
                partitions: assignment.len() as u32,
                replication_factor: assignment[0].len() as u32,
                configs: BTreeMap::new(),
            },
            id,
            uuid: None,
            assignment: assignment
                .iter()
                .map(|r| r.iter().copied().map(NodeId).collect())
                .collect(),
            origin: Vec::new(),
            moving: BTreeMap::new(),
        }
    }

    #[test]
    fn reconciling_starts_what_is_assigned_here_and_stops_what_is_gone_or_recreated() {
        let mut meta = MetadataState::default();
        meta.apply(&MetadataCommand::CreateTopic {
            topic: topic("a", 1, &[&[1, 2], &[2, 3]]),
        });
        meta.apply(&MetadataCommand::CreateTopic {
            topic: topic("b", 2, &[&[3, 1]]),
        });
        let me = NodeId(1);
        let none = BTreeMap::new();
        let p = plan(&meta, me, &none);
        assert!(p.stop.is_empty());
        let started: Vec<_> = p.start.iter().map(|(k, g, _)| (k.clone(), *g)).collect();
        assert_eq!(
            started,
            vec![
                (("a".to_string(), 0), crate::controller::raft_group_of(1, 0)),
                (("b".to_string(), 0), crate::controller::raft_group_of(2, 0)),
            ]
        );
        // Hosting exactly that: nothing to do.
        let hosted: BTreeMap<ReplicaKey, RaftGroupId> = p.start.into_iter().map(|(k, g, _)| (k, g)).collect();
        assert_eq!(plan(&meta, me, &hosted), ReconcilePlan::default());
        // "b" deleted and re-created with another id: the old replica goes,
        // the new one comes, under the same name.
        meta.apply(&MetadataCommand::DeleteTopic {
            name: "b".into(),
            id: 2,
        });
        meta.apply(&MetadataCommand::CreateTopic {
            topic: topic("b", 3, &[&[1]]),
        });
        let p = plan(&meta, me, &hosted);
        assert_eq!(p.stop, vec![("b".to_string(), 0)]);
        assert_eq!(p.start.len(), 1);
        assert_eq!(p.start[0].1, crate::controller::raft_group_of(3, 0));
    }

    #[test]
    fn a_replica_moving_here_is_hosted_before_the_move_finishes() {
        let mut meta = MetadataState::default();
        meta.apply(&MetadataCommand::CreateTopic {
            topic: topic("a", 1, &[&[1, 2]]),
        });
        meta.apply(&MetadataCommand::Reassign {
            name: "a".into(),
            id: 1,
            partition: 0,
            replicas: vec![NodeId(3), NodeId(2)],
        });
        let p = plan(&meta, NodeId(3), &BTreeMap::new());
        assert_eq!(p.start.len(), 1);
        assert_eq!(
            p.start[0].2,
            vec![NodeId(1), NodeId(2), NodeId(3)],
            "current replicas, then the target"
        );
    }

    #[test]
    fn only_partitions_of_topics_known_deleted_are_orphans() {
        let data = tempfile::tempdir().expect("tempdir");
        let mark = |name: &str, text: Option<&str>| {
            let d = data.path().join(name);
            std::fs::create_dir_all(&d).expect("mkdir");
            if let Some(t) = text {
                std::fs::write(d.join(super::super::recovery::TOPIC_ID_FILE), t).expect("marker");
            }
        };
        let mut meta = MetadataState::default();
        meta.apply(&MetadataCommand::CreateTopic {
            topic: topic("old", 1, &[&[1]]),
        });
        meta.apply(&MetadataCommand::CreateTopic {
            topic: topic("kept", 2, &[&[1]]),
        });
        meta.apply(&MetadataCommand::DeleteTopic {
            name: "old".into(),
            id: 1,
        });
        mark("old-0", Some("1 00000000-0000-0000-0000-000000000001\n"));
        mark("old-1", Some("1"));
        mark("kept-0", Some("2 00000000-0000-0000-0000-000000000002\n"));
        // Created after what this broker applied so far: not known deleted.
        mark("later-0", Some("3"));
        mark("__controller-0", None);
        mark("old-0.corrupt-17", Some("1"));
        let found = orphans(data.path(), &meta);
        let names: Vec<String> = found
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["old-0", "old-0.corrupt-17", "old-1"]);
    }
}
