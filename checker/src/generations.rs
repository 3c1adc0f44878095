//! A topic deleted and created again under the same name while a consumer
//! group reads it (issue "A recreated topic is a new topic"): each
//! *generation* of the topic is a new topic. The side workload writes
//! numbered records to each generation and a group member reads; this
//! module checks that
//!
//! - every record acknowledged in a generation is read (a position or a
//!   committed offset of an older generation applied to a newer one skips
//!   records: they show up here as unread),
//! - each record is read at the offset its write was acknowledged at,
//! - once the reader saw a record of a generation, it never reads a record
//!   of an older one (an older topic's data served after the newer's).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A record the side workload wrote and saw acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationWrite {
    /// The topic's generation (0 for the first topic by that name).
    pub generation: u32,
    /// The record's number within its generation.
    pub seq: u64,
    /// Where the broker said it landed.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
}

/// A record the reader processed, in the order it processed them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenerationRead {
    /// The generation its value names.
    pub generation: u32,
    /// Its number within the generation.
    pub seq: u64,
    /// Partition read from.
    pub partition: u32,
    /// Offset read at.
    pub offset: u64,
}

/// What went wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenerationAnomaly {
    /// Acknowledged in `generation`, never read.
    Unread {
        /// Generation.
        generation: u32,
        /// Record number.
        seq: u64,
    },
    /// Read at another place than its write was acknowledged at.
    Misplaced {
        /// The record.
        read: GenerationRead,
        /// Where it was acknowledged.
        acknowledged: (u32, u64),
    },
    /// A record of `generation` read after one of the newer `after`.
    OldAfterNew {
        /// The old record's generation.
        generation: u32,
        /// The newer generation already read.
        after: u32,
    },
}

/// Every anomaly of the reads against the writes. A record read more than
/// once (a producer's retry stored it twice: the producer is not idempotent
/// yet) is fine as long as one of the reads is where its write was
/// acknowledged.
pub fn check_generations(writes: &[GenerationWrite], reads: &[GenerationRead]) -> Vec<GenerationAnomaly> {
    let mut out = Vec::new();
    let mut newest: Option<u32> = None;
    let mut places: BTreeMap<(u32, u64), Vec<GenerationRead>> = BTreeMap::new();
    for r in reads {
        if let Some(n) = newest
            && r.generation < n
        {
            out.push(GenerationAnomaly::OldAfterNew {
                generation: r.generation,
                after: n,
            });
        }
        newest = Some(newest.map_or(r.generation, |n| n.max(r.generation)));
        places.entry((r.generation, r.seq)).or_default().push(*r);
    }
    for w in writes {
        let at = (w.partition, w.offset);
        match places.get(&(w.generation, w.seq)) {
            None => out.push(GenerationAnomaly::Unread {
                generation: w.generation,
                seq: w.seq,
            }),
            Some(rs) if !rs.iter().any(|r| (r.partition, r.offset) == at) => out.push(GenerationAnomaly::Misplaced {
                read: rs[0],
                acknowledged: at,
            }),
            Some(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(generation: u32, seq: u64, offset: u64) -> GenerationWrite {
        GenerationWrite {
            generation,
            seq,
            partition: 0,
            offset,
        }
    }

    fn r(generation: u32, seq: u64, offset: u64) -> GenerationRead {
        GenerationRead {
            generation,
            seq,
            partition: 0,
            offset,
        }
    }

    #[test]
    fn a_clean_history_passes() {
        let writes = [w(0, 0, 0), w(0, 1, 1), w(1, 0, 0), w(1, 1, 1)];
        let reads = [r(0, 0, 0), r(0, 1, 1), r(1, 0, 0), r(1, 1, 1)];
        assert_eq!(check_generations(&writes, &reads), vec![]);
    }

    #[test]
    fn an_old_offset_applied_to_a_new_topic_skips_its_first_records() {
        // The bug: the group resumed generation 1 at offset 1, the
        // offset it had committed in generation 0.
        let writes = [w(0, 0, 0), w(1, 0, 0), w(1, 1, 1)];
        let reads = [r(0, 0, 0), r(1, 1, 1)];
        assert_eq!(
            check_generations(&writes, &reads),
            vec![GenerationAnomaly::Unread { generation: 1, seq: 0 }]
        );
    }

    #[test]
    fn old_data_after_new_and_misplaced_reads_are_found() {
        let writes = [w(0, 0, 0), w(1, 0, 0)];
        let reads = [r(1, 0, 0), r(0, 0, 3)];
        assert_eq!(
            check_generations(&writes, &reads),
            vec![
                GenerationAnomaly::OldAfterNew {
                    generation: 0,
                    after: 1
                },
                GenerationAnomaly::Misplaced {
                    read: r(0, 0, 3),
                    acknowledged: (0, 0)
                },
            ]
        );
    }
}
