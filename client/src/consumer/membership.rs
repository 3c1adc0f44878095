//! Group membership of a subscribed [`super::Consumer`]: a background task
//! heartbeats the coordinator with what the consumer holds and publishes
//! what it may hold; the consumer applies that inside `poll` (committing and
//! releasing revoked partitions first, then taking new ones at their
//! committed offsets).
//!
//! Invariants: the consumer reports a partition released only after it
//! stopped fetching it (and, with auto-commit, committed it), and starts
//! fetching a partition only once the coordinator granted it, which it does
//! only when no other member holds it; a member that cannot reach the
//! coordinator for its session timeout, or is told it is fenced, drops all
//! its partitions (they are *lost*: not committed) and joins again.

use std::collections::BTreeSet;
use std::sync::Arc;

use parking_lot::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use strand_proto::v1::{CommitOffsetsRequest, ErrorCode, GroupHeartbeatRequest, OffsetCommit, TopicPartitions};
use tokio::sync::{Notify, watch};

use crate::coordinator::Coordinator;
use crate::error::{ClientError, Result};

/// A topic partition.
pub(crate) type Tp = (Arc<str>, u32);

/// A change of a subscribed consumer's partitions, given to the listener set
/// with [`super::ConsumerBuilder::on_rebalance`] from inside `poll`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RebalanceEvent {
    /// These partitions are now the consumer's; fetching starts at the
    /// group's committed offsets (else `auto_offset_reset`).
    Assigned(Vec<(Arc<str>, u32)>),
    /// These partitions move to another member. Their positions were
    /// committed first when auto-commit is on; with manual commits, commit
    /// after processing each poll so nothing is outstanding here.
    Revoked(Vec<(Arc<str>, u32)>),
    /// Membership was lost (fenced, or the coordinator unreachable for the
    /// session timeout): these partitions were dropped without a commit and
    /// may already be another member's.
    Lost(Vec<(Arc<str>, u32)>),
}

/// Group settings.
#[derive(Debug, Clone)]
pub(crate) struct GroupSettings {
    pub(crate) group: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) session_timeout: Duration,
    pub(crate) assignor: String,
    pub(crate) auto_commit: Option<Duration>,
    pub(crate) max_poll_interval: Duration,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) member_id: String,
    pub(crate) epoch: i32,
    pub(crate) topics: Vec<String>,
    /// What the coordinator allows now.
    pub(crate) allowed: BTreeSet<Tp>,
    /// What the consumer holds (reported with each heartbeat).
    pub(crate) owned: BTreeSet<Tp>,
    /// Membership was lost; the consumer must drop everything.
    pub(crate) lost: bool,
    last_ok: Instant,
    pub(crate) last_poll: Instant,
    interval: Duration,
    leaving: bool,
    /// The coordinator refused this member for good (no ACL lets it read
    /// the group or a topic): the next poll returns it.
    pub(crate) refused: Option<crate::error::ClientError>,
}

/// A running membership.
#[derive(Debug)]
pub(crate) struct Membership {
    pub(crate) settings: GroupSettings,
    pub(crate) coordinator: Arc<Coordinator>,
    pub(crate) shared: Arc<Mutex<Shared>>,
    /// Wakes the heartbeat task early (holdings changed).
    wake: Arc<Notify>,
    /// Bumped on every answer that changed the assignment or epoch; the
    /// consumer marks it seen before each reconciliation.
    pub(crate) changed: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn to_wire(set: &BTreeSet<Tp>) -> Vec<TopicPartitions> {
    let mut out: Vec<TopicPartitions> = Vec::new();
    for (t, p) in set {
        match out.last_mut() {
            Some(last) if last.topic == **t => last.partitions.push(*p),
            _ => out.push(TopicPartitions {
                topic: t.to_string(),
                partitions: vec![*p],
                topic_id: String::new(),
            }),
        }
    }
    out
}

fn from_wire(list: &[TopicPartitions]) -> BTreeSet<Tp> {
    list.iter()
        .flat_map(|tp| {
            let t: Arc<str> = Arc::from(tp.topic.as_str());
            tp.partitions.iter().map(move |p| (t.clone(), *p))
        })
        .collect()
}

impl Membership {
    /// Joins the group in the background.
    pub(crate) fn start(settings: GroupSettings, coordinator: Arc<Coordinator>, topics: Vec<String>) -> Self {
        let now = Instant::now();
        let shared = Arc::new(Mutex::new(Shared {
            member_id: String::new(),
            epoch: 0,
            topics,
            allowed: BTreeSet::new(),
            owned: BTreeSet::new(),
            lost: false,
            last_ok: now,
            last_poll: now,
            interval: Duration::from_secs(1).min(settings.session_timeout / 3),
            leaving: false,
            refused: None,
        }));
        let wake = Arc::new(Notify::new());
        let (tx, changed) = watch::channel(0u64);
        let task = tokio::spawn(heartbeat_loop(
            settings.clone(),
            Arc::clone(&coordinator),
            Arc::clone(&shared),
            Arc::clone(&wake),
            tx,
        ));
        Membership {
            settings,
            coordinator,
            shared,
            wake,
            changed,
            task,
        }
    }

    pub(crate) fn shared(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock()
    }

    /// Tells the heartbeat task that holdings changed.
    pub(crate) fn nudge(&self) {
        self.wake.notify_one();
    }

    /// Leaves the group (a static member leaves temporarily, keeping its
    /// partitions for its session timeout).
    pub(crate) async fn leave(&self) {
        let req = {
            let mut s = self.shared();
            s.leaving = true;
            if s.member_id.is_empty() {
                return;
            }
            GroupHeartbeatRequest {
                group: self.settings.group.clone(),
                member_id: s.member_id.clone(),
                instance_id: self.settings.instance_id.clone().unwrap_or_default(),
                member_epoch: if self.settings.instance_id.is_some() { -2 } else { -1 },
                ..Default::default()
            }
        };
        self.task.abort();
        let r = self
            .coordinator
            .call(Duration::from_secs(5), |mut c| {
                let req = req.clone();
                async move { Ok(c.heartbeat(req).await?.into_inner()) }
            })
            .await;
        if let Err(e) = r {
            tracing::debug!(group = %self.settings.group, error = %e, "leave not delivered; the session will expire");
        }
    }
}

async fn heartbeat_loop(
    settings: GroupSettings,
    coordinator: Arc<Coordinator>,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    changed: watch::Sender<u64>,
) {
    let mut failures = 0u32;
    loop {
        let req = {
            let mut s = shared.lock();
            if s.leaving {
                return;
            }
            if !s.member_id.is_empty() && s.last_poll.elapsed() > settings.max_poll_interval {
                // The application stopped polling: give the partitions to a
                // member that makes progress, as Kafka's max.poll.interval.ms.
                tracing::warn!(group = %settings.group, "no poll within max_poll_interval; leaving the group");
                s.member_id.clear();
                s.epoch = 0;
                s.lost = true;
                s.allowed.clear();
                changed.send_modify(|n| *n += 1);
            }
            GroupHeartbeatRequest {
                group: settings.group.clone(),
                member_id: s.member_id.clone(),
                instance_id: settings.instance_id.clone().unwrap_or_default(),
                member_epoch: if s.member_id.is_empty() { 0 } else { s.epoch },
                topics: s.topics.clone(),
                assignor: settings.assignor.clone(),
                session_timeout_ms: settings.session_timeout.as_millis().min(u32::MAX as u128) as u32,
                owned: to_wire(&s.owned),
                client_id: settings.client_id.clone(),
            }
        };
        let idle = req.member_epoch == 0 && shared.lock().last_poll.elapsed() > settings.max_poll_interval;
        let result = if idle {
            // Left for not polling: rejoin only once the application polls.
            Err(ClientError::invalid("waiting for the next poll"))
        } else {
            // An answer later than the session timeout is worthless: the
            // coordinator has expired the member by then.
            coordinator
                .call_once(
                    &mut |mut c| {
                        let req = req.clone();
                        async move { Ok(c.heartbeat(req).await?.into_inner()) }
                    },
                    Some(settings.session_timeout),
                )
                .await
        };
        let interval = {
            let mut s = shared.lock();
            match result {
                Ok(resp) => {
                    failures = 0;
                    s.refused = None;
                    s.last_ok = Instant::now();
                    let allowed = from_wire(&resp.assignment);
                    if s.member_id != resp.member_id || s.epoch != resp.member_epoch || s.allowed != allowed {
                        s.member_id = resp.member_id;
                        s.epoch = resp.member_epoch;
                        s.allowed = allowed;
                        changed.send_modify(|n| *n += 1);
                    }
                    s.interval = Duration::from_millis(u64::from(resp.heartbeat_interval_ms.max(50)));
                    s.interval
                }
                Err(e) if e.code() == Some(ErrorCode::AuthorizationFailed) => {
                    // Retrying cannot help until an ACL changes; the
                    // consumer learns it at its next poll, and the loop
                    // keeps asking slowly in case one does.
                    tracing::warn!(group = %settings.group, error = %e, "the group refused this consumer");
                    s.refused = Some(e);
                    changed.send_modify(|n| *n += 1);
                    Duration::from_secs(1)
                }
                Err(e) if !idle => {
                    failures += 1;
                    let fenced = e.code() == Some(ErrorCode::Fenced);
                    let expired = s.last_ok.elapsed() > settings.session_timeout;
                    if fenced || (expired && !s.member_id.is_empty()) {
                        tracing::warn!(
                            group = %settings.group, member = %s.member_id, error = %e,
                            "group membership lost; dropping partitions and rejoining"
                        );
                        s.member_id.clear();
                        s.epoch = 0;
                        s.lost = true;
                        s.allowed.clear();
                        s.last_ok = Instant::now();
                        changed.send_modify(|n| *n += 1);
                    } else {
                        tracing::debug!(group = %settings.group, error = %e, "heartbeat failed");
                    }
                    (s.interval / 2).min(Duration::from_millis(100 * u64::from(failures.min(10))))
                }
                Err(_) => s.interval,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = wake.notified() => {}
        }
    }
}

/// One offset to commit: the next offset to consume of a partition, and the
/// id of the topic it belongs to (when known: the coordinator refuses it
/// with `UNKNOWN_TOPIC_ID` if the topic was deleted or created again).
#[derive(Debug, Clone)]
pub(crate) struct OffsetToCommit {
    pub topic: Arc<str>,
    pub partition: u32,
    pub offset: u64,
    pub topic_id: Option<Arc<str>>,
}

/// Commits offsets as the current member (or, outside any membership, with
/// epoch -1), retrying once the member's epoch caught up when the
/// coordinator says a rebalance is in progress.
pub(crate) async fn commit(
    coordinator: &Coordinator,
    shared: Option<(&Mutex<Shared>, watch::Receiver<u64>)>,
    offsets: Vec<OffsetToCommit>,
    limit: Duration,
) -> Result<()> {
    if offsets.is_empty() {
        return Ok(());
    }
    let wire: Vec<OffsetCommit> = offsets
        .iter()
        .map(|o| OffsetCommit {
            topic: o.topic.to_string(),
            partition: o.partition,
            offset: o.offset,
            metadata: String::new(),
            topic_id: o.topic_id.as_deref().unwrap_or_default().to_string(),
        })
        .collect();
    let (shared, mut changed) = match shared {
        Some((s, rx)) => (Some(s), Some(rx)),
        None => (None, None),
    };
    if let Some(rx) = changed.as_mut() {
        // Wait only for answers that arrive from now on.
        rx.borrow_and_update();
    }
    let start = Instant::now();
    loop {
        let (member_id, member_epoch) = match shared {
            Some(s) => {
                let s = s.lock();
                if s.member_id.is_empty() {
                    return Err(ClientError::broker(
                        ErrorCode::Fenced,
                        "not a member of the group (joining): nothing can be committed now",
                    ));
                }
                (s.member_id.clone(), s.epoch)
            }
            None => (String::new(), -1),
        };
        let req = CommitOffsetsRequest {
            group: coordinator.group().to_string(),
            member_id,
            member_epoch,
            offsets: wire.clone(),
        };
        let r = coordinator
            .call(limit, |mut c| {
                let req = req.clone();
                async move { Ok(c.commit_offsets(req).await?.into_inner()) }
            })
            .await;
        match r {
            Ok(_) => return Ok(()),
            Err(e) if e.code() == Some(ErrorCode::RebalanceInProgress) && start.elapsed() < limit => {
                // Our epoch is behind: wait for the next heartbeat's answer.
                if let Some(rx) = changed.as_mut() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), rx.changed()).await;
                } else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            Err(e) => {
                if e.code() == Some(ErrorCode::Fenced)
                    && let Some(s) = shared
                {
                    // The coordinator does not know this member (it moved,
                    // or expired the session): as a fenced heartbeat, drop
                    // everything and join again with a fresh identity.
                    let mut s = s.lock();
                    if s.member_id == req.member_id && !s.member_id.is_empty() {
                        tracing::warn!(group = %req.group, member = %s.member_id, error = %e, "commit fenced; rejoining");
                        s.member_id.clear();
                        s.epoch = 0;
                        s.lost = true;
                        s.allowed.clear();
                    }
                }
                return Err(e);
            }
        }
    }
}
