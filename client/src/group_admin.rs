//! Consumer-group administration on [`Admin`]: list, describe, rewind and
//! delete groups. Requests go to the group's coordinator.

use std::collections::BTreeMap;
use std::sync::Arc;

use strand_proto::v1::{
    DeleteGroupRequest, DescribeGroupRequest, GroupDescription, GroupSummary, ListGroupsRequest, OffsetCommit,
    ResetOffsetsRequest,
};

use crate::admin::Admin;
use crate::coordinator::Coordinator;
use crate::error::Result;
use crate::offsets::OffsetSpec;

/// Where [`Admin::reset_group_offsets`] moves a group's committed offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// Each partition's first stored offset (replay everything).
    Earliest,
    /// Each partition's end (skip the backlog).
    Latest,
    /// This offset in every partition.
    Offset(u64),
    /// The first record at or after this time (ms since the epoch).
    Timestamp(i64),
}

impl Admin {
    pub(crate) fn coordinator(&self, group: &str) -> Coordinator {
        Coordinator::new(
            Arc::clone(&self.md),
            group.to_string(),
            self.backoff,
            self.request_timeout(),
        )
    }

    /// Every group with members or committed offsets, asked of every broker
    /// (each knows the groups it coordinates). Brokers that do not answer
    /// are skipped, so the list may be partial while one is down.
    ///
    /// # Errors
    /// A failure of the metadata request.
    pub async fn list_groups(&self) -> Result<Vec<GroupSummary>> {
        let meta = self.metadata().await?;
        let mut out: BTreeMap<String, GroupSummary> = BTreeMap::new();
        for b in meta.brokers {
            let resp = async {
                let mut c = self.md.conns().groups(&b.addr).await?;
                Ok::<_, crate::ClientError>(c.list_groups(ListGroupsRequest {}).await?.into_inner())
            }
            .await;
            match resp {
                Ok(r) => {
                    for g in r.groups {
                        out.entry(g.group.clone()).or_insert(g);
                    }
                }
                Err(e) => tracing::warn!(broker = %b.addr, error = %e, "could not list the groups of a broker"),
            }
        }
        Ok(out.into_values().collect())
    }

    /// State, epoch, members with their partitions, and per partition the
    /// committed offset, the log end offset and the lag.
    ///
    /// # Errors
    /// `UNKNOWN_GROUP`, or a failure reaching the coordinator.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription> {
        let req = DescribeGroupRequest { group: group.into() };
        let mut d = self
            .coordinator(group)
            .call(self.request_timeout(), |mut c| {
                let req = req.clone();
                async move { Ok(c.describe_group(req).await?.into_inner()) }
            })
            .await?;
        // The coordinator knows the ends of the partitions it hosts; ask the
        // leaders of the others.
        for p in d.offsets.iter_mut().filter(|p| p.log_end_offset < 0) {
            if let Ok(l) = self.list_offsets(&p.topic, p.partition, OffsetSpec::Latest).await {
                p.log_end_offset = l.high_watermark as i64;
                if p.committed >= 0 {
                    p.lag = (p.log_end_offset - p.committed).max(0);
                }
            }
        }
        Ok(d)
    }

    /// The group's committed offsets: `(topic, partition, offset)`.
    ///
    /// # Errors
    /// A failure reaching the coordinator.
    pub async fn group_offsets(&self, group: &str) -> Result<Vec<(String, u32, u64)>> {
        let offsets = self
            .coordinator(group)
            .fetch_offsets(Vec::new(), self.request_timeout())
            .await?;
        Ok(offsets.into_iter().map(|o| (o.topic, o.partition, o.offset)).collect())
    }

    /// Moves the group's committed offsets of every partition of `topic`.
    /// Refused (`GROUP_NOT_EMPTY`) while the group has members, unless
    /// `force`: then they are fenced and rejoin from the new offsets.
    /// Returns the offsets set, per partition.
    ///
    /// # Errors
    /// `UNKNOWN_TOPIC`, `GROUP_NOT_EMPTY`, or a failure reaching a leader or
    /// the coordinator.
    pub async fn reset_group_offsets(
        &self,
        group: &str,
        topic: &str,
        to: ResetTo,
        force: bool,
    ) -> Result<Vec<(u32, u64)>> {
        let partitions = self.md.partitions_of(topic).await?;
        let mut offsets = Vec::with_capacity(partitions as usize);
        for p in 0..partitions {
            let offset = match to {
                ResetTo::Offset(n) => n,
                ResetTo::Earliest => self.list_offsets(topic, p, OffsetSpec::Earliest).await?.offset,
                ResetTo::Latest => self.list_offsets(topic, p, OffsetSpec::Latest).await?.offset,
                ResetTo::Timestamp(ms) => self.list_offsets(topic, p, OffsetSpec::Timestamp(ms)).await?.offset,
            };
            offsets.push(OffsetCommit {
                topic: topic.into(),
                partition: p,
                offset,
                metadata: String::new(),
                // The offsets were looked up on this topic: they must not
                // land on one created again under its name meanwhile.
                topic_id: self.md.topic_id(topic).map(|id| id.to_string()).unwrap_or_default(),
            });
        }
        let req = ResetOffsetsRequest {
            group: group.into(),
            offsets,
            force,
        };
        let resp = self
            .coordinator(group)
            .call(self.request_timeout(), |mut c| {
                let req = req.clone();
                async move { Ok(c.reset_offsets(req).await?.into_inner()) }
            })
            .await?;
        Ok(resp.offsets.into_iter().map(|o| (o.partition, o.offset)).collect())
    }

    /// Deletes a group that has no members, with its committed offsets.
    ///
    /// # Errors
    /// `UNKNOWN_GROUP`, `GROUP_NOT_EMPTY`, or a failure reaching the
    /// coordinator.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let req = DeleteGroupRequest { group: group.into() };
        self.coordinator(group)
            .call(self.request_timeout(), |mut c| {
                let req = req.clone();
                async move { Ok(c.delete_group(req).await?.into_inner()) }
            })
            .await?;
        Ok(())
    }
}
