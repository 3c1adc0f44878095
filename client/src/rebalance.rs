//! Spreading replicas evenly over the brokers (for example after a broker
//! joined): a plan of partition moves, each replacing one replica on the
//! most loaded broker by the least loaded broker that does not host the
//! partition yet. Executed with [`Admin::reassign_partition`].

use std::collections::BTreeMap;

use crate::admin::Admin;
use crate::error::Result;

/// One partition's move.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Move {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: u32,
    /// Its replicas now.
    pub from: Vec<u64>,
    /// Its replicas after the move (same order, one broker replaced).
    pub to: Vec<u64>,
}

/// Plans moves until no broker hosts more than one replica over another
/// (each partition moves at most once per plan, one replica at a time).
/// `partitions` are `(topic, partition, replicas)`.
pub fn plan(brokers: &[u64], partitions: &[(String, u32, Vec<u64>)]) -> Vec<Move> {
    let mut load: BTreeMap<u64, usize> = brokers.iter().map(|b| (*b, 0)).collect();
    for (_, _, replicas) in partitions {
        for r in replicas {
            *load.entry(*r).or_default() += 1;
        }
    }
    let mut moves = Vec::new();
    let mut moved = vec![false; partitions.len()];
    while let Some((&most, &hi)) = load.iter().max_by_key(|(b, n)| (**n, std::cmp::Reverse(**b))) {
        let Some((&least, &lo)) = load.iter().min_by_key(|(b, n)| (**n, **b)) else {
            break;
        };
        if hi <= lo + 1 {
            break;
        }
        let candidate = partitions
            .iter()
            .enumerate()
            .find(|(i, (_, _, r))| !moved[*i] && r.contains(&most) && !r.contains(&least));
        let Some((i, (topic, partition, replicas))) = candidate else {
            break;
        };
        moved[i] = true;
        let to: Vec<u64> = replicas.iter().map(|&r| if r == most { least } else { r }).collect();
        *load.entry(most).or_default() -= 1;
        *load.entry(least).or_default() += 1;
        moves.push(Move {
            topic: topic.clone(),
            partition: *partition,
            from: replicas.clone(),
            to,
        });
    }
    moves
}

impl Admin {
    /// The moves that would spread every topic's replicas (the internal
    /// `__consumer_offsets` included) evenly over the brokers, skipping
    /// partitions that are moving already.
    ///
    /// # Errors
    /// A failure reading the metadata or describing a topic.
    pub async fn plan_rebalance(&self) -> Result<Vec<Move>> {
        let meta = self.metadata().await?;
        let brokers: Vec<u64> = meta.brokers.iter().map(|b| b.node_id).collect();
        let mut partitions = Vec::new();
        for t in &meta.topics {
            let d = self.describe_topic(&t.name).await?;
            for p in d.partitions {
                if p.moving_to.is_empty() {
                    partitions.push((t.name.clone(), p.partition, p.replicas));
                }
            }
        }
        Ok(plan(&brokers, &partitions))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(brokers: &[u64], parts: &[(String, u32, Vec<u64>)], moves: &[Move]) -> BTreeMap<u64, usize> {
        let mut after: Vec<Vec<u64>> = parts.iter().map(|p| p.2.clone()).collect();
        for m in moves {
            let i = parts
                .iter()
                .position(|p| p.0 == m.topic && p.1 == m.partition)
                .expect("known partition");
            after[i] = m.to.clone();
        }
        let mut load: BTreeMap<u64, usize> = brokers.iter().map(|b| (*b, 0)).collect();
        for r in after.iter().flatten() {
            *load.entry(*r).or_default() += 1;
        }
        for r in &after {
            let mut d = r.clone();
            d.sort_unstable();
            d.dedup();
            assert_eq!(d.len(), r.len(), "a broker twice in {r:?}");
        }
        load
    }

    #[test]
    fn a_new_broker_gets_its_share_and_nothing_moves_when_balanced() {
        let parts: Vec<(String, u32, Vec<u64>)> = (0..8).map(|p| ("t".to_string(), p, vec![1, 2, 3])).collect();
        let moves = plan(&[1, 2, 3, 4], &parts);
        let load = spread(&[1, 2, 3, 4], &parts, &moves);
        assert_eq!(
            load.values().copied().collect::<Vec<_>>(),
            vec![6, 6, 6, 6],
            "{moves:?}"
        );
        assert_eq!(moves.len(), 6);
        assert!(plan(&[1, 2, 3], &parts).is_empty(), "already even");
    }

    #[test]
    fn replicas_never_land_twice_on_one_broker() {
        let parts = vec![("t".to_string(), 0, vec![1, 2]), ("t".to_string(), 1, vec![1, 2])];
        let moves = plan(&[1, 2, 3], &parts);
        let load = spread(&[1, 2, 3], &parts, &moves);
        assert!(
            load.values().max().unwrap() - load.values().min().unwrap() <= 1,
            "{load:?}"
        );
    }
}
