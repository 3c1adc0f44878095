//! Moving partition replicas between brokers (`topic reassign`, and brokers
//! that join a running cluster).
//!
//! The controller records the target ([`Command::Reassign`]); every broker
//! then hosts the partition on its current and its target replicas. The
//! partition's leader moves its Raft group one single-server change at a
//! time: add each new broker as a learner, promote it once it has every
//! entry, remove each old broker (handing leadership to a target replica
//! first if it is itself leaving), and finally reports the move done
//! ([`Command::FinishReassign`]); brokers no longer hosting the partition
//! then stop and delete their replica.
//!
//! Invariants: a change is proposed only when the previous one is applied
//! (raft-rs refuses otherwise), a learner votes only once it holds the
//! leader's whole log, and the metadata's replica list changes only once
//! the group's configuration equals it.

use std::sync::Arc;

use strand_cluster::ReplicaChange;

use crate::controller::{CONTROLLER_GROUP, Command};
use crate::error::{BrokerError, Result};
use crate::state::BrokerState;

/// One step of the leader's work on a moving partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Propose this change.
    Change(ReplicaChange),
    /// Hand leadership to this target replica (the leader is leaving).
    Transfer(u64),
    /// The group has exactly the target: record the move done.
    Finish,
    /// Wait (a learner is catching up).
    Wait,
}

/// What the leader `me` should do next to move a group with `voters` and
/// `learners` (and per-node matched index, `last` the leader's last index)
/// to `target`.
pub fn next_step(me: u64, target: &[u64], voters: &[u64], learners: &[u64], matched: &[(u64, u64)], last: u64) -> Step {
    let caught_up = |n: u64| matched.iter().any(|(id, m)| *id == n && *m >= last);
    if let Some(n) = target.iter().find(|n| !voters.contains(n) && !learners.contains(n)) {
        return Step::Change(ReplicaChange::AddLearner(*n));
    }
    if let Some(n) = learners.iter().find(|n| !target.contains(n)) {
        return Step::Change(ReplicaChange::Remove(*n));
    }
    if let Some(n) = learners.iter().find(|n| target.contains(n)) {
        return if caught_up(*n) {
            Step::Change(ReplicaChange::Promote(*n))
        } else {
            Step::Wait
        };
    }
    if let Some(n) = voters.iter().find(|n| !target.contains(n)) {
        if *n == me {
            return match target.iter().find(|t| caught_up(**t)) {
                Some(t) => Step::Transfer(*t),
                None => Step::Wait,
            };
        }
        return Step::Change(ReplicaChange::Remove(*n));
    }
    Step::Finish
}

/// Drives every moving partition this broker leads one step (called
/// periodically).
pub async fn drive(state: &Arc<BrokerState>) {
    let meta = state.metadata();
    for t in meta.topics.values() {
        for (&p, target) in &t.moving {
            let Ok(part) = state.partition(&t.meta.name, p) else {
                continue;
            };
            let st = part.status();
            if !st.is_leader {
                continue;
            }
            let matched: Vec<(u64, u64)> = st.replicas.iter().map(|r| (r.node, r.matched)).collect();
            let step = next_step(state.node_id, target, &st.voters, &st.learners, &matched, st.last_index);
            tracing::debug!(topic = %t.meta.name, partition = p, ?step, ?target, voters = ?st.voters, learners = ?st.learners, "moving replicas");
            let r = match step {
                Step::Change(c) => state
                    .node
                    .change_replicas(part.group(), c)
                    .await
                    .map_err(crate::state::cluster_error),
                Step::Transfer(to) => state
                    .node
                    .transfer_leader(part.group(), to)
                    .map_err(crate::state::cluster_error),
                Step::Wait => Ok(()),
                Step::Finish => {
                    crate::service::admin::reassign(state, t.meta.name.clone(), p, target.clone(), true, false).await
                }
            };
            if let Err(e) = r {
                tracing::debug!(topic = %t.meta.name, partition = p, error = %e, "replica move step not taken; retrying");
            }
        }
    }
}

/// Checks a requested replica list against the cluster.
pub fn validate_replicas(state: &BrokerState, replicas: &[u64]) -> Result<()> {
    let brokers = state.brokers();
    let mut seen = std::collections::BTreeSet::new();
    if replicas.is_empty() {
        return Err(BrokerError::InvalidRequest {
            reason: "a partition needs at least one replica".into(),
        });
    }
    for r in replicas {
        if !brokers.contains_key(r) {
            return Err(BrokerError::InvalidRequest {
                reason: format!(
                    "broker {r} is not in the cluster (brokers: {:?})",
                    brokers.keys().collect::<Vec<_>>()
                ),
            });
        }
        if !seen.insert(r) {
            return Err(BrokerError::InvalidRequest {
                reason: format!("broker {r} appears twice"),
            });
        }
    }
    Ok(())
}

/// Adds a joining broker as a learner of the controller group, so it
/// receives the metadata (it never votes there: the controller's voters are
/// the brokers the cluster was formed with).
pub async fn add_controller_learner(state: &BrokerState, id: u64) -> Result<()> {
    let deadline = tokio::time::Instant::now() + state.config.request_timeout();
    loop {
        let st = state.controller_status();
        if st.learners.contains(&id) || st.voters.contains(&id) {
            return Ok(());
        }
        match state
            .node
            .change_replicas(CONTROLLER_GROUP, ReplicaChange::AddLearner(id))
            .await
        {
            Ok(()) => {}
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(crate::state::cluster_error(e)),
            Err(e) => tracing::debug!(node = id, error = %e, "controller learner not added yet; retrying"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The metadata command that records a broker joining.
pub fn add_broker(id: u64, addr: String) -> Command {
    Command::AddBroker { id, addr }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_move_adds_promotes_then_removes_one_at_a_time() {
        // [1,2,3] -> [4,2,3], led by 1.
        let t = [4, 2, 3];
        let all_matched = [(1, 10), (2, 10), (3, 10), (4, 10)];
        assert_eq!(
            next_step(1, &t, &[1, 2, 3], &[], &all_matched, 10),
            Step::Change(ReplicaChange::AddLearner(4))
        );
        assert_eq!(
            next_step(1, &t, &[1, 2, 3], &[4], &[(4, 3)], 10),
            Step::Wait,
            "catching up"
        );
        assert_eq!(
            next_step(1, &t, &[1, 2, 3], &[4], &all_matched, 10),
            Step::Change(ReplicaChange::Promote(4))
        );
        // The leader itself leaves: it hands over first.
        assert_eq!(
            next_step(1, &t, &[1, 2, 3, 4], &[], &all_matched, 10),
            Step::Transfer(4)
        );
        assert_eq!(
            next_step(2, &t, &[1, 2, 3, 4], &[], &all_matched, 10),
            Step::Change(ReplicaChange::Remove(1))
        );
        assert_eq!(next_step(2, &t, &[2, 3, 4], &[], &all_matched, 10), Step::Finish);
        // A learner that is no longer wanted goes.
        assert_eq!(
            next_step(2, &[2, 3], &[2, 3], &[5], &all_matched, 10),
            Step::Change(ReplicaChange::Remove(5))
        );
    }
}
