//! Term floors for replicas that lost their term.
//!
//! A replica whose Raft state was lost (a wiped disk, a missing state file,
//! a fresh copy of a moved group) does not know how far its group's terms
//! went while it was gone, and takes no message until it does (see
//! `strand_cluster`'s `Replica::await_term`): a leader deposed meanwhile
//! still believes it leads, and acknowledgements from a replica that forgot
//! the newer terms would let it commit in its stale term. The floor is the
//! highest term among enough of the group's other replicas that at least
//! one of them took part in every quorum the lost replica did: of n
//! replicas with quorum q, any quorum holds q − 1 others, so n − q + 1 of
//! the n − 1 others always include one. Replicas that answer term 0 lost
//! their term too and do not count. Too few answers: no floor yet (the
//! replica stays unavailable, never wrong).

use strand_cluster::NodeId;
use strand_storage::Term;

use super::Admin;
use super::status::BrokerReport;
use crate::controller::CONTROLLER_GROUP;
use crate::partition::Partition;

/// The floor for a group of `replicas` (this broker's included) from the
/// terms its other replicas reported, or `None` while too few answered.
pub fn term_floor(replicas: usize, answers: &[Term]) -> Option<Term> {
    let known: Vec<Term> = answers.iter().copied().filter(|t| t.get() > 0).collect();
    let quorum = replicas / 2 + 1;
    let needed = (replicas + 1).saturating_sub(quorum).max(1);
    (known.len() >= needed).then(|| known.into_iter().max().unwrap_or(Term(0)))
}

impl Admin {
    /// Gives every hosted replica that waits for a term floor (the
    /// controller's included) one, when enough of its peers answered.
    pub async fn raise_term_floors(&self) {
        let node = &self.node;
        let waiting = node.partitions_where(Partition::awaiting_term);
        let controller_waits = node.controller_status().awaiting_term;
        if waiting.is_empty() && !controller_waits {
            return;
        }
        let reports = self.gather().await;
        let me = node.id();
        let others = |hosts: &[NodeId]| -> Vec<&BrokerReport> {
            reports
                .iter()
                .filter(|r| r.node != me && hosts.contains(&r.node) && r.replicas.is_some())
                .collect()
        };
        if controller_waits {
            let founders: Vec<NodeId> = node.founders().keys().copied().collect();
            let answers: Vec<Term> = others(&founders).iter().map(|r| r.controller_term).collect();
            if let Some(floor) = term_floor(founders.len().max(1), &answers) {
                let _ = node.raft().raise_term(CONTROLLER_GROUP, floor);
            }
        }
        for p in waiting {
            let Ok(topic) = node.topic(p.topic()) else { continue };
            let hosts = topic.hosts_of(p.id());
            let answers: Vec<Term> = others(&hosts)
                .iter()
                .filter_map(|r| {
                    r.replicas
                        .as_ref()?
                        .iter()
                        .find(|g| *g.topic == **p.topic() && g.partition == p.id())
                        .map(|g| g.term)
                })
                .collect();
            if let Some(floor) = term_floor(hosts.len().max(1), &answers) {
                let _ = node.raft().raise_term(p.raft_group(), floor);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_floor_needs_replicas_that_meet_every_quorum() {
        let t = |ts: &[u64]| ts.iter().copied().map(Term).collect::<Vec<_>>();
        // Three replicas: both others must answer.
        assert_eq!(term_floor(3, &t(&[5])), None);
        assert_eq!(term_floor(3, &t(&[5, 7])), Some(Term(7)));
        assert_eq!(term_floor(3, &t(&[5, 0])), None, "a peer without a term does not count");
        // Five replicas: three of the four others.
        assert_eq!(term_floor(5, &t(&[3, 4])), None);
        assert_eq!(term_floor(5, &t(&[3, 4, 9])), Some(Term(9)));
        // Two replicas: the other one.
        assert_eq!(term_floor(2, &t(&[2])), Some(Term(2)));
    }
}
