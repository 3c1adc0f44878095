//! Idempotent producers' state kept by the log: folded at append, the same
//! after reopening, truncating, retention and a Raft snapshot install
//! (DESIGN.md, "Idempotent producers").

use strand_storage::{
    Offset, PartitionLog, ProducerInfo, ProducerStates, SequenceCheck, SequenceError, decode_producer_snapshot,
    set_producer,
};

use crate::support::{batch, small_config};

fn sequenced(tag: &str, n: u32, id: i64, epoch: i16, seq: i32) -> Vec<u8> {
    let mut b = batch(tag, n, 1_000);
    set_producer(
        &mut b,
        ProducerInfo {
            producer_id: id,
            producer_epoch: epoch,
            base_sequence: seq,
        },
    )
    .unwrap();
    b
}

fn judge(log: &PartitionLog, id: i64, epoch: i16, seq: i32, n: u32) -> Result<SequenceCheck, SequenceError> {
    let p = ProducerInfo {
        producer_id: id,
        producer_epoch: epoch,
        base_sequence: seq,
    };
    let s = log.producers();
    s.check(s.get(id), p, n, strand_storage::now_ms())
}

/// Producer 1 writes 40 batches of 3 (sequences 0..120) over several
/// segments; producer 2 writes one batch.
fn write_two_producers(log: &mut PartitionLog) {
    for i in 0..40 {
        log.append(&sequenced(&format!("p1-{i}"), 3, 1, 0, i * 3)).unwrap();
    }
    log.append(&sequenced("p2", 2, 2, 5, 0)).unwrap();
}

#[test]
fn the_log_remembers_each_producers_last_batches_and_their_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    write_two_producers(&mut log);
    assert!(log.segment_count() > 3);
    assert_eq!(judge(&log, 1, 0, 120, 3), Ok(SequenceCheck::Append));
    let Ok(SequenceCheck::Duplicate(b)) = judge(&log, 1, 0, 117, 3) else {
        panic!("the last batch is a duplicate");
    };
    assert_eq!((b.base_offset, b.last_offset), (Offset(117), Offset(119)));
    assert!(matches!(
        judge(&log, 1, 0, 121, 3),
        Err(SequenceError::OutOfOrderSequence { expected: 120, .. })
    ));
    assert!(matches!(
        judge(&log, 2, 4, 2, 1),
        Err(SequenceError::ProducerFenced { current: 5, .. })
    ));
    assert!(matches!(
        judge(&log, 3, 0, 9, 1),
        Err(SequenceError::UnknownProducerId { producer_id: 3 })
    ));
}

fn remove_snapshots(dir: &std::path::Path) {
    for f in std::fs::read_dir(dir).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "producers") {
            std::fs::remove_file(p).unwrap();
        }
    }
}

#[test]
fn reopening_truncating_and_retention_keep_the_state_a_function_of_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    write_two_producers(&mut log);
    let before = log.producers().clone();
    log.close().unwrap();

    // Reopened: from the newest snapshot and the active segment.
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.producers(), &before);

    // Reopened with every snapshot gone: folded from the whole log.
    log.close().unwrap();
    remove_snapshots(dir.path());
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.producers(), &before);

    // A damaged snapshot is ignored, not trusted.
    log.close().unwrap();
    let snaps: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "producers"))
        .collect();
    assert!(!snaps.is_empty(), "opening wrote a snapshot at the active segment");
    for p in &snaps {
        let mut bytes = std::fs::read(p).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(p, bytes).unwrap();
    }
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.producers(), &before);

    // Truncating a producer's batches takes them out of its state.
    log.truncate_from(Offset(60)).unwrap();
    assert_eq!(judge(&log, 1, 0, 60, 3), Ok(SequenceCheck::Append));
    assert!(matches!(judge(&log, 2, 5, 0, 2), Ok(SequenceCheck::Append)));
    assert!(log.producers().get(2).is_none());
    for i in 20..40 {
        log.append(&sequenced(&format!("again-{i}"), 3, 1, 0, i * 3)).unwrap();
    }
    log.append(&sequenced("p2", 2, 2, 5, 0)).unwrap();
    let rewritten = log.producers().clone();
    let ranges = |s: &ProducerStates| {
        s.get(1).map(|e| {
            e.batches
                .iter()
                .map(|b| (b.first_seq, b.last_seq, b.base_offset))
                .collect::<Vec<_>>()
        })
    };
    assert_eq!(ranges(&rewritten), ranges(&before));

    // Retention removes segments, not the state of what they held: also
    // when no snapshot was written (a failed write), it makes one first.
    log.close().unwrap();
    remove_snapshots(dir.path());
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    remove_snapshots(dir.path());
    let segments = log.segment_count();
    log.delete_oldest_segments(segments - 2).unwrap();
    assert!(log.earliest() > Offset(0));
    assert_eq!(log.producers(), &rewritten);
    let (at, carried) = decode_producer_snapshot(&log.producer_snapshot_at_earliest()).unwrap();
    assert_eq!(at, log.earliest());
    assert!(
        carried.get(1).is_some(),
        "the snapshot at the new log start holds what retention removed"
    );
    log.close().unwrap();
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.producers(), &rewritten);
}

#[test]
fn a_log_restarted_from_a_raft_snapshot_judges_retries_like_the_leader() {
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = PartitionLog::open(leader_dir.path(), small_config()).unwrap();
    write_two_producers(&mut leader);
    leader.roll().unwrap();
    let segments = leader.segment_count();
    leader.delete_oldest_segments(segments - 1).unwrap();
    let start = leader.earliest();
    let carried = leader.producer_snapshot_at_earliest();
    let (at, states) = decode_producer_snapshot(&carried).unwrap();
    assert_eq!(at, start);

    let follower_dir = tempfile::tempdir().unwrap();
    let mut follower = PartitionLog::open(follower_dir.path(), small_config()).unwrap();
    follower.append(&batch("stale", 1, 1)).unwrap();
    follower.reset_with_producers(start, states).unwrap();
    assert_eq!(follower.latest(), start);
    assert_eq!(follower.producers(), leader.producers());
    let Ok(SequenceCheck::Duplicate(b)) = judge(&follower, 1, 0, 117, 3) else {
        panic!("the follower knows the leader's last batch");
    };
    assert_eq!(b.base_offset, Offset(117));
    follower.close().unwrap();
    let follower = PartitionLog::open(follower_dir.path(), small_config()).unwrap();
    assert_eq!(follower.producers(), leader.producers());
}

#[test]
fn an_empty_log_has_no_producers() {
    let dir = tempfile::tempdir().unwrap();
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.producers(), &ProducerStates::new());
}
