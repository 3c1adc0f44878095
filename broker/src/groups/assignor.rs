//! Partition assignment strategies: given the members of a group, what each
//! subscribes to and the partition counts, which member should hold which
//! partition. Pure functions, computed by the coordinator (server-side, as in
//! Kafka's KIP-848 protocol).
//!
//! Every strategy is reconciled incrementally by the coordinator (a
//! partition is handed to its new owner only once the old owner released
//! it), so they differ only in *what* they compute:
//! - `range`: per topic, contiguous ranges over the members sorted by id;
//! - `roundrobin`: all partitions dealt in turn over the sorted members;
//! - `cooperative-sticky` (the default): members keep what they held as long
//!   as the balance allows; only the surplus moves.
//!
//! Invariants: every partition of a subscribed topic goes to exactly one
//! member that subscribes to it (none if no member does); the result is
//! deterministic for the same input.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// A topic partition.
pub type TopicPartition = (String, u32);

/// What the assignor needs to know about one member.
#[derive(Clone, Debug)]
pub struct MemberSubscription {
    /// Sort key and identity (the member id).
    pub id: String,
    /// Subscribed topics.
    pub topics: BTreeSet<String>,
}

/// The assignment strategies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Assignor {
    /// Contiguous ranges per topic.
    Range,
    /// Dealt in turn.
    RoundRobin,
    /// Balanced, keeping existing ownership.
    #[default]
    CooperativeSticky,
}

impl Assignor {
    /// The wire name.
    pub fn name(self) -> &'static str {
        match self {
            Assignor::Range => "range",
            Assignor::RoundRobin => "roundrobin",
            Assignor::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Computes a full assignment. `previous` is the last target assignment
    /// (used by the sticky strategy only).
    pub fn assign(
        self,
        members: &[MemberSubscription],
        partitions: &BTreeMap<String, u32>,
        previous: &BTreeMap<String, BTreeSet<TopicPartition>>,
    ) -> BTreeMap<String, BTreeSet<TopicPartition>> {
        let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
        sorted.sort_by(|a, b| a.id.cmp(&b.id));
        let mut out: BTreeMap<String, BTreeSet<TopicPartition>> =
            sorted.iter().map(|m| (m.id.clone(), BTreeSet::new())).collect();
        match self {
            Assignor::Range => range(&sorted, partitions, &mut out),
            Assignor::RoundRobin => round_robin(&sorted, partitions, &mut out),
            Assignor::CooperativeSticky => sticky(&sorted, partitions, previous, &mut out),
        }
        out
    }
}

impl fmt::Display for Assignor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Assignor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "" | "cooperative-sticky" | "sticky" => Ok(Assignor::CooperativeSticky),
            "range" => Ok(Assignor::Range),
            "roundrobin" | "round-robin" => Ok(Assignor::RoundRobin),
            other => Err(format!(
                "unknown assignor {other:?} (expected range, roundrobin or cooperative-sticky)"
            )),
        }
    }
}

/// Every partition some member subscribes to, in (topic, partition) order.
fn subscribed_partitions(members: &[&MemberSubscription], partitions: &BTreeMap<String, u32>) -> Vec<TopicPartition> {
    let topics: BTreeSet<&String> = members.iter().flat_map(|m| m.topics.iter()).collect();
    topics
        .into_iter()
        .filter_map(|t| partitions.get(t).map(|n| (t, *n)))
        .flat_map(|(t, n)| (0..n).map(move |p| (t.clone(), p)))
        .collect()
}

fn range(
    members: &[&MemberSubscription],
    partitions: &BTreeMap<String, u32>,
    out: &mut BTreeMap<String, BTreeSet<TopicPartition>>,
) {
    for (topic, &n) in partitions {
        let subs: Vec<&&MemberSubscription> = members.iter().filter(|m| m.topics.contains(topic)).collect();
        if subs.is_empty() {
            continue;
        }
        let (base, extra) = (n as usize / subs.len(), n as usize % subs.len());
        let mut next = 0u32;
        for (i, m) in subs.iter().enumerate() {
            let take = base + usize::from(i < extra);
            let set = out.entry(m.id.clone()).or_default();
            for _ in 0..take {
                set.insert((topic.clone(), next));
                next += 1;
            }
        }
    }
}

fn round_robin(
    members: &[&MemberSubscription],
    partitions: &BTreeMap<String, u32>,
    out: &mut BTreeMap<String, BTreeSet<TopicPartition>>,
) {
    if members.is_empty() {
        return;
    }
    let mut turn = 0usize;
    for tp in subscribed_partitions(members, partitions) {
        // The next member in turn that subscribes to this topic.
        for step in 0..members.len() {
            let m = members[(turn + step) % members.len()];
            if m.topics.contains(&tp.0) {
                out.entry(m.id.clone()).or_default().insert(tp);
                turn = turn + step + 1;
                break;
            }
        }
    }
}

fn sticky(
    members: &[&MemberSubscription],
    partitions: &BTreeMap<String, u32>,
    previous: &BTreeMap<String, BTreeSet<TopicPartition>>,
    out: &mut BTreeMap<String, BTreeSet<TopicPartition>>,
) {
    if members.is_empty() {
        return;
    }
    let all = subscribed_partitions(members, partitions);
    let valid: BTreeSet<&TopicPartition> = all.iter().collect();
    let (base, extra) = (all.len() / members.len(), all.len() % members.len());

    // What each member keeps: its previous partitions that still exist and
    // that it still subscribes to, each claimed once.
    let mut claimed: BTreeSet<TopicPartition> = BTreeSet::new();
    let mut kept: Vec<(usize, Vec<TopicPartition>)> = members
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mine: Vec<TopicPartition> = previous
                .get(&m.id)
                .into_iter()
                .flatten()
                .filter(|tp| valid.contains(tp) && m.topics.contains(&tp.0) && !claimed.contains(*tp))
                .cloned()
                .collect();
            claimed.extend(mine.iter().cloned());
            (i, mine)
        })
        .collect();
    // Capacities: `extra` members may hold base + 1; the ones already holding
    // the most get those slots, so as little as possible moves.
    kept.sort_by(|a, b| b.1.len().cmp(&a.1.len()).then(a.0.cmp(&b.0)));
    let mut caps = vec![base; members.len()];
    for (rank, (i, mine)) in kept.iter_mut().enumerate() {
        caps[*i] = base + usize::from(rank < extra);
        mine.truncate(caps[*i]);
    }
    let mut counts = vec![0usize; members.len()];
    let mut taken: BTreeSet<TopicPartition> = BTreeSet::new();
    for (i, mine) in kept {
        counts[i] = mine.len();
        taken.extend(mine.iter().cloned());
        out.entry(members[i].id.clone()).or_default().extend(mine);
    }
    // The rest go to the least loaded eligible member, under its cap first.
    for tp in all.into_iter().filter(|tp| !taken.contains(tp)) {
        let pick = (0..members.len())
            .filter(|&i| members[i].topics.contains(&tp.0))
            .min_by_key(|&i| (counts[i] >= caps[i], counts[i], i));
        if let Some(i) = pick {
            counts[i] += 1;
            out.entry(members[i].id.clone()).or_default().insert(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(ids: &[&str], topics: &[&str]) -> Vec<MemberSubscription> {
        ids.iter()
            .map(|id| MemberSubscription {
                id: (*id).into(),
                topics: topics.iter().map(|t| (*t).to_string()).collect(),
            })
            .collect()
    }

    fn counts(a: &BTreeMap<String, BTreeSet<TopicPartition>>) -> Vec<usize> {
        a.values().map(BTreeSet::len).collect()
    }

    fn check_complete(a: &BTreeMap<String, BTreeSet<TopicPartition>>, total: usize) {
        let mut seen = BTreeSet::new();
        for set in a.values() {
            for tp in set {
                assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
            }
        }
        assert_eq!(seen.len(), total, "every partition assigned once");
    }

    #[test]
    fn every_strategy_splits_six_partitions_over_three_members_evenly() {
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        for a in [Assignor::Range, Assignor::RoundRobin, Assignor::CooperativeSticky] {
            let out = a.assign(&members(&["a", "b", "c"], &["t"]), &parts, &BTreeMap::new());
            assert_eq!(counts(&out), vec![2, 2, 2], "{a}");
            check_complete(&out, 6);
        }
    }

    #[test]
    fn range_gives_contiguous_ranges_and_round_robin_deals() {
        let parts = BTreeMap::from([("t".to_string(), 5)]);
        let m = members(&["a", "b"], &["t"]);
        let r = Assignor::Range.assign(&m, &parts, &BTreeMap::new());
        let ps = |s: &BTreeSet<TopicPartition>| s.iter().map(|x| x.1).collect::<Vec<_>>();
        assert_eq!(ps(&r["a"]), vec![0, 1, 2]);
        assert_eq!(ps(&r["b"]), vec![3, 4]);
        let rr = Assignor::RoundRobin.assign(&m, &parts, &BTreeMap::new());
        assert_eq!(ps(&rr["a"]), vec![0, 2, 4]);
        assert_eq!(ps(&rr["b"]), vec![1, 3]);
    }

    #[test]
    fn sticky_moves_only_what_a_new_member_needs() {
        let parts = BTreeMap::from([("t".to_string(), 6)]);
        let three = Assignor::CooperativeSticky.assign(&members(&["a", "b", "c"], &["t"]), &parts, &BTreeMap::new());
        let four = Assignor::CooperativeSticky.assign(&members(&["a", "b", "c", "d"], &["t"]), &parts, &three);
        check_complete(&four, 6);
        let mut sorted = counts(&four);
        sorted.sort_unstable();
        assert_eq!(sorted, vec![1, 1, 2, 2]);
        let moved: usize = ["a", "b", "c"]
            .iter()
            .map(|m| three[*m].difference(&four[*m]).count())
            .sum();
        assert_eq!(moved, 1, "one partition moves to the new member: {three:?} -> {four:?}");
        // A member leaving: the others keep theirs and split its partitions.
        let two = Assignor::CooperativeSticky.assign(&members(&["a", "c"], &["t"]), &parts, &three);
        assert!(three["a"].is_subset(&two["a"]) && three["c"].is_subset(&two["c"]));
        assert_eq!(counts(&two), vec![3, 3]);
    }

    #[test]
    fn members_only_get_topics_they_subscribe_to() {
        let parts = BTreeMap::from([("x".to_string(), 2), ("y".to_string(), 2)]);
        let mut m = members(&["a"], &["x"]);
        m.extend(members(&["b"], &["x", "y"]));
        for a in [Assignor::Range, Assignor::RoundRobin, Assignor::CooperativeSticky] {
            let out = a.assign(&m, &parts, &BTreeMap::new());
            check_complete(&out, 4);
            assert!(out["a"].iter().all(|tp| tp.0 == "x"), "{a}: {out:?}");
        }
    }

    #[test]
    fn names_parse() {
        for a in [Assignor::Range, Assignor::RoundRobin, Assignor::CooperativeSticky] {
            assert_eq!(a.name().parse::<Assignor>(), Ok(a));
        }
        assert!("fair".parse::<Assignor>().is_err());
    }
}
