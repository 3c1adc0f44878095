//! Keyed partitioning, part of the API contract: a record with a key and no
//! partition goes to `(murmur2(key) & 0x7fffffff) % partitions`, exactly as
//! Kafka's default partitioner, whether the Rust client or the broker (for
//! protobuf-native records) chooses. Other languages implement the same
//! function; `docs/FORMAT.md` gives test vectors.

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
}
