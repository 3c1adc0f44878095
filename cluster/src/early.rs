//! Messages for groups this node does not host yet.
//!
//! Every broker hosts a new topic's replicas as it applies the metadata,
//! some sooner than others, and the preferred leader campaigns as soon as
//! it hosts its replica. A vote request that reaches a peer a moment
//! before that peer hosts the group used to be dropped, and the candidate
//! waited out a randomized election timeout (1–2 s) before it tried again:
//! with thousands of partitions created at once, most of them did. The
//! same happens to a broker restarting with thousands of replicas, which
//! hosts them over seconds while its peers' messages arrive.
//!
//! Held here instead, and stepped once the group is hosted, they elect the
//! group at once. That is safe because Raft tolerates any delay of a
//! message: a held message is a late one, and one held too long is
//! dropped, as the network may drop it. Only messages without entries are
//! held (votes, pre-votes, their answers, heartbeats, probes), so memory
//! is bounded by the count ([`EarlyMessages::CAPACITY`]) times a few
//! hundred bytes.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use raft::eraftpb::Message;

use crate::ids::{NodeId, RaftGroupId};

/// Messages for unhosted groups, bounded in count and age.
#[derive(Debug)]
pub(crate) struct EarlyMessages {
    by_group: HashMap<RaftGroupId, Vec<Held>>,
    held: usize,
    /// How long a message is kept: after that its sender has moved on (a
    /// candidate campaigns again after one election timeout).
    max_age: Duration,
}

#[derive(Debug)]
struct Held {
    at: Instant,
    from: NodeId,
    message: Message,
}

impl EarlyMessages {
    /// Most messages held at once, across groups.
    pub(crate) const CAPACITY: usize = 65_536;

    pub(crate) fn new(max_age: Duration) -> Self {
        EarlyMessages {
            by_group: HashMap::new(),
            held: 0,
            max_age,
        }
    }

    /// Keeps `m` for `group` until it is hosted; `false` if it was not kept
    /// (it carries entries, or too many are held).
    pub(crate) fn hold(&mut self, group: RaftGroupId, from: NodeId, m: Message, now: Instant) -> bool {
        if !m.entries.is_empty() || m.has_snapshot() || self.held >= Self::CAPACITY {
            return false;
        }
        self.by_group.entry(group).or_default().push(Held {
            at: now,
            from,
            message: m,
        });
        self.held += 1;
        true
    }

    /// The messages held for `group` that are still fresh, oldest first;
    /// none are held for it afterwards.
    pub(crate) fn take(&mut self, group: RaftGroupId, now: Instant) -> Vec<(NodeId, Message)> {
        let Some(held) = self.by_group.remove(&group) else {
            return Vec::new();
        };
        self.held -= held.len();
        let max_age = self.max_age;
        held.into_iter()
            .filter(|h| now.saturating_duration_since(h.at) <= max_age)
            .map(|h| (h.from, h.message))
            .collect()
    }

    /// Drops every message older than the age limit.
    pub(crate) fn expire(&mut self, now: Instant) {
        if self.held == 0 {
            return;
        }
        let max_age = self.max_age;
        let mut held = 0;
        self.by_group.retain(|_, msgs| {
            msgs.retain(|h| now.saturating_duration_since(h.at) <= max_age);
            held += msgs.len();
            !msgs.is_empty()
        });
        self.held = held;
    }

    /// Messages held now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.held
    }
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{Entry, MessageType};

    use super::*;

    fn vote(term: u64) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgRequestPreVote);
        m.term = term;
        m
    }

    #[test]
    fn held_messages_come_back_once_in_order_and_stale_ones_never() {
        let t0 = Instant::now();
        let mut early = EarlyMessages::new(Duration::from_secs(1));
        let (g, h) = (RaftGroupId(1), RaftGroupId(2));
        assert!(early.hold(g, NodeId(2), vote(1), t0));
        assert!(early.hold(g, NodeId(3), vote(2), t0 + Duration::from_millis(600)));
        assert!(early.hold(h, NodeId(2), vote(3), t0));
        assert_eq!(early.len(), 3);
        // 1.2 s later the first is too old; the second is not.
        let got = early.take(g, t0 + Duration::from_millis(1200));
        assert_eq!(got.len(), 1);
        assert_eq!((got[0].0, got[0].1.term), (NodeId(3), 2));
        assert!(early.take(g, t0).is_empty(), "handed over once");
        assert_eq!(early.len(), 1);
        early.expire(t0 + Duration::from_secs(2));
        assert_eq!(early.len(), 0);
        assert!(early.take(h, t0).is_empty());
    }

    #[test]
    fn messages_with_entries_and_more_than_the_capacity_are_not_held() {
        let t0 = Instant::now();
        let mut early = EarlyMessages::new(Duration::from_secs(1));
        let mut append = Message::default();
        append.set_msg_type(MessageType::MsgAppend);
        append.entries.push(Entry::default());
        assert!(!early.hold(RaftGroupId(1), NodeId(2), append, t0));
        for i in 0..EarlyMessages::CAPACITY {
            assert!(early.hold(RaftGroupId(i as u64 % 100), NodeId(2), vote(1), t0));
        }
        assert!(!early.hold(RaftGroupId(7), NodeId(2), vote(1), t0));
        assert_eq!(early.len(), EarlyMessages::CAPACITY);
    }
}
