//! Quiescence: idle groups stop ticking, so ten thousand partitions that
//! nobody writes cost nothing (TiKV's hibernate regions).
//!
//! A leader whose group has been idle for [`IDLE_HEARTBEATS`] heartbeat
//! intervals — nothing proposed or appended, every replica holding and
//! having committed its whole log, no membership change, transfer or
//! catch-up under way, every replica heard from recently — tells its peers
//! ([`QuiesceNotice`]) and stops ticking. A follower that receives the
//! notice from the leader it follows, in its term, holding exactly the
//! leader's log and commit, stops ticking too; one that does not agree
//! keeps ticking, and its (pre-)vote wakes the others.
//!
//! What keeps elections safe without per-group heartbeats is the node-level
//! heartbeat ([`PeerClocks`]): every node hears from each peer it shares a
//! group with at least every heartbeat interval (a `ping` batch when nothing
//! else went). A peer silent for an election timeout is down: every quiet
//! group it belongs to wakes, so followers of a dead leader elect a new one
//! and a leader cut off from its followers steps down through
//! `check_quorum`, as awake groups do. When the peer is heard again its
//! groups wake as well, to resynchronize.
//!
//! Invariants: a quiet replica wakes on any Raft message for its group but
//! heartbeats (the last ones cross the notice; a quiet group relies on the
//! node-level heartbeat, not its own), any catch-up, proposal, membership,
//! leadership or term command, and any change of a peer's liveness; a woken follower restarts its election
//! clock, so it gives an awake leader a whole election timeout before it
//! campaigns. A replica that is recovering, failed or waiting for a term
//! floor never quiesces.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use raft::StateRole;
use strand_storage::{RaftIndex, Term};

use crate::ids::NodeId;
use crate::replica::Replica;
use crate::transport::QuiesceNotice;

/// Heartbeat intervals a leader's group must be idle before it quiesces
/// (2 s at the default 100 ms tick and 5-tick heartbeat).
pub(crate) const IDLE_HEARTBEATS: u32 = 4;

/// When each peer was last heard from and sent to, and whether it counts as
/// down.
#[derive(Debug, Default)]
pub(crate) struct PeerClocks {
    peers: HashMap<NodeId, PeerClock>,
}

#[derive(Debug, Clone, Copy)]
struct PeerClock {
    heard: Instant,
    sent: Option<Instant>,
    down: bool,
}

/// What one check of the peers found.
#[derive(Debug, Default)]
pub(crate) struct PeerCheck {
    /// Peers to ping: nothing went to them for a heartbeat interval.
    pub ping: Vec<NodeId>,
    /// Peers that went down or came back: their quiet groups must wake.
    pub changed: Vec<NodeId>,
}

impl PeerClocks {
    /// Notes a batch from `peer`.
    pub(crate) fn heard(&mut self, peer: NodeId, now: Instant) {
        let c = self.peers.entry(peer).or_insert(PeerClock {
            heard: now,
            sent: None,
            down: false,
        });
        c.heard = now;
    }

    /// Notes a batch sent to `peer`.
    pub(crate) fn sent(&mut self, peer: NodeId, now: Instant) {
        if let Some(c) = self.peers.get_mut(&peer) {
            c.sent = Some(now);
        }
    }

    /// Checks the peers this node shares a group with (`known`): which to
    /// ping, and which changed between alive and down. A peer seen for the
    /// first time starts alive, with the timeout as its grace.
    pub(crate) fn check(
        &mut self,
        known: &HashSet<NodeId>,
        now: Instant,
        heartbeat: Duration,
        timeout: Duration,
    ) -> PeerCheck {
        self.peers.retain(|n, _| known.contains(n));
        let mut out = PeerCheck::default();
        for &n in known {
            let c = self.peers.entry(n).or_insert(PeerClock {
                heard: now,
                sent: None,
                down: false,
            });
            if c.sent.is_none_or(|t| now.duration_since(t) >= heartbeat) {
                out.ping.push(n);
            }
            let down = now.duration_since(c.heard) > timeout;
            if down != c.down {
                c.down = down;
                out.changed.push(n);
            }
        }
        out
    }
}

impl Replica {
    /// Whether the replica stopped ticking (see the module doc).
    pub(crate) fn is_quiet(&self) -> bool {
        self.quiet
    }

    /// Something happened to the group: count its idleness from zero, and
    /// tick again if it was quiet.
    pub(crate) fn wake(&mut self) {
        self.idle_heartbeats = 0;
        if self.quiet {
            self.quiet = false;
            if self.node.raft.state != StateRole::Leader {
                // A whole election timeout for the leader to be heard from.
                self.node.raft.election_elapsed = 0;
            }
            tracing::trace!("replica woke");
            self.publish_status();
        }
    }

    /// Called on heartbeat ticks of an awake replica. As a leader idle long
    /// enough, with every replica holding its whole log: goes quiet and
    /// returns the notice for its peers.
    pub(crate) fn try_quiesce(&mut self, recently: Duration) -> Option<QuiesceNotice> {
        self.idle_heartbeats = self.idle_heartbeats.saturating_add(1);
        if self.quiet || self.idle_heartbeats < IDLE_HEARTBEATS || !self.may_quiesce(recently) {
            return None;
        }
        self.quiet = true;
        tracing::trace!("replica quiesced");
        self.publish_status();
        Some(QuiesceNotice {
            group: self.group,
            term: Term(self.node.raft.term),
            index: self.last_index(),
        })
    }

    /// The group's other voters and learners, as this replica's
    /// configuration says.
    pub(crate) fn peers(&self) -> Vec<NodeId> {
        let me = self.node.raft.id;
        let conf = self.node.raft.prs().conf();
        conf.voters()
            .ids()
            .iter()
            .chain(conf.learners().iter().copied())
            .filter(|&id| id != me)
            .map(NodeId)
            .collect()
    }

    fn may_quiesce(&self, recently: Duration) -> bool {
        let raft = &self.node.raft;
        let last = raft.raft_log.last_index();
        let me = raft.id;
        raft.state == StateRole::Leader
            && self.may_stand()
            && !self.is_awaiting_term()
            && self.has_nothing_pending()
            && raft.lead_transferee.is_none()
            && raft.pending_conf_index <= raft.raft_log.applied
            && raft.raft_log.committed == last
            && raft.raft_log.applied == last
            && self.catch_ups_idle()
            && raft
                .prs()
                .iter()
                .all(|(&id, p)| id == me || (p.matched == last && self.heard_within(NodeId(id), recently)))
    }

    /// A leader's notice from `from`: go quiet if this replica follows
    /// `from` in the notice's term and holds exactly its log, committed.
    pub(crate) fn accept_quiesce(&mut self, from: NodeId, notice: &QuiesceNotice) -> bool {
        let raft = &self.node.raft;
        let agrees = raft.state == StateRole::Follower
            && raft.leader_id == from.get()
            && Term(raft.term) == notice.term
            && RaftIndex(raft.raft_log.last_index()) == notice.index
            && RaftIndex(raft.raft_log.committed) == notice.index
            && self.may_stand()
            && !self.is_awaiting_term()
            && self.catch_ups_idle();
        if agrees {
            self.quiet = true;
            tracing::trace!("replica quiesced with its leader");
            self.publish_status();
        }
        agrees
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_go_down_after_the_timeout_and_come_back_when_heard() {
        let mut clocks = PeerClocks::default();
        let t0 = Instant::now();
        let hb = Duration::from_millis(500);
        let timeout = Duration::from_secs(1);
        let known: HashSet<NodeId> = [NodeId(2), NodeId(3)].into();
        let c = clocks.check(&known, t0, hb, timeout);
        assert_eq!(c.ping.len(), 2, "never sent to: ping both");
        assert!(c.changed.is_empty());
        clocks.sent(NodeId(2), t0);
        clocks.sent(NodeId(3), t0);
        clocks.heard(NodeId(2), t0 + Duration::from_millis(900));
        let c = clocks.check(&known, t0 + Duration::from_millis(1200), hb, timeout);
        assert_eq!(c.changed, vec![NodeId(3)], "3 silent past the timeout");
        let c = clocks.check(&known, t0 + Duration::from_millis(1300), hb, timeout);
        assert!(c.changed.is_empty(), "reported once");
        clocks.heard(NodeId(3), t0 + Duration::from_millis(1400));
        let c = clocks.check(&known, t0 + Duration::from_millis(1500), hb, timeout);
        assert_eq!(c.changed, vec![NodeId(3)], "back");
    }
}
