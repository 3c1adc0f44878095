//! Joins, heartbeats and leaves: the coordinator's side of the KIP-848
//! protocol (the group state machine is [`super::membership`]).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use super::GroupCoordinator;
use super::assignor::{Assignor, TopicPartition};
use super::membership::{Answer, Group, Heartbeat};
use super::offsets::member_error;
use crate::error::{BrokerError, Result};

/// A member's heartbeat as the coordinator receives it.
#[derive(Clone, Debug)]
pub struct HeartbeatRequest {
    /// Group.
    pub group: String,
    /// Empty to join.
    pub member_id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Free-form client name.
    pub client_id: String,
    /// 0 to join; -1 to leave; -2 for a static member leaving temporarily.
    pub member_epoch: i32,
    /// Subscribed topics.
    pub topics: BTreeSet<String>,
    /// Session timeout asked for.
    pub session_timeout: Duration,
    /// Partitions it holds now.
    pub owned: BTreeSet<TopicPartition>,
    /// Assignment strategy.
    pub assignor: Assignor,
}

/// The coordinator's answer.
#[derive(Clone, Debug)]
pub struct HeartbeatAnswer {
    /// Member id, epoch and what it may hold.
    pub answer: Answer,
    /// When to heartbeat next.
    pub heartbeat_interval: Duration,
}

impl GroupCoordinator {
    /// Join, heartbeat or leave.
    pub async fn heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatAnswer> {
        let c = &self.config;
        let session_ms = req.session_timeout.as_millis() as u64;
        if req.member_epoch >= 0 && !(c.min_session_timeout_ms..=c.max_session_timeout_ms).contains(&session_ms) {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "session timeout {session_ms} ms is outside the broker's {}..={} ms",
                    c.min_session_timeout_ms, c.max_session_timeout_ms
                ),
            });
        }
        if req.member_epoch == 0 && req.topics.is_empty() {
            return Err(BrokerError::InvalidRequest {
                reason: "a member must subscribe to at least one topic".into(),
            });
        }
        let shard = self.shard(&req.group).await?;
        let counts = self.partition_counts();
        let now = Instant::now();
        let heartbeat_interval = Duration::from_millis(c.heartbeat_interval_ms.min(session_ms / 3).max(100));
        let mut groups = shard.groups();
        if req.member_epoch < 0 {
            if let Some(g) = groups.get_mut(&req.group) {
                let before = g.epoch;
                g.leave(now, &req.member_id, req.member_epoch == -2, &counts);
                if g.epoch != before {
                    self.persist_epoch(&shard, Self::epoch_record(g));
                }
            }
            return Ok(HeartbeatAnswer {
                answer: Answer {
                    member_id: req.member_id,
                    epoch: req.member_epoch,
                    assignment: BTreeSet::new(),
                },
                heartbeat_interval,
            });
        }
        let g = match groups.get_mut(&req.group) {
            Some(g) => g,
            None if req.member_epoch == 0 => groups
                .entry(req.group.clone())
                .or_insert_with(|| Group::new(req.group.clone())),
            None => {
                return Err(BrokerError::Fenced {
                    reason: format!("group {:?} has no member {}", req.group, req.member_id),
                });
            }
        };
        if g.members.is_empty() {
            g.assignor = req.assignor;
        } else if req.member_epoch == 0 && g.assignor != req.assignor {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "group {:?} uses the {} assignor; this member asked for {}",
                    req.group, g.assignor, req.assignor
                ),
            });
        }
        let before = g.epoch;
        let hb = Heartbeat {
            member_id: req.member_id,
            instance_id: req.instance_id,
            client_id: req.client_id,
            epoch: req.member_epoch,
            topics: req.topics,
            session_timeout: req.session_timeout,
            owned: req.owned,
        };
        let node = self.node.id();
        let answer = g
            .heartbeat(
                now,
                hb,
                || member_id(node.get()),
                Duration::from_millis(c.initial_rebalance_delay_ms),
                &counts,
            )
            .map_err(member_error)?;
        if g.epoch != before {
            tracing::info!(group = %g.name, epoch = g.epoch, members = g.members.len(), "group epoch moved");
            self.persist_epoch(&shard, Self::epoch_record(g));
        }
        Ok(HeartbeatAnswer {
            answer,
            heartbeat_interval,
        })
    }
}

/// A member id unique across brokers and restarts: node, time, counter.
fn member_id(node: u64) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    format!("m-{node}-{nanos:x}-{n}")
}
