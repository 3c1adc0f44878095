//! Choosing a record's partition, exactly as Kafka's default partitioner:
//! keyed records go to `(murmur2(key) & 0x7fffffff) % partitions`, so a key
//! lands on the same partition number as with a Kafka client; records without
//! a key stick to one partition until its batch is sealed, then move to
//! another (Kafka's sticky partitioner, KIP-480, default since 2.4).

/// Kafka's `Utils.murmur2`: 32-bit MurmurHash2 with seed `0x9747b28c`,
/// reading 4-byte little-endian words and mixing the 1-3 tail bytes as Kafka
/// does. Returns Kafka's (signed) value.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Kafka XORs the length as a Java int; keys beyond 4 GiB do not exist.
    let mut h = SEED ^ (data.len() as u32);
    let mut words = data.chunks_exact(4);
    for w in &mut words {
        let mut k = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = words.remainder();
    if !tail.is_empty() {
        // Kafka's switch falls through from case 3 to case 1.
        for (i, b) in tail.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// The partition of a keyed record among `num_partitions`: Kafka's
/// `toPositive(murmur2(key)) % numPartitions`. Returns 0 when there are no
/// partitions (callers reject such topics first).
pub fn partition_for_key(key: &[u8], num_partitions: u32) -> u32 {
    let positive = (murmur2(key) as u32) & 0x7fff_ffff;
    positive.checked_rem(num_partitions).unwrap_or(0)
}

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

    /// Kafka's own vectors: `UtilsTest.testMurmur2` in apache/kafka
    /// (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
    const KAFKA_VECTORS: [(&[u8], i32); 6] = [
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
        (b"abc", 479_470_107),
    ];

    #[test]
    fn murmur2_matches_kafka_utils_test_vectors() {
        for (i, (input, want)) in KAFKA_VECTORS.into_iter().enumerate() {
            let got = murmur2(input);
            assert_eq!(got, want, "#{i}: murmur2({:?})", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn keyed_partition_is_positive_hash_modulo_partition_count() {
        // Expected values are (kafka_hash & 0x7fffffff) % n for the vectors above.
        let cases: [(&[u8], u32, u32); 8] = [
            (b"21", 10, 0),
            (b"foobar", 10, 6),
            (b"foobar", 12, 6),
            (b"a-little-bit-long-string", 12, 8),
            (b"a-little-bit-longer-string", 12, 11),
            (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", 3, 2),
            (b"abc", 12, 3),
            (b"abc", 1, 0),
        ];
        for (i, (key, n, want)) in cases.into_iter().enumerate() {
            assert_eq!(
                partition_for_key(key, n),
                want,
                "#{i}: key {:?} over {n}",
                String::from_utf8_lossy(key)
            );
        }
        assert_eq!(partition_for_key(b"abc", 0), 0, "no partitions never divides by zero");
    }

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
