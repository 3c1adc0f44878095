//! What `group list`, `group describe` and the lag metrics show of the
//! groups coordinated here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use strand_cluster::NodeId;
use strand_storage::Offset;

use super::assignor::TopicPartition;
use super::offsets::visible;
use super::{GroupCoordinator, OFFSETS_TOPIC};
use crate::error::{BrokerError, Result};

/// A group in `group list`.
#[derive(Clone, Debug)]
pub struct GroupSummary {
    /// Group id.
    pub group: String,
    /// `Empty`, `Stable`, … (see `Group::state_name`).
    pub state: &'static str,
    /// Members.
    pub members: usize,
    /// The broker coordinating it.
    pub coordinator: NodeId,
}

/// A member in `group describe`.
#[derive(Clone, Debug)]
pub struct MemberView {
    /// Member id.
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Client name.
    pub client_id: String,
    /// Its epoch.
    pub member_epoch: i32,
    /// Subscribed topics.
    pub topics: BTreeSet<String>,
    /// What it may hold.
    pub assignment: BTreeSet<TopicPartition>,
}

/// A partition's offsets in `group describe`.
#[derive(Clone, Debug)]
pub struct PartitionLagView {
    /// The partition.
    pub partition: TopicPartition,
    /// Committed offset, if any.
    pub committed: Option<Offset>,
    /// High watermark, when the partition is hosted here.
    pub high_watermark: Option<Offset>,
    /// First stored offset, when the partition is hosted here.
    pub log_start: Option<Offset>,
    /// The member holding it, if one does.
    pub member_id: Option<String>,
}

impl PartitionLagView {
    /// High watermark minus committed, when both are known and the
    /// committed offset is in the log's range.
    pub fn lag(&self) -> Option<u64> {
        if self.out_of_range() {
            return None;
        }
        Some(self.high_watermark?.since(self.committed?))
    }

    /// The committed offset is past the high watermark or below the log
    /// start: a consumer resuming there follows its reset policy.
    pub fn out_of_range(&self) -> bool {
        let Some(c) = self.committed else { return false };
        self.high_watermark.is_some_and(|hw| c > hw) || self.log_start.is_some_and(|s| c < s)
    }
}

/// A group in `group describe`.
#[derive(Clone, Debug)]
pub struct GroupView {
    /// Group id.
    pub group: String,
    /// State name.
    pub state: &'static str,
    /// Group epoch.
    pub epoch: i32,
    /// Assignment strategy.
    pub assignor: &'static str,
    /// The broker coordinating it.
    pub coordinator: NodeId,
    /// Members.
    pub members: Vec<MemberView>,
    /// Offsets of every partition it committed or subscribes to.
    pub offsets: Vec<PartitionLagView>,
}

/// One row of the lag metrics.
#[derive(Debug, Clone)]
pub struct GroupPartitionRow {
    /// Group.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Committed offset.
    pub committed: Offset,
    /// High watermark minus committed, when the partition is hosted here.
    pub lag: Option<u64>,
}

impl GroupCoordinator {
    /// Groups of every offsets partition this broker leads.
    pub async fn list(&self) -> Result<Vec<GroupSummary>> {
        let Ok(topic) = self.node.topic(OFFSETS_TOPIC) else {
            return Ok(Vec::new());
        };
        let now = Instant::now();
        let mut out = Vec::new();
        for (k, p) in self.node.hosted(&topic).into_iter().enumerate() {
            let Some(p) = p else { continue };
            if !p.is_leader() {
                continue;
            }
            let Ok(shard) = self.shard_of(k as u32, p).await else {
                continue;
            };
            for g in shard.groups().values() {
                out.push(GroupSummary {
                    group: g.name.clone(),
                    state: g.state_name(now),
                    members: g.members.len(),
                    coordinator: self.node.id(),
                });
            }
        }
        Ok(out)
    }

    /// State, members, offsets and lag of a group.
    pub async fn describe(&self, group: &str) -> Result<GroupView> {
        let shard = self.shard(group).await?;
        let counts = self.partition_counts();
        let now = Instant::now();
        let groups = shard.groups();
        let Some(g) = groups.get(group) else {
            return Err(BrokerError::UnknownGroup { group: group.into() });
        };
        let mut holder: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
        for m in g.members.values() {
            for tp in m.held() {
                holder.insert(tp, &m.id);
            }
        }
        let meta = self.node.metadata();
        let committed: BTreeMap<&TopicPartition, Offset> = g
            .offsets
            .iter()
            .filter(|(_, c)| visible(&meta, c))
            .map(|(tp, c)| (tp, c.offset))
            .collect();
        let mut partitions: BTreeSet<TopicPartition> = committed.keys().map(|tp| (*tp).clone()).collect();
        for t in g.subscribed_topics() {
            for p in 0..counts.get(&t).copied().unwrap_or(0) {
                partitions.insert((t.clone(), p));
            }
        }
        let offsets = partitions
            .into_iter()
            .map(|tp| {
                let local = self.node.partition(&tp.0, tp.1).ok().map(|p| p.offsets());
                PartitionLagView {
                    committed: committed.get(&tp).copied(),
                    high_watermark: local.as_ref().map(|o| o.high_watermark),
                    log_start: local.as_ref().map(|o| o.log_start_offset),
                    member_id: holder.get(&tp).map(|s| s.to_string()),
                    partition: tp,
                }
            })
            .collect();
        Ok(GroupView {
            group: g.name.clone(),
            state: g.state_name(now),
            epoch: g.epoch,
            assignor: g.assignor.name(),
            coordinator: self.node.id(),
            members: g
                .members
                .values()
                .map(|m| MemberView {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    member_epoch: m.epoch,
                    topics: m.topics.clone(),
                    assignment: m.granted.clone(),
                })
                .collect(),
            offsets,
        })
    }

    /// Members per group and committed offsets with lag, of the groups
    /// coordinated here (for metrics).
    pub fn metrics_rows(&self) -> (Vec<(String, usize)>, Vec<GroupPartitionRow>) {
        let (mut members, mut rows) = (Vec::new(), Vec::new());
        let meta = self.node.metadata();
        for shard in self.current_shards() {
            for g in shard.groups().values() {
                members.push((g.name.clone(), g.members.len()));
                for ((topic, partition), c) in g.offsets.iter().filter(|(_, c)| visible(&meta, c)) {
                    let lag = self
                        .node
                        .partition(topic, *partition)
                        .ok()
                        .map(|p| p.offsets().high_watermark.since(c.offset));
                    rows.push(GroupPartitionRow {
                        group: g.name.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        committed: c.offset,
                        lag,
                    });
                }
            }
        }
        (members, rows)
    }
}
