//! One consumer group's membership and assignment, as a state machine the
//! coordinator drives with explicit times (so it is tested without clocks or
//! I/O).
//!
//! The protocol is Kafka's incremental one (KIP-848): members heartbeat with
//! what they hold; the coordinator keeps a *target* assignment per group
//! epoch and answers each member with what it may hold now.
//!
//! Invariants:
//! - a partition is *held* by a member while it is in that member's granted
//!   or reported-owned set; it is granted to another member only once no
//!   member holds it, so two live members never hold one partition;
//! - the group epoch grows whenever membership, subscriptions or partition
//!   counts change (a static member replacing itself does not change it);
//! - no target is computed while the group is held (the initial rebalance
//!   delay, or after a coordinator failover until every old member's session
//!   has run out).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::assignor::{Assignor, MemberSubscription, TopicPartition};
use super::store::Committed;

/// Why a member's request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberError {
    /// Not (or no longer) a member, or asking for what it does not hold.
    Fenced(String),
    /// The member's epoch is behind: it must heartbeat first.
    StaleEpoch {
        /// Epoch sent.
        sent: i32,
        /// The member's epoch now.
        current: i32,
    },
}

/// One member.
#[derive(Clone, Debug)]
pub struct Member {
    /// Coordinator-given id.
    pub id: String,
    /// Static membership id.
    pub instance_id: Option<String>,
    /// Free-form client name.
    pub client_id: String,
    /// Subscribed topics.
    pub topics: BTreeSet<String>,
    /// Removed when silent this long.
    pub session_timeout: Duration,
    /// Last heartbeat.
    pub last_seen: Instant,
    /// The group epoch of the last answer it got.
    pub epoch: i32,
    /// What it reported holding.
    pub owned: BTreeSet<TopicPartition>,
    /// What the last answer allowed it to hold.
    pub granted: BTreeSet<TopicPartition>,
    /// Partitions taken back, with the epoch of the answer that did: held
    /// until a heartbeat sent after that answer (its epoch at least that)
    /// no longer reports them, since a report built before the member saw
    /// the answer says nothing about them.
    pub revoking: BTreeMap<TopicPartition, i32>,
}

impl Member {
    /// Partitions this member may still be processing.
    pub fn holds(&self, tp: &TopicPartition) -> bool {
        self.owned.contains(tp) || self.granted.contains(tp) || self.revoking.contains_key(tp)
    }

    /// Everything it may still be processing.
    pub fn held(&self) -> impl Iterator<Item = &TopicPartition> {
        self.owned.iter().chain(self.granted.iter()).chain(self.revoking.keys())
    }
}

/// A join or heartbeat.
#[derive(Clone, Debug, Default)]
pub struct Heartbeat {
    /// Empty to join.
    pub member_id: String,
    /// Static id.
    pub instance_id: Option<String>,
    /// Client name.
    pub client_id: String,
    /// 0 to join.
    pub epoch: i32,
    /// Subscription.
    pub topics: BTreeSet<String>,
    /// Session timeout asked for.
    pub session_timeout: Duration,
    /// Currently held partitions.
    pub owned: BTreeSet<TopicPartition>,
}

/// The coordinator's answer to a heartbeat.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// Member id.
    pub member_id: String,
    /// Epoch to send next.
    pub epoch: i32,
    /// What it may hold now.
    pub assignment: BTreeSet<TopicPartition>,
}

/// One group.
#[derive(Clone, Debug)]
pub struct Group {
    /// Group id.
    pub name: String,
    /// Grows with every membership change.
    pub epoch: i32,
    /// Strategy (the first member's choice; later members must agree).
    pub assignor: Assignor,
    /// Members by id.
    pub members: BTreeMap<String, Member>,
    /// Target assignment by member id, for `target_epoch`.
    target: BTreeMap<String, BTreeSet<TopicPartition>>,
    target_epoch: i32,
    /// Partition counts the target was computed for.
    counts: BTreeMap<String, u32>,
    /// No target before this.
    pub hold_until: Option<Instant>,
    /// Committed offsets, with the topic id each was committed for.
    pub offsets: BTreeMap<TopicPartition, Committed>,
}

impl Group {
    /// An empty group.
    pub fn new(name: String) -> Self {
        Group {
            name,
            epoch: 0,
            assignor: Assignor::default(),
            members: BTreeMap::new(),
            target: BTreeMap::new(),
            target_epoch: -1,
            counts: BTreeMap::new(),
            hold_until: None,
            offsets: BTreeMap::new(),
        }
    }

    /// Every topic a member subscribes to.
    pub fn subscribed_topics(&self) -> BTreeSet<String> {
        self.members.values().flat_map(|m| m.topics.iter().cloned()).collect()
    }

    /// "Empty", "Assigning", "Reconciling" or "Stable".
    pub fn state_name(&self, now: Instant) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.hold_until.is_some_and(|h| now < h) || self.target_epoch != self.epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.granted != self.target_of(&m.id) || m.owned != m.granted || !m.revoking.is_empty())
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    fn target_of(&self, id: &str) -> BTreeSet<TopicPartition> {
        self.target.get(id).cloned().unwrap_or_default()
    }

    /// The largest session timeout of the members (how long an old member
    /// may go on believing it holds partitions).
    pub fn max_session_timeout(&self) -> Duration {
        self.members
            .values()
            .map(|m| m.session_timeout)
            .max()
            .unwrap_or_default()
    }

    fn bump(&mut self) {
        self.epoch += 1;
    }

    /// Handles a join (epoch 0) or heartbeat. `new_id` names a joining
    /// member; `initial_delay` holds the first rebalance of an empty group.
    ///
    /// # Errors
    /// [`MemberError::Fenced`] for an unknown member or an epoch it was never
    /// given.
    pub fn heartbeat(
        &mut self,
        now: Instant,
        hb: Heartbeat,
        new_id: impl FnOnce() -> String,
        initial_delay: Duration,
        counts: &BTreeMap<String, u32>,
    ) -> Result<Answer, MemberError> {
        let id = if hb.epoch == 0 {
            self.join(now, &hb, new_id, initial_delay)
        } else {
            let Some(m) = self.members.get_mut(&hb.member_id) else {
                return Err(MemberError::Fenced(format!(
                    "member {} is not in group {} (its session expired, it left, or it was replaced)",
                    hb.member_id, self.name
                )));
            };
            if hb.epoch > m.epoch {
                return Err(MemberError::Fenced(format!(
                    "member {} sent epoch {} but was only given {}",
                    hb.member_id, hb.epoch, m.epoch
                )));
            }
            m.last_seen = now;
            // A member can only hold what it was given.
            let given: BTreeSet<TopicPartition> = m.held().cloned().collect();
            m.owned = hb.owned.intersection(&given).cloned().collect();
            let (epoch, owned) = (hb.epoch, &m.owned);
            m.revoking.retain(|tp, at| epoch < *at || owned.contains(tp));
            if m.topics != hb.topics {
                m.topics = hb.topics.clone();
                self.bump();
            }
            hb.member_id.clone()
        };
        self.refresh(now, counts);
        Ok(self.answer(&id))
    }

    fn join(&mut self, now: Instant, hb: &Heartbeat, new_id: impl FnOnce() -> String, delay: Duration) -> String {
        let id = new_id();
        // Static membership: a restarted instance takes its old place (and
        // partitions) with no rebalance; the old incarnation is fenced.
        if let Some(instance) = &hb.instance_id
            && let Some(old_id) = self
                .members
                .iter()
                .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                .map(|(k, _)| k.clone())
            && let Some(mut old) = self.members.remove(&old_id)
        {
            let topics_changed = old.topics != hb.topics;
            old.id = id.clone();
            old.client_id = hb.client_id.clone();
            old.topics = hb.topics.clone();
            old.session_timeout = hb.session_timeout;
            old.last_seen = now;
            // The new process holds nothing yet; what the old one was granted
            // stays granted to this member.
            old.owned = BTreeSet::new();
            old.revoking.clear();
            if let Some(t) = self.target.remove(&old_id) {
                self.target.insert(id.clone(), t);
            }
            self.members.insert(id.clone(), old);
            if topics_changed {
                self.bump();
            }
            return id;
        }
        if self.members.is_empty() && self.hold_until.is_none_or(|h| h <= now) {
            self.hold_until = Some(now + delay);
        }
        self.members.insert(
            id.clone(),
            Member {
                id: id.clone(),
                instance_id: hb.instance_id.clone(),
                client_id: hb.client_id.clone(),
                topics: hb.topics.clone(),
                session_timeout: hb.session_timeout,
                last_seen: now,
                epoch: 0,
                owned: BTreeSet::new(),
                granted: BTreeSet::new(),
                revoking: BTreeMap::new(),
            },
        );
        self.bump();
        id
    }

    /// Removes a member (leave). A static member leaving temporarily keeps
    /// its place until its session times out.
    pub fn leave(&mut self, now: Instant, member_id: &str, temporarily: bool, counts: &BTreeMap<String, u32>) {
        if temporarily
            && let Some(m) = self.members.get_mut(member_id)
            && m.instance_id.is_some()
        {
            // Its process is gone: it holds nothing, but keeps its grant.
            m.owned.clear();
            m.revoking.clear();
            return;
        }
        if self.members.remove(member_id).is_some() {
            self.target.remove(member_id);
            self.bump();
            self.refresh(now, counts);
        }
    }

    /// Removes members whose session ran out; returns their ids.
    pub fn expire(&mut self, now: Instant, counts: &BTreeMap<String, u32>) -> Vec<String> {
        let dead: Vec<String> = self
            .members
            .values()
            .filter(|m| now.saturating_duration_since(m.last_seen) > m.session_timeout)
            .map(|m| m.id.clone())
            .collect();
        for id in &dead {
            self.members.remove(id);
            self.target.remove(id);
        }
        if !dead.is_empty() {
            self.bump();
        }
        self.refresh(now, counts);
        dead
    }

    /// Recomputes the target when the epoch or partition counts moved and
    /// the group is not held.
    pub fn refresh(&mut self, now: Instant, counts: &BTreeMap<String, u32>) {
        let relevant: BTreeMap<String, u32> = self
            .subscribed_topics()
            .into_iter()
            .filter_map(|t| counts.get(&t).map(|n| (t, *n)))
            .collect();
        if relevant != self.counts && self.target_epoch == self.epoch {
            self.bump();
        }
        if self.hold_until.is_some_and(|h| now < h) || self.target_epoch == self.epoch {
            return;
        }
        self.hold_until = None;
        let subs: Vec<MemberSubscription> = self
            .members
            .values()
            .map(|m| MemberSubscription {
                id: m.id.clone(),
                topics: m.topics.clone(),
            })
            .collect();
        self.target = self.assignor.assign(&subs, &relevant, &self.target);
        self.counts = relevant;
        self.target_epoch = self.epoch;
    }

    /// What `id` may hold now: its target minus what others still hold;
    /// records the grant and moves the member to the group epoch.
    fn answer(&mut self, id: &str) -> Answer {
        let target = self.target_of(id);
        let held_by_others: BTreeSet<TopicPartition> = self
            .members
            .values()
            .filter(|m| m.id != id)
            .flat_map(|m| m.held().cloned())
            .collect();
        let epoch = self.epoch;
        let Some(m) = self.members.get_mut(id) else {
            return Answer {
                member_id: id.to_string(),
                epoch,
                assignment: BTreeSet::new(),
            };
        };
        let grant: BTreeSet<TopicPartition> = target
            .into_iter()
            .filter(|tp| m.owned.contains(tp) || !held_by_others.contains(tp))
            .collect();
        for tp in m.granted.difference(&grant) {
            m.revoking.entry(tp.clone()).or_insert(epoch);
        }
        for tp in &grant {
            m.revoking.remove(tp);
        }
        m.granted = grant.clone();
        m.epoch = epoch;
        Answer {
            member_id: id.to_string(),
            epoch,
            assignment: grant,
        }
    }

    /// Checks a commit: the member exists, its epoch is current, and it
    /// holds every partition it commits.
    ///
    /// # Errors
    /// [`MemberError::Fenced`] or [`MemberError::StaleEpoch`].
    pub fn check_commit<'a>(
        &self,
        member_id: &str,
        epoch: i32,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<(), MemberError> {
        let Some(m) = self.members.get(member_id) else {
            return Err(MemberError::Fenced(format!(
                "member {member_id} is not in group {}: its commit is refused",
                self.name
            )));
        };
        if epoch < m.epoch {
            return Err(MemberError::StaleEpoch {
                sent: epoch,
                current: m.epoch,
            });
        }
        if epoch > m.epoch {
            return Err(MemberError::Fenced(format!(
                "member {member_id} sent epoch {epoch} but was only given {}",
                m.epoch
            )));
        }
        if let Some(tp) = partitions.into_iter().find(|tp| !m.holds(tp)) {
            return Err(MemberError::Fenced(format!(
                "{}/{} is not assigned to member {member_id}",
                tp.0, tp.1
            )));
        }
        Ok(())
    }

    /// Removes every member (a forced offset reset): they are fenced and
    /// rejoin.
    pub fn fence_all(&mut self) {
        if !self.members.is_empty() {
            self.members.clear();
            self.target.clear();
            self.bump();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DELAY: Duration = Duration::from_secs(3);
    const SESSION: Duration = Duration::from_secs(10);

    struct Harness {
        g: Group,
        now: Instant,
        counts: BTreeMap<String, u32>,
        next: u32,
    }

    impl Harness {
        fn new(partitions: u32) -> Self {
            Harness {
                g: Group::new("g".into()),
                now: Instant::now(),
                counts: BTreeMap::from([("t".to_string(), partitions)]),
                next: 0,
            }
        }

        fn hb(&mut self, id: &str, epoch: i32, owned: &BTreeSet<TopicPartition>, instance: Option<&str>) -> Answer {
            self.next += 1;
            let n = self.next;
            self.g
                .heartbeat(
                    self.now,
                    Heartbeat {
                        member_id: id.into(),
                        instance_id: instance.map(Into::into),
                        epoch,
                        topics: BTreeSet::from(["t".to_string()]),
                        session_timeout: SESSION,
                        owned: owned.clone(),
                        ..Default::default()
                    },
                    || format!("m{n:02}"),
                    DELAY,
                    &self.counts,
                )
                .expect("heartbeat accepted")
        }

        fn advance(&mut self, d: Duration) {
            self.now += d;
        }

        /// Heartbeats every member until nothing changes, each taking what
        /// it was granted (and releasing what was revoked).
        fn settle(&mut self, answers: &mut BTreeMap<String, Answer>) {
            for _ in 0..10 {
                let mut changed = false;
                let ids: Vec<String> = answers.keys().cloned().collect();
                for id in ids {
                    let a = answers[&id].clone();
                    let next = self.hb(&id, a.epoch, &a.assignment, None);
                    changed |= next != a;
                    answers.insert(id, next);
                }
                if !changed {
                    return;
                }
            }
            panic!("did not settle");
        }
    }

    fn no_overlap(answers: &BTreeMap<String, Answer>) {
        let mut seen = BTreeSet::new();
        for a in answers.values() {
            for tp in &a.assignment {
                assert!(seen.insert(tp.clone()), "{tp:?} held twice: {answers:?}");
            }
        }
    }

    #[test]
    fn first_rebalance_waits_for_the_initial_delay_then_splits_evenly() {
        let mut h = Harness::new(6);
        let mut answers = BTreeMap::new();
        for _ in 0..3 {
            let a = h.hb("", 0, &BTreeSet::new(), None);
            assert!(a.assignment.is_empty(), "nothing assigned during the delay");
            answers.insert(a.member_id.clone(), a);
        }
        h.settle(&mut answers);
        assert!(answers.values().all(|a| a.assignment.is_empty()));
        h.advance(DELAY);
        h.settle(&mut answers);
        assert!(answers.values().all(|a| a.assignment.len() == 2), "{answers:?}");
        assert_eq!(h.g.state_name(h.now), "Stable");
        no_overlap(&answers);
    }

    #[test]
    fn a_joining_member_gets_partitions_only_after_their_owner_released_them() {
        let mut h = Harness::new(6);
        let mut answers = BTreeMap::new();
        for _ in 0..3 {
            let a = h.hb("", 0, &BTreeSet::new(), None);
            answers.insert(a.member_id.clone(), a);
        }
        h.advance(DELAY);
        h.settle(&mut answers);
        let before: BTreeMap<String, BTreeSet<TopicPartition>> =
            answers.iter().map(|(k, a)| (k.clone(), a.assignment.clone())).collect();
        let d = h.hb("", 0, &BTreeSet::new(), None);
        assert!(d.assignment.is_empty(), "the partition it gets is still held");
        answers.insert(d.member_id.clone(), d);
        // Step by step: no answer ever overlaps another member's holdings.
        for _ in 0..4 {
            let ids: Vec<String> = answers.keys().cloned().collect();
            for id in ids {
                let a = answers[&id].clone();
                let next = h.hb(&id, a.epoch, &a.assignment, None);
                answers.insert(id, next);
                no_overlap(&answers);
            }
        }
        let moved: usize = before
            .iter()
            .map(|(k, set)| set.difference(&answers[k].assignment).count())
            .sum();
        assert_eq!(moved, 1, "cooperative: only one partition moves");
        assert_eq!(answers.values().map(|a| a.assignment.len()).sum::<usize>(), 6);
    }

    #[test]
    fn a_report_sent_before_the_revocation_was_seen_does_not_release_anything() {
        let mut h = Harness::new(2);
        let a = h.hb("", 0, &BTreeSet::new(), None);
        let mut answers = BTreeMap::from([(a.member_id.clone(), a)]);
        h.advance(DELAY);
        h.settle(&mut answers);
        let (a_id, a_old) = answers.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
        assert_eq!(a_old.assignment.len(), 2);
        let b = h.hb("", 0, &BTreeSet::new(), None);
        // a's report, built before it saw any answer of the new epoch, lacks
        // a partition it may be taking right now: nothing is released.
        let a_new = h.hb(&a_id, a_old.epoch, &BTreeSet::new(), None);
        assert_eq!(a_new.assignment.len(), 1, "one partition revoked");
        let b2 = h.hb(&b.member_id, b.epoch, &BTreeSet::new(), None);
        assert!(b2.assignment.is_empty(), "not granted before a confirms: {b2:?}");
        // a, having seen the revocation, reports holding only what it kept.
        h.hb(&a_id, a_new.epoch, &a_new.assignment, None);
        let b3 = h.hb(&b.member_id, b2.epoch, &BTreeSet::new(), None);
        assert_eq!(b3.assignment.len(), 1);
        assert!(b3.assignment.is_disjoint(&a_new.assignment));
    }

    #[test]
    fn a_silent_member_expires_and_its_partitions_move() {
        let mut h = Harness::new(4);
        let mut answers = BTreeMap::new();
        for _ in 0..2 {
            let a = h.hb("", 0, &BTreeSet::new(), None);
            answers.insert(a.member_id.clone(), a);
        }
        h.advance(DELAY);
        h.settle(&mut answers);
        let dead = answers.keys().next().cloned().unwrap();
        answers.remove(&dead);
        h.advance(SESSION + Duration::from_millis(1));
        let counts = h.counts.clone();
        // The survivor heartbeats regularly; only the dead one is silent.
        let survivor = answers.keys().next().cloned().unwrap();
        answers.get_mut(&survivor).unwrap();
        h.g.members.get_mut(&survivor).unwrap().last_seen = h.now;
        assert_eq!(h.g.expire(h.now, &counts), vec![dead.clone()]);
        h.settle(&mut answers);
        assert_eq!(answers[&survivor].assignment.len(), 4);
        assert!(h.g.check_commit(&dead, 1, []).is_err(), "a dead member is fenced");
    }

    #[test]
    fn a_static_member_rejoining_keeps_its_partitions_without_a_rebalance() {
        let mut h = Harness::new(4);
        let a = h.hb("", 0, &BTreeSet::new(), Some("i-a"));
        let b = h.hb("", 0, &BTreeSet::new(), Some("i-b"));
        let mut answers = BTreeMap::from([(a.member_id.clone(), a), (b.member_id.clone(), b)]);
        h.advance(DELAY);
        h.settle(&mut answers);
        let epoch = h.g.epoch;
        let (old_id, old) = answers.iter().next().map(|(k, v)| (k.clone(), v.clone())).unwrap();
        let instance = h.g.members[&old_id].instance_id.clone().unwrap();
        let again = h.hb("", 0, &BTreeSet::new(), Some(&instance));
        assert_eq!(again.assignment, old.assignment, "same partitions back");
        assert_eq!(h.g.epoch, epoch, "no rebalance");
        assert!(
            matches!(h.g.check_commit(&old_id, old.epoch, []), Err(MemberError::Fenced(_))),
            "the old incarnation is fenced"
        );
    }

    #[test]
    fn commits_are_checked_for_membership_epoch_and_ownership() {
        let mut h = Harness::new(2);
        let a = h.hb("", 0, &BTreeSet::new(), None);
        h.advance(DELAY);
        let a = h.hb(&a.member_id, a.epoch, &BTreeSet::new(), None);
        let tp = ("t".to_string(), 0);
        assert!(h.g.check_commit(&a.member_id, a.epoch, [&tp]).is_ok());
        assert_eq!(
            h.g.check_commit(&a.member_id, a.epoch - 1, [&tp]),
            Err(MemberError::StaleEpoch {
                sent: a.epoch - 1,
                current: a.epoch
            })
        );
        let other = ("t".to_string(), 9);
        assert!(matches!(
            h.g.check_commit(&a.member_id, a.epoch, [&other]),
            Err(MemberError::Fenced(_))
        ));
        assert!(matches!(h.g.check_commit("nobody", 1, []), Err(MemberError::Fenced(_))));
    }

    #[test]
    fn new_partitions_trigger_a_rebalance() {
        let mut h = Harness::new(2);
        let a = h.hb("", 0, &BTreeSet::new(), None);
        let mut answers = BTreeMap::from([(a.member_id.clone(), a)]);
        h.advance(DELAY);
        h.settle(&mut answers);
        let epoch = h.g.epoch;
        h.counts.insert("t".into(), 4);
        h.settle(&mut answers);
        assert!(h.g.epoch > epoch);
        assert_eq!(answers.values().next().unwrap().assignment.len(), 4);
    }
}
