//! Model test: random append / roll / truncate / reopen / crash sequences
//! against a plain in-memory list of batches. After every step the log must
//! hold exactly the model's records.
//!
//! A crash drops the log without closing it and cuts the active segment at a
//! random byte inside the region written since the last sync (what an OS
//! crash may lose), optionally leaving junk after the cut; the model then keeps
//! only the batches that end at or before the cut.

use std::os::unix::fs::FileExt;

use proptest::prelude::*;
use strand_storage::{Offset, PartitionLog};

use crate::support::{batch, logical_size, read_all, segment_files, small_config};

#[derive(Debug, Clone)]
enum Op {
    Append { records: u32, ts: i64 },
    Roll,
    Flush,
    Truncate { pick: usize },
    Reopen,
    Crash { cut: u64, junk: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (1u32..6, 0i64..10_000).prop_map(|(records, ts)| Op::Append { records, ts }),
        1 => Just(Op::Roll),
        1 => Just(Op::Flush),
        1 => any::<usize>().prop_map(|pick| Op::Truncate { pick }),
        1 => Just(Op::Reopen),
        2 => (any::<u64>(), any::<bool>()).prop_map(|(cut, junk)| Op::Crash { cut, junk }),
    ]
}

struct ModelBatch {
    base: Offset,
    records: Vec<(Offset, i64, Vec<u8>)>,
    len: u64,
}

#[derive(Default)]
struct Model {
    batches: Vec<ModelBatch>,
    /// Number of leading batches known to be synced.
    synced: usize,
}

impl Model {
    fn next(&self) -> Offset {
        self.batches
            .last()
            .map_or(Offset(0), |b| b.base.plus(b.records.len() as u64))
    }
    fn records(&self) -> Vec<(Offset, i64, Vec<u8>)> {
        self.batches.iter().flat_map(|b| b.records.clone()).collect()
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let cfg = small_config();
    let mut log = Some(PartitionLog::open(dir.path(), cfg.clone()).unwrap());
    let mut model = Model::default();
    let mut tag = 0u32;
    for (step, op) in ops.into_iter().enumerate() {
        let l = log.as_mut().unwrap();
        match op {
            Op::Append { records, ts } => {
                tag += 1;
                let name = format!("v{tag}");
                let bytes = batch(&name, records, ts);
                let segments = l.segment_count();
                let info = l.append(&bytes).unwrap();
                prop_assert_eq!(info.base_offset, model.next(), "step {}", step);
                if l.segment_count() > segments {
                    model.synced = model.batches.len(); // a roll syncs the old segment
                }
                let recs = (0..records)
                    .map(|i| {
                        (
                            info.base_offset.plus(u64::from(i)),
                            ts + i64::from(i),
                            format!("{name}-{i}").into_bytes(),
                        )
                    })
                    .collect();
                model.batches.push(ModelBatch {
                    base: info.base_offset,
                    records: recs,
                    len: bytes.len() as u64,
                });
            }
            Op::Roll => {
                l.roll().unwrap();
                model.synced = model.batches.len();
            }
            Op::Flush => {
                l.flush().unwrap();
                model.synced = model.batches.len();
            }
            Op::Truncate { pick } => {
                if !model.batches.is_empty() {
                    let keep = pick % model.batches.len();
                    l.truncate_from(model.batches[keep].base).unwrap();
                    model.batches.truncate(keep);
                    model.synced = model.synced.min(keep);
                }
            }
            Op::Reopen => {
                log.take().unwrap().close().unwrap();
                log = Some(PartitionLog::open(dir.path(), cfg.clone()).unwrap());
                model.synced = model.batches.len();
            }
            Op::Crash { cut, junk } => {
                drop(log.take());
                let active = segment_files(dir.path()).pop().unwrap();
                let size = logical_size(&active);
                let unsynced: u64 = model.batches[model.synced..].iter().map(|b| b.len).sum();
                prop_assert!(unsynced <= size, "step {}: unsynced batches span segments", step);
                let start = size - unsynced;
                let at = start + cut % (unsynced + 1);
                let f = std::fs::OpenOptions::new().write(true).open(&active).unwrap();
                f.set_len(at).unwrap();
                if junk {
                    f.write_all_at(&[0xA5; 37], at).unwrap();
                }
                // Keep the unsynced batches that end at or before the cut.
                let mut end = start;
                let mut keep = model.synced;
                for b in &model.batches[model.synced..] {
                    if end + b.len > at {
                        break;
                    }
                    end += b.len;
                    keep += 1;
                }
                model.batches.truncate(keep);
                log = Some(PartitionLog::open(dir.path(), cfg.clone()).unwrap());
                model.synced = model.batches.len();
            }
        }
        let l = log.as_ref().unwrap();
        prop_assert_eq!(l.latest(), model.next(), "step {}: log end", step);
        prop_assert_eq!(read_all(l), model.records(), "step {}: contents", step);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    #[test]
    fn the_log_matches_an_in_memory_model(ops in proptest::collection::vec(op(), 1..40)) {
        run(ops)?;
    }
}
