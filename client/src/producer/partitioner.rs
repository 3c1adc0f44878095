//! Choosing a record's partition, exactly as Kafka's default partitioner:
//! keyed records go to `(murmur2(key) & 0x7fffffff) % partitions` (the
//! contract's [`strand_proto::partitioner`]), so a key lands on the same
//! partition number as with a Kafka client; records without
//! a key stick to one partition until its batch is sealed, then move to
//! another (Kafka's sticky partitioner, KIP-480, default since 2.4).

pub use strand_proto::partitioner::{murmur2, partition_for_key};

/// The sticky choice for records without a key, for one topic.
///
/// Keyless records all go to the current partition; when that partition's
/// open batch is sealed (full, lingered or flushed), the next keyless record
/// picks another partition at random, so batches fill up instead of every
/// partition receiving a trickle.
#[derive(Debug, Default, Clone)]
pub(crate) struct StickyPartition {
    current: Option<u32>,
    previous: Option<u32>,
}

impl StickyPartition {
    /// The partition for the next keyless record.
    pub(crate) fn partition(&mut self, num_partitions: u32) -> u32 {
        match self.current {
            Some(p) if p < num_partitions => p,
            _ => {
                let p = pick_other(num_partitions, self.previous);
                self.current = Some(p);
                p
            }
        }
    }

    /// Partition `p`'s batch was sealed: if it was the sticky one, the next
    /// keyless record moves elsewhere.
    pub(crate) fn on_sealed(&mut self, p: u32) {
        if self.current == Some(p) {
            self.previous = Some(p);
            self.current = None;
        }
    }
}

/// A random partition below `n`, different from `avoid` when there is a choice.
fn pick_other(n: u32, avoid: Option<u32>) -> u32 {
    match (n, avoid) {
        (0 | 1, _) => 0,
        (n, Some(a)) if a < n => {
            // Uniform over the other n - 1 partitions.
            let r = rand::random_range(0..n - 1);
            if r >= a { r + 1 } else { r }
        }
        (n, _) => rand::random_range(0..n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sticky_partition_stays_until_its_batch_is_sealed_then_switches() {
        for n in 2..8u32 {
            let mut s = StickyPartition::default();
            let first = s.partition(n);
            assert!(first < n);
            for _ in 0..10 {
                assert_eq!(s.partition(n), first, "n={n}: stays while the batch is open");
            }
            s.on_sealed((first + 1) % n);
            assert_eq!(
                s.partition(n),
                first,
                "n={n}: sealing another partition changes nothing"
            );
            s.on_sealed(first);
            let second = s.partition(n);
            assert_ne!(second, first, "n={n}: moves once its batch is sealed");
            assert_eq!(s.partition(n), second, "n={n}: then sticks again");
        }
    }

    #[test]
    fn sticky_partition_with_one_partition_always_uses_it() {
        let mut s = StickyPartition::default();
        assert_eq!(s.partition(1), 0);
        s.on_sealed(0);
        assert_eq!(s.partition(1), 0);
    }

    #[test]
    fn sticky_partition_follows_a_shrunken_partition_count() {
        let mut s = StickyPartition::default();
        let mut p = s.partition(100);
        while p < 5 {
            s.on_sealed(p);
            p = s.partition(100);
        }
        assert!(s.partition(5) < 5);
    }
}
