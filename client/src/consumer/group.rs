//! A consumer in group mode: subscribing, applying the coordinator's
//! assignments as they change (with the rebalance listener), committing
//! offsets, and leaving. The membership protocol itself (heartbeats, the
//! shared state they update) is [`super::membership`].

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use super::membership::{self, Membership, OffsetToCommit, Shared, Tp};
use super::{AssignedPartition, Consumer, ConsumerRecord, RebalanceEvent};
use crate::coordinator::Coordinator;
use crate::error::{ClientError, Result};

impl Consumer {
    /// Joins the consumer's group (see [`ConsumerBuilder::group`]) and
    /// subscribes to `topics`; the coordinator assigns partitions, applied
    /// by the following polls. Calling it again changes the subscription.
    ///
    /// # Errors
    /// [`ClientError::InvalidArgument`] without a group, with no topics, or
    /// when partitions were assigned by hand.
    pub async fn subscribe(&mut self, topics: &[&str]) -> Result<()> {
        if topics.is_empty() {
            return Err(ClientError::invalid("subscribe needs at least one topic"));
        }
        if !self.subscribed() && !self.assignment.is_empty() {
            return Err(ClientError::invalid(
                "partitions were assigned by hand: a consumer either assigns or subscribes",
            ));
        }
        let Some(g) = self.group.as_mut() else {
            return Err(ClientError::invalid(
                "subscribe needs a group: set ConsumerBuilder::group",
            ));
        };
        let mut wanted: Vec<String> = topics.iter().map(|t| (*t).to_string()).collect();
        wanted.sort_unstable();
        wanted.dedup();
        match &g.membership {
            Some(m) => {
                m.shared().topics = wanted;
                m.nudge();
            }
            None => {
                g.membership = Some(Membership::start(
                    g.settings.clone(),
                    Arc::clone(&g.coordinator),
                    wanted,
                ));
            }
        }
        Ok(())
    }

    /// Whether [`Consumer::subscribe`] was called.
    pub fn subscribed(&self) -> bool {
        self.group.as_ref().is_some_and(|g| g.membership.is_some())
    }

    /// The member id the coordinator gave this consumer (empty while
    /// joining, or without a group).
    pub fn member_id(&self) -> String {
        self.group
            .as_ref()
            .and_then(|g| g.membership.as_ref())
            .map(|m| m.shared().member_id.clone())
            .unwrap_or_default()
    }

    /// Applies the group's latest answer: loses everything if membership
    /// was lost; commits (with auto-commit) and releases revoked
    /// partitions; takes newly granted ones at their committed offsets.
    pub(super) async fn reconcile(&mut self) -> Result<()> {
        let Some(m) = self.group.as_mut().and_then(|g| g.membership.as_mut()) else {
            return Ok(());
        };
        // Seen before reading, so a change from now on wakes the next wait.
        m.changed.borrow_and_update();
        let Some(g) = self.group.as_ref() else { return Ok(()) };
        let Some(m) = g.membership.as_ref() else { return Ok(()) };
        if let Some(refused) = m.shared().refused.take() {
            return Err(refused);
        }
        let listener = g.listener.clone();
        let auto_commit = g.settings.auto_commit.is_some();
        let emit = |e: RebalanceEvent| {
            tracing::info!(event = ?e, "rebalance");
            if let Some(l) = &listener {
                l(&e);
            }
        };
        let lost = {
            let mut s = m.shared();
            s.last_poll = std::time::Instant::now();
            let lost = std::mem::take(&mut s.lost);
            if lost {
                s.owned.clear();
            }
            lost
        };
        if lost {
            let all = self.assignment();
            self.assignment.clear();
            self.buffered.clear();
            if !all.is_empty() {
                emit(RebalanceEvent::Lost(all));
            }
            m.nudge();
        }
        // Under one lock with reading the coordinator's latest answer: what
        // is taken is reported owned before any heartbeat can say otherwise.
        let (revoked, added) = {
            let mut s = m.shared();
            let mut held: BTreeSet<Tp> = self.assignment().into_iter().collect();
            held.extend(s.owned.iter().cloned());
            let revoked: Vec<Tp> = held.difference(&s.allowed).cloned().collect();
            let added: Vec<Tp> = s.allowed.difference(&held).cloned().collect();
            s.owned.extend(added.iter().cloned());
            (revoked, added)
        };
        if !revoked.is_empty() {
            let fetching: Vec<Tp> = revoked
                .iter()
                .filter(|(t, p)| self.state(t, *p).is_some())
                .cloned()
                .collect();
            if auto_commit && !fetching.is_empty() {
                let offsets = self.positions_of(&fetching);
                if let Err(e) = self.commit_later(offsets).await {
                    tracing::warn!(error = %e, "commit of revoked partitions failed; they will be redelivered");
                }
            }
            if !fetching.is_empty() {
                emit(RebalanceEvent::Revoked(fetching));
            }
            for (t, p) in &revoked {
                if let Some(ps) = self.assignment.get_mut(t) {
                    ps.remove(p);
                    if ps.is_empty() {
                        self.assignment.remove(t);
                    }
                }
            }
            self.buffered
                .retain(|r| !revoked.iter().any(|(t, p)| *t == r.topic && *p == r.partition));
            let mut s = m.shared();
            for tp in &revoked {
                s.owned.remove(tp);
            }
            drop(s);
            m.nudge();
        }
        if !added.is_empty() {
            m.nudge();
            // The ids of the topics taken, so positions and commits are
            // tied to the topic that exists now.
            let unknown: BTreeSet<&str> = added
                .iter()
                .map(|(t, _)| &**t)
                .filter(|t| self.md.topic_id(t).is_none())
                .collect();
            if !unknown.is_empty() {
                let unknown: Vec<&str> = unknown.into_iter().collect();
                if let Err(e) = self.md.refresh(&unknown).await {
                    tracing::debug!(error = %e, "metadata refresh for assigned topics failed");
                }
            }
            let committed = match committed(
                Arc::clone(&g.coordinator),
                &added,
                self.fetcher.config().request_timeout,
            )
            .await
            {
                Ok(c) => c,
                Err(e) => {
                    // Not taken after all; the next poll tries again.
                    let mut s = m.shared();
                    for tp in &added {
                        s.owned.remove(tp);
                    }
                    return Err(e);
                }
            };
            for (t, p) in &added {
                let topic_id = self.md.topic_id(t);
                // An offset committed for another id belongs to a topic of
                // this name that was deleted: start by the reset policy.
                let position = committed
                    .get(&(t.clone(), *p))
                    .filter(|(_, id)| id.is_none() || topic_id.is_none() || *id == topic_id)
                    .map(|(o, _)| *o);
                self.assignment.entry(t.clone()).or_default().insert(
                    *p,
                    AssignedPartition {
                        position,
                        topic_id,
                        ..Default::default()
                    },
                );
            }
            emit(RebalanceEvent::Assigned(added));
        }
        Ok(())
    }

    /// What a commit needs, detached from the consumer so that commit
    /// futures are `Send` and `'static`.
    fn commit_ctx(&self) -> Result<CommitCtx> {
        let Some(g) = &self.group else {
            return Err(ClientError::invalid(
                "committing needs a group: set ConsumerBuilder::group",
            ));
        };
        Ok(CommitCtx {
            coordinator: Arc::clone(&g.coordinator),
            shared: g
                .membership
                .as_ref()
                .map(|m| (Arc::clone(&m.shared), m.changed.clone())),
            limit: self.fetcher.config().request_timeout,
        })
    }

    /// Committable positions (the next offset `poll` would return) of these
    /// partitions.
    fn positions_of(&self, partitions: &[Tp]) -> Vec<OffsetToCommit> {
        partitions
            .iter()
            .filter_map(|(t, p)| self.position(t, *p).map(|o| self.to_commit(t.clone(), *p, o)))
            .collect()
    }

    /// An offset to commit, with the id of the topic its partition was
    /// assigned under (or the cached one).
    fn to_commit(&self, topic: Arc<str>, partition: u32, offset: u64) -> OffsetToCommit {
        let topic_id = self
            .state(&topic, partition)
            .and_then(|st| st.topic_id.clone())
            .or_else(|| self.md.topic_id(&topic));
        OffsetToCommit {
            topic,
            partition,
            offset,
            topic_id,
        }
    }

    pub(super) async fn maybe_auto_commit(&mut self) {
        let Some(g) = &self.group else { return };
        let Some(every) = g.settings.auto_commit else { return };
        if g.last_auto_commit.elapsed() < every {
            return;
        }
        let offsets = self.positions_of(&self.assignment());
        if let Ok(ctx) = self.commit_ctx()
            && let Err(e) = ctx.commit(offsets).await
        {
            tracing::warn!(error = %e, "auto-commit failed");
        }
        if let Some(g) = self.group.as_mut() {
            g.last_auto_commit = std::time::Instant::now();
        }
    }

    fn commit_later(&self, offsets: Vec<OffsetToCommit>) -> impl Future<Output = Result<()>> + Send + 'static {
        let ctx = self.commit_ctx();
        async move { ctx?.commit(offsets).await }
    }

    /// Commits the position of every partition this consumer holds: the
    /// offset after the last record `poll` returned. Call it after
    /// processing those records (at-least-once).
    ///
    /// # Errors
    /// `FENCED` when this consumer is no longer a member of the group (its
    /// partitions moved); `NOT_COORDINATOR`, transport errors or timeouts
    /// when the coordinator could not be reached within the request timeout.
    pub fn commit(&self) -> impl Future<Output = Result<()>> + Send + 'static {
        self.commit_later(self.positions_of(&self.assignment()))
    }

    /// Commits explicit offsets (each the *next* offset to consume).
    ///
    /// # Errors
    /// As [`Consumer::commit`].
    pub fn commit_offsets(&self, offsets: &[(&str, u32, u64)]) -> impl Future<Output = Result<()>> + Send + 'static {
        self.commit_later(
            offsets
                .iter()
                .map(|(t, p, o)| self.to_commit(Arc::from(*t), *p, *o))
                .collect(),
        )
    }

    /// Commits a processed record (its offset + 1).
    ///
    /// # Errors
    /// As [`Consumer::commit`].
    pub fn commit_record(&self, record: &ConsumerRecord) -> impl Future<Output = Result<()>> + Send + 'static {
        self.commit_later(vec![self.to_commit(
            record.topic.clone(),
            record.partition,
            record.offset + 1,
        )])
    }

    /// Like [`Consumer::commit`], in the background: the handle tells how it
    /// went; polling goes on meanwhile.
    pub fn commit_async(&self) -> tokio::task::JoinHandle<Result<()>> {
        tokio::spawn(self.commit())
    }

    /// Commits (with auto-commit), reports its partitions revoked to the
    /// listener, and leaves the group, so they move at once instead of after
    /// the session timeout. A static member keeps its partitions for its
    /// session timeout.
    ///
    /// Returns within the session timeout whatever the coordinator does
    /// (down, paused, moving): by then the group has given the partitions
    /// to another member anyway.
    ///
    /// # Errors
    /// The final auto-commit's error (the group is left anyway);
    /// [`ClientError::Timeout`] when the commit and the leave did not finish
    /// within the session timeout.
    pub async fn close(self) -> Result<()> {
        let Some(limit) = self.group.as_ref().map(|g| g.settings.session_timeout) else {
            return self.close_now().await;
        };
        match tokio::time::timeout(limit, self.close_now()).await {
            Ok(r) => r,
            // Dropping the consumer stops its heartbeats and fetches.
            Err(_) => Err(ClientError::Timeout {
                what: "closing the consumer (commit and leave the group)".into(),
                after: limit,
            }),
        }
    }

    async fn close_now(mut self) -> Result<()> {
        let mut result = Ok(());
        if self.group.as_ref().is_some_and(|g| g.settings.auto_commit.is_some()) && self.subscribed() {
            result = self.commit().await;
        }
        let held = self.assignment();
        if self.subscribed() && !held.is_empty() {
            // As Kafka's listener: the partitions are given up before leaving.
            let e = RebalanceEvent::Revoked(held);
            tracing::info!(event = ?e, "rebalance");
            if let Some(l) = self.group.as_ref().and_then(|g| g.listener.as_ref()) {
                l(&e);
            }
        }
        self.assignment.clear();
        if let Some(m) = self.group.as_mut().and_then(|g| g.membership.take()) {
            m.leave().await;
        }
        result
    }
}

/// See [`Consumer::commit_ctx`].
struct CommitCtx {
    coordinator: Arc<Coordinator>,
    shared: Option<(Arc<Mutex<Shared>>, tokio::sync::watch::Receiver<u64>)>,
    limit: Duration,
}

impl CommitCtx {
    async fn commit(self, offsets: Vec<OffsetToCommit>) -> Result<()> {
        let shared = self.shared.as_ref().map(|(s, rx)| (&**s, rx.clone()));
        membership::commit(&self.coordinator, shared, offsets, self.limit).await
    }
}

/// The group's committed offsets of `partitions`, each with the id of the
/// topic it was committed for (when the coordinator says).
async fn committed(
    coordinator: Arc<Coordinator>,
    partitions: &[Tp],
    limit: Duration,
) -> Result<BTreeMap<Tp, (u64, Option<Arc<str>>)>> {
    let set: BTreeSet<Tp> = partitions.iter().cloned().collect();
    let offsets = coordinator.fetch_offsets(membership::to_wire(&set), limit).await?;
    Ok(offsets
        .into_iter()
        .map(|o| {
            let id = Some(o.topic_id).filter(|id| !id.is_empty()).map(Arc::from);
            ((Arc::from(o.topic.as_str()), o.partition), (o.offset, id))
        })
        .collect())
}
