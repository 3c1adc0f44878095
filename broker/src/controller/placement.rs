//! Where a new partition's replicas go.

use strand_cluster::NodeId;

/// Places `partitions` × `replication_factor` replicas over `brokers`
/// (sorted ids): replicas of a partition are distinct brokers, and the
/// preferred leader (first replica) rotates so leaders spread evenly; the
/// starting broker is offset by the topic id so small topics do not all lead
/// on the same broker.
pub fn place(brokers: &[NodeId], partitions: u32, replication_factor: u32, topic_id: u64) -> Vec<Vec<NodeId>> {
    let n = brokers.len();
    (0..partitions as usize)
        .map(|p| {
            let start = (p + topic_id as usize) % n;
            (0..replication_factor as usize)
                .map(|r| brokers[(start + r) % n])
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placement_spreads_replicas_and_leaders() {
        let brokers = [NodeId(1), NodeId(2), NodeId(3)];
        let a = place(&brokers, 6, 3, 0);
        for (p, replicas) in a.iter().enumerate() {
            let mut r = replicas.clone();
            r.sort();
            r.dedup();
            assert_eq!(r.len(), 3, "partition {p}: replicas are distinct brokers");
        }
        let mut leaders = [0; 4];
        for replicas in &a {
            leaders[replicas[0].get() as usize] += 1;
        }
        assert_eq!(&leaders[1..], &[2, 2, 2], "each broker leads two of six partitions");
    }
}
