//! Listing and describing share groups.

use super::now_ms;
use super::state::ShareCounts;
use crate::error::{BrokerError, Result};
use crate::groups::GroupCoordinator;

/// One share-partition as `describe` shows it.
#[derive(Clone, Debug)]
pub struct SharePartitionView {
    /// Topic.
    pub topic: String,
    /// Topic id.
    pub topic_id: String,
    /// Partition.
    pub partition: u32,
    /// Share-partition start offset.
    pub start: u64,
    /// Every record below it has been read.
    pub end: u64,
    /// Counts now.
    pub counts: ShareCounts,
    /// The partition's high watermark if this broker hosts it.
    pub high_watermark: Option<u64>,
}

/// One member as `describe` shows it.
#[derive(Clone, Debug)]
pub struct ShareMemberView {
    /// Member id.
    pub member: String,
    /// Topics it reads.
    pub topics: Vec<String>,
    /// Records it holds now.
    pub acquired: u64,
}

/// A share group as `describe` shows it.
#[derive(Clone, Debug)]
pub struct ShareGroupView {
    /// Group id.
    pub group: String,
    /// Members.
    pub members: Vec<ShareMemberView>,
    /// Share-partitions.
    pub partitions: Vec<SharePartitionView>,
    /// Deliveries before a record is archived.
    pub delivery_count_limit: u32,
}

/// One share-partition's counts, as the metrics show them.
#[derive(Clone, Debug)]
pub struct ShareMetricsRow {
    /// Group id.
    pub group: String,
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Counts now.
    pub counts: ShareCounts,
}

impl GroupCoordinator {
    /// Members per share group, and per share-partition the counts, of the
    /// groups coordinated here (read at scrape time).
    pub fn share_metrics_rows(&self) -> (Vec<(String, usize)>, Vec<ShareMetricsRow>) {
        let now = now_ms();
        let (mut members, mut rows) = (Vec::new(), Vec::new());
        for shard in self.current_shards() {
            for (group, g) in shard.shares().iter() {
                members.push((group.clone(), g.members.len()));
                for ((topic, partition), s) in &g.partitions {
                    rows.push(ShareMetricsRow {
                        group: group.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        counts: s.state.counts(now),
                    });
                }
            }
        }
        (members, rows)
    }

    /// The share groups this broker coordinates.
    pub fn list_share_groups(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .current_shards()
            .iter()
            .flat_map(|s| s.shares().keys().cloned().collect::<Vec<_>>())
            .collect();
        out.sort();
        out
    }

    /// Describes a share group.
    ///
    /// # Errors
    /// `NOT_COORDINATOR`; `UNKNOWN_GROUP` if it has no state and no members.
    pub async fn describe_share_group(&self, group: &str) -> Result<ShareGroupView> {
        let shard = self.shard(group).await?;
        let now = now_ms();
        // Read in place under the short lock: a copy would include the
        // delayed index, which may hold millions of entries.
        let shares = shard.shares();
        let g = shares.get(group).ok_or_else(|| BrokerError::UnknownGroup {
            group: group.to_string(),
        })?;
        let members = g
            .members
            .iter()
            .map(|(id, m)| ShareMemberView {
                member: id.clone(),
                topics: m.topics.clone(),
                acquired: g
                    .partitions
                    .values()
                    .map(|s| s.state.held_by(id, now).len() as u64)
                    .sum(),
            })
            .collect();
        let partitions = g
            .partitions
            .iter()
            .map(|((topic, p), s)| SharePartitionView {
                topic: topic.clone(),
                topic_id: s.topic_id.to_string(),
                partition: *p,
                start: s.state.start,
                end: s.state.end,
                counts: s.state.counts(now),
                high_watermark: self.node.partition(topic, *p).ok().map(|x| x.high_watermark().get()),
            })
            .collect();
        drop(shares);
        Ok(ShareGroupView {
            group: group.to_string(),
            members,
            partitions,
            delivery_count_limit: self.config.share_delivery_count_limit,
        })
    }
}
