//! Damage on disk: torn tails, flipped bits, corrupt middles (DESIGN.md,
//! "Storage": never silently drop a committed batch, never serve garbage).

use std::os::unix::fs::FileExt;

use strand_storage::{LogConfig, Offset, PartitionLog, StorageError};

use crate::support::{batch, copy_dir, logical_size, raw_log, read_all, segment_files, small_config};

fn rng(seed: u64) -> crate::support::Rng {
    crate::support::Rng::new(seed)
}

/// Cutting the last N bytes of the active segment, for every N over the last
/// batch and a bit more, keeps every complete batch and drops only torn ones.
#[test]
fn a_torn_tail_loses_only_the_torn_batch() {
    let template = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(template.path(), small_config()).unwrap();
    let mut ends = Vec::new(); // (end offset, cumulative bytes in active segment)
    for i in 0..6 {
        log.append(&batch(&format!("t{i}"), 3, i)).unwrap();
        ends.push(log.latest());
    }
    assert_eq!(log.segment_count(), 1, "all in the active segment");
    log.close().unwrap();
    let seg = &segment_files(template.path())[0];
    let size = logical_size(seg);
    let last_len = (size as usize) / 6; // equal-size batches
    for cut in 1..=(2 * last_len + 3) as u64 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let file = segment_files(dir.path())[0].clone();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .unwrap()
            .set_len(size - cut)
            .unwrap();
        let log = PartitionLog::open(dir.path(), small_config()).unwrap();
        let complete = ((size - cut) as usize) / last_len;
        assert_eq!(log.latest(), Offset(3 * complete as u64), "cut {cut}");
        assert_eq!(read_all(&log).len(), 3 * complete, "cut {cut}");
        let r = log.recovery_report();
        if !((size - cut) as usize).is_multiple_of(last_len) {
            let t = r.truncated.as_ref().expect("a torn batch is reported");
            assert_eq!(t.position, (complete * last_len) as u64, "cut {cut}");
        }
    }
}

#[test]
fn a_flipped_byte_in_the_last_batch_is_caught_and_cut() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for i in 0..5 {
        log.append(&batch(&format!("f{i}"), 2, i)).unwrap();
    }
    let before = read_all(&log);
    log.close().unwrap();
    let seg = segment_files(dir.path())[0].clone();
    let size = logical_size(&seg);
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&seg).unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, size - 3).unwrap();
    f.write_all_at(&[b[0] ^ 0x10], size - 3).unwrap();
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.latest(), Offset(8));
    assert_eq!(read_all(&log), before[..8]);
    let t = log.recovery_report().truncated.clone().expect("reported");
    assert!(t.reason.contains("CRC"), "{}", t.reason);
}

fn sealed_template() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for i in 0..40 {
        log.append(&batch(&format!("s{i}"), 3, i)).unwrap();
    }
    assert!(log.segment_count() >= 4);
    let raw = raw_log(&log);
    log.close().unwrap();
    (dir, raw)
}

/// 1,000 random single-bit flips in sealed segments: each one makes the log
/// refuse to open (verification on) or fails the read of the damaged batch
/// (verification off); damaged bytes are never returned as data.
#[test]
fn single_bit_flips_in_sealed_segments_are_always_detected() {
    let (template, good) = sealed_template();
    let sealed: Vec<_> = {
        let mut f = segment_files(template.path());
        f.pop();
        f
    };
    let mut rng = rng(7);
    for case in 0..1000 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let target = dir
            .path()
            .join(sealed[rng.below(sealed.len() as u64) as usize].file_name().unwrap());
        let len = std::fs::metadata(&target).unwrap().len();
        let pos = rng.below(len);
        let bit = rng.below(8);
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&target)
            .unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, pos).unwrap();
        f.write_all_at(&[b[0] ^ (1 << bit)], pos).unwrap();
        let verify = case % 2 == 0;
        let cfg = LogConfig {
            verify_sealed_on_open: verify,
            ..small_config()
        };
        match PartitionLog::open(dir.path(), cfg) {
            Err(StorageError::Corrupt { file, .. }) => {
                assert_eq!(file, target, "case {case}: names the damaged file")
            }
            Err(e) => panic!("case {case}: unexpected error {e}"),
            Ok(log) => {
                assert!(
                    !verify,
                    "case {case}: flip at {} byte {pos} bit {bit} passed verification",
                    target.display()
                );
                // Read everything batch by batch: the damaged batch must fail.
                let mut next = log.earliest();
                let mut failed = false;
                let mut served = Vec::new();
                while next < log.latest() {
                    match log.read(next, 1) {
                        Ok(bytes) => {
                            let b = strand_storage::batches(&bytes).next().unwrap().unwrap();
                            next = b.next_offset();
                            served.extend_from_slice(&bytes);
                        }
                        Err(StorageError::Corrupt { .. }) => {
                            failed = true;
                            break;
                        }
                        Err(e) => panic!("case {case}: unexpected read error {e}"),
                    }
                }
                assert!(failed, "case {case}: flip at byte {pos} bit {bit} was served");
                assert_eq!(served, good[..served.len()], "case {case}: served bytes differ");
            }
        }
    }
}

#[test]
fn a_corrupt_batch_in_the_middle_of_a_sealed_segment_refuses_to_open() {
    let (dir, _) = sealed_template();
    let seg = segment_files(dir.path())[1].clone();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&seg).unwrap();
    f.write_all_at(b"garbage!", 300).unwrap();
    match PartitionLog::open(dir.path(), small_config()) {
        Err(StorageError::Corrupt { file, position, .. }) => {
            assert_eq!(file, seg);
            assert!(position <= 300, "names the damaged batch's position, got {position}");
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    // The damaged file is left untouched for an operator to inspect.
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 300).unwrap();
    assert_eq!(&b, b"garbage!");
}

#[test]
fn a_corrupt_batch_in_the_middle_of_the_active_segment_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        max_batch_bytes: 4096,
        ..small_config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    for i in 0..40 {
        log.append(&batch(&format!("m{i}"), 3, i)).unwrap();
    }
    log.close().unwrap();
    let seg = segment_files(dir.path())[0].clone();
    let f = std::fs::OpenOptions::new().read(true).write(true).open(&seg).unwrap();
    f.write_all_at(b"XX", 200).unwrap();
    assert!(matches!(
        PartitionLog::open(dir.path(), cfg),
        Err(StorageError::Corrupt { .. })
    ));
}

/// Damage in the last index interval of the active segment (where the index
/// names no later batch) is still damage when valid batches follow it: the
/// log refuses to open rather than cut acknowledged batches as a torn tail.
/// Only damage to the very last batch is a torn tail.
#[test]
fn damage_followed_by_valid_batches_in_the_last_index_interval_refuses_to_open() {
    let cfg = LogConfig {
        segment_bytes: 1 << 20,
        max_batch_bytes: 4096,
        index_interval_bytes: 1 << 20,
        ..small_config()
    };
    let template = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(template.path(), cfg.clone()).unwrap();
    let mut ends = Vec::new();
    for i in 0..20 {
        log.append(&batch(&format!("i{i}"), 3, i)).unwrap();
        ends.push(log.size_bytes());
    }
    log.close().unwrap();
    let seg_name = segment_files(template.path())[0].file_name().unwrap().to_owned();
    let mut rng = rng(11);
    for case in 0..200 {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(template.path(), dir.path());
        let seg = dir.path().join(&seg_name);
        if case % 2 == 1 {
            // The index may not have been synced either.
            std::fs::remove_file(seg.with_extension("index")).unwrap();
        }
        // A byte of any batch but the last.
        let pos = rng.below(ends[ends.len() - 2]);
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&seg).unwrap();
        let mut b = [0u8];
        f.read_exact_at(&mut b, pos).unwrap();
        f.write_all_at(&[b[0] ^ (1 << rng.below(8))], pos).unwrap();
        match PartitionLog::open(dir.path(), cfg.clone()) {
            Err(StorageError::Corrupt { reason, .. }) => assert!(reason.contains("valid batch follows"), "{reason}"),
            Err(e) => panic!("case {case}: unexpected error {e}"),
            Ok(_) => panic!("case {case}: a flip at byte {pos} was cut as a torn tail"),
        }
    }
}
