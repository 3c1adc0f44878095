//! PartitionLog behaviour: append/read, roll, lookups, truncation, retention,
//! bad input (DESIGN.md, "Storage").

use strand_storage::{LogConfig, Offset, PartitionLog, RaftIndex, StorageError, Term, batches};

use crate::support::{batch, raw_log, read_all, segment_files, small_config};

#[test]
fn appends_get_contiguous_offsets_and_read_back_from_any_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for i in 0..50 {
        let info = log.append(&batch(&format!("b{i}"), 3, 1000 + i)).unwrap();
        assert_eq!(info.base_offset, Offset(3 * i as u64), "batch {i}");
        assert_eq!(info.last_offset, Offset(3 * i as u64 + 2), "batch {i}");
    }
    assert!(log.segment_count() > 3, "small segments roll: {}", log.segment_count());
    assert_eq!((log.earliest(), log.latest()), (Offset(0), Offset(150)));
    let all = read_all(&log);
    assert_eq!(all.len(), 150);
    for (i, (offset, _, value)) in all.iter().enumerate() {
        assert_eq!(*offset, Offset(i as u64));
        assert_eq!(value, format!("b{}-{}", i / 3, i % 3).as_bytes(), "offset {i}");
    }
    for offset in (0..150).map(Offset) {
        let bytes = log.read(offset, 1).unwrap();
        let first = batches(&bytes).next().unwrap().unwrap();
        assert!(
            first.base_offset() <= offset && offset <= first.last_offset(),
            "offset {offset}"
        );
        assert_eq!(
            batches(&bytes).count(),
            1,
            "max_bytes 1 still returns exactly one batch"
        );
    }
}

#[test]
fn a_fetch_at_the_log_end_is_empty_and_outside_the_range_is_typed() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert!(log.read(Offset(0), 1024).unwrap().is_empty(), "empty log, offset 0");
    log.append(&batch("a", 4, 1)).unwrap();
    assert!(log.read(Offset(4), 1024).unwrap().is_empty());
    match log.read(Offset(5), 1024) {
        Err(StorageError::OffsetOutOfRange {
            requested: Offset(5),
            earliest: Offset(0),
            latest: Offset(4),
        }) => {}
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
}

/// A replicated log reads below its high watermark: an offset past the log
/// end names the *committed* range, so a client resetting to `latest` never
/// sits above what is committed; offsets between the two read nothing yet.
#[test]
fn out_of_range_names_the_committed_end_of_a_bounded_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    log.append(&batch("a", 4, 1)).unwrap();
    log.append(&batch("b", 4, 2)).unwrap();
    let high_watermark = Offset(4);
    assert!(log.read_bounded(Offset(5), 1024, high_watermark).unwrap().is_empty());
    match log.read_bounded(Offset(9), 1024, high_watermark) {
        Err(StorageError::OffsetOutOfRange {
            requested: Offset(9),
            earliest: Offset(0),
            latest,
        }) => assert_eq!(latest, high_watermark, "the log end (8) is not committed"),
        other => panic!("expected OffsetOutOfRange, got {other:?}"),
    }
}

#[test]
fn a_batch_over_the_maximum_is_refused_and_nothing_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_batch_bytes: 200,
        ..small_config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    let big = batch("big", 20, 1);
    assert!(big.len() > 200);
    match log.append(&big) {
        Err(StorageError::RecordTooLarge { size, max: 200 }) => assert_eq!(size, big.len()),
        other => panic!("expected RecordTooLarge, got {other:?}"),
    }
    assert_eq!(log.latest(), Offset(0));
    let mut bad = batch("x", 1, 1);
    bad[40] ^= 1;
    assert!(matches!(log.append(&bad), Err(StorageError::InvalidBatch { .. })));
    assert_eq!(log.latest(), Offset(0), "a corrupt batch writes nothing");
    assert_eq!(log.append(&batch("ok", 1, 1)).unwrap().base_offset, Offset(0));
}

#[test]
fn reopen_after_a_clean_close_returns_identical_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for i in 0..40 {
        log.append(&batch(&format!("r{i}"), 2, i)).unwrap();
    }
    let before = raw_log(&log);
    let latest = log.latest();
    log.close().unwrap();
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.latest(), latest);
    assert_eq!(raw_log(&log), before);
    assert!(log.recovery_report().truncated.is_none());
}

#[test]
fn timestamp_lookup_finds_the_first_offset_at_or_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    // 40 batches of 5 records, timestamps 1000, 1010, ...; record j of batch i at 1000 + 10 i + j.
    for i in 0..40 {
        log.append(&batch("t", 5, 1000 + 10 * i)).unwrap();
    }
    let cases = [
        (0, Some(Offset(0))),
        (1000, Some(Offset(0))),
        (1003, Some(Offset(3))),
        (1005, Some(Offset(5))),
        (1010, Some(Offset(5))),
        (1012, Some(Offset(7))),
        (1394, Some(Offset(199))),
        (1395, None),
    ];
    for (i, (ts, want)) in cases.into_iter().enumerate() {
        assert_eq!(log.lookup_by_timestamp(ts).unwrap(), want, "#{i}: ts {ts}");
    }
}

#[test]
fn timestamp_lookup_with_out_of_order_timestamps_returns_the_first_match_in_log_order() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for ts in [500, 100, 900, 200, 950] {
        log.append(&batch("o", 1, ts)).unwrap();
    }
    assert_eq!(log.lookup_by_timestamp(150).unwrap(), Some(Offset(0)));
    assert_eq!(log.lookup_by_timestamp(600).unwrap(), Some(Offset(2)));
    assert_eq!(log.lookup_by_timestamp(920).unwrap(), Some(Offset(4)));
}

#[test]
fn truncate_then_append_reuses_the_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for i in 0..30 {
        log.append(&batch(&format!("old{i}"), 2, i)).unwrap();
    }
    let segments = log.segment_count();
    assert!(segments > 2);
    // Offset 13 is inside the batch [12, 13].
    assert!(matches!(
        log.truncate_from(Offset(13)),
        Err(StorageError::NotBatchBoundary {
            offset: Offset(13),
            batch_base: Offset(12)
        })
    ));
    log.truncate_from(Offset(12)).unwrap();
    assert_eq!(log.latest(), Offset(12));
    assert!(log.segment_count() < segments);
    assert_eq!(log.append(&batch("new", 3, 99)).unwrap().base_offset, Offset(12));
    let all = read_all(&log);
    assert_eq!(all.len(), 15);
    assert_eq!(all[11].2, b"old5-1");
    assert_eq!(all[12].2, b"new-0");
    assert_eq!(all[14].2, b"new-2");
    drop(log);
    // The truncated batches never come back, even without a clean close.
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(read_all(&log), all);
    assert!(matches!(
        PartitionLog::open(dir.path(), small_config())
            .unwrap()
            .truncate_from(Offset(16)),
        Err(StorageError::OffsetOutOfRange {
            requested: Offset(16),
            ..
        })
    ));
}

#[test]
fn truncating_to_a_segment_start_or_to_zero_works() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    let mut bases = Vec::new();
    for i in 0..30 {
        bases.push(log.append(&batch("s", 2, i)).unwrap().base_offset);
    }
    let files = segment_files(dir.path());
    let second_base = Offset(files[1].file_stem().unwrap().to_str().unwrap().parse().unwrap());
    log.truncate_from(second_base).unwrap();
    assert_eq!(log.latest(), second_base);
    assert_eq!(log.segment_count(), 1);
    log.append(&batch("again", 1, 5)).unwrap();
    log.truncate_from(Offset(0)).unwrap();
    assert_eq!((log.earliest(), log.latest()), (Offset(0), Offset(0)));
    assert_eq!(log.append(&batch("fresh", 1, 5)).unwrap().base_offset, Offset(0));
}

#[test]
fn deleted_index_files_are_rebuilt_with_the_same_lookups() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for i in 0..60 {
        log.append(&batch("i", 3, 10 * i)).unwrap();
    }
    let reads: Vec<_> = (0..180).map(|o| log.read(Offset(o), 300).unwrap()).collect();
    let lookups: Vec<_> = (0..620)
        .step_by(7)
        .map(|ts| log.lookup_by_timestamp(ts).unwrap())
        .collect();
    log.close().unwrap();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "index" || e == "timeindex") {
            std::fs::remove_file(p).unwrap();
        }
    }
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert!(!log.recovery_report().rebuilt_indexes.is_empty());
    for (o, want) in reads.iter().enumerate() {
        assert_eq!(&log.read(Offset(o as u64), 300).unwrap(), want, "read at {o}");
    }
    let again: Vec<_> = (0..620)
        .step_by(7)
        .map(|ts| log.lookup_by_timestamp(ts).unwrap())
        .collect();
    assert_eq!(again, lookups);
}

#[test]
fn a_damaged_index_is_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for i in 0..60 {
        log.append(&batch("d", 3, i)).unwrap();
    }
    let want = read_all(&log);
    log.close().unwrap();
    let idx = segment_files(dir.path())[0].with_extension("index");
    let mut bytes = std::fs::read(&idx).unwrap();
    bytes[9] ^= 0x40; // second entry's position
    std::fs::write(&idx, bytes).unwrap();
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.recovery_report().rebuilt_indexes.len(), 1);
    assert_eq!(read_all(&log), want);
}

#[test]
fn retention_by_size_deletes_whole_old_segments_but_never_the_active_one() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(4096),
        ..small_config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    for i in 0..100 {
        log.append(&batch("z", 3, i)).unwrap();
    }
    let before = log.size_bytes();
    let report = log.apply_retention(strand_storage::now_ms()).unwrap();
    assert!(report.deleted_segments > 0);
    assert_eq!(before - report.deleted_bytes, log.size_bytes());
    assert!(
        log.size_bytes() >= 4096,
        "keeps at least retention_bytes: {}",
        log.size_bytes()
    );
    assert!(log.earliest() > Offset(0));
    assert_eq!(read_all(&log).len() as u64, log.latest().since(log.earliest()));
    assert!(matches!(
        log.read(Offset(0), 100),
        Err(StorageError::OffsetOutOfRange { .. })
    ));

    let cfg = LogConfig {
        retention_bytes: Some(0),
        ..small_config()
    };
    log.set_config(cfg).unwrap();
    log.apply_retention(strand_storage::now_ms()).unwrap();
    assert_eq!(log.segment_count(), 1, "the active segment stays");
    assert!(log.latest() > log.earliest(), "and keeps its data");
}

#[test]
fn retention_by_time_uses_append_time_not_record_timestamps() {
    let dir = tempfile::tempdir().unwrap();
    let hour = 3_600_000i64;
    let cfg = LogConfig {
        retention_ms: Some(hour as u64),
        ..small_config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    let t0 = 1_000_000_000_000i64;
    // Old data appended at t0, with record timestamps far in the future.
    for _ in 0..30 {
        log.append_stamped(&batch("old", 3, t0 + 1000 * hour), Term(0), t0)
            .unwrap();
    }
    log.roll().unwrap();
    let old_end = log.latest();
    // New data appended two hours later, stamped in the distant past.
    for _ in 0..30 {
        log.append_stamped(&batch("new", 3, 0), Term(0), t0 + 2 * hour).unwrap();
    }
    assert!(
        log.apply_retention(t0 + 2 * hour).unwrap().deleted_segments > 0,
        "old segments are > 1 h old"
    );
    assert_eq!(log.earliest(), old_end, "every old segment went, no new one");
    let kept = log.latest().since(log.earliest());
    assert_eq!(
        log.apply_retention(t0 + 2 * hour + 1).unwrap().deleted_segments,
        0,
        "past-stamped records are not expired"
    );
    assert_eq!(log.latest().since(log.earliest()), kept);
}

#[test]
fn append_time_never_goes_backwards_when_the_clock_does() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    let a = log.append_stamped(&batch("a", 1, 0), Term(0), 5_000).unwrap();
    let b = log.append_stamped(&batch("b", 1, 0), Term(0), 1_000).unwrap();
    assert_eq!(a.append_time_ms, 5_000);
    assert_eq!(b.append_time_ms, 5_000);
}

#[test]
fn segments_roll_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_ms: Some(1000),
        ..small_config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    log.append_stamped(&batch("a", 1, 0), Term(0), 10_000).unwrap();
    log.append_stamped(&batch("b", 1, 0), Term(0), 10_500).unwrap();
    assert_eq!(log.segment_count(), 1);
    log.append_stamped(&batch("c", 1, 0), Term(0), 11_000).unwrap();
    assert_eq!(log.segment_count(), 2);
}

#[test]
fn a_replicated_batch_is_stored_byte_for_byte() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut leader = PartitionLog::open(a.path(), small_config()).unwrap();
    let mut follower = PartitionLog::open(b.path(), small_config()).unwrap();
    for i in 0..20 {
        leader.append_stamped(&batch("r", 2, i), Term(7), 1_000 + i).unwrap();
    }
    let bytes = raw_log(&leader);
    for bt in batches(&bytes) {
        follower.append_replicated(bt.unwrap()).unwrap();
    }
    assert_eq!(raw_log(&follower), bytes);
    let first = batches(&bytes).next().unwrap().unwrap();
    assert_eq!(first.term(), Term(7));
    assert!(matches!(
        follower.append_replicated(first),
        Err(StorageError::UnexpectedOffset {
            expected: Offset(40),
            got: Offset(0)
        })
    ));
}

#[test]
fn invalid_config_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        max_batch_bytes: 1 << 30,
        segment_bytes: 1 << 20,
        ..LogConfig::default()
    };
    match PartitionLog::open(dir.path(), cfg) {
        Err(StorageError::InvalidConfig {
            key: "max_batch_bytes", ..
        }) => {}
        other => panic!("expected InvalidConfig, got {other:?}"),
    }
}

/// Unmounts a test's tmpfs when dropped (before its directory goes).
struct Unmount(std::path::PathBuf, #[allow(dead_code)] tempfile::TempDir);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

/// A 256 KiB tmpfs to fill, or `None` (with a note) without root.
fn small_disk(test: &str) -> Option<Unmount> {
    let dir = tempfile::tempdir().unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs"])
        .arg(dir.path())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipping {test}: cannot mount tmpfs (not root?)");
        return None;
    }
    Some(Unmount(dir.path().to_path_buf(), dir))
}

/// Writes a file that takes every free byte of the file system at `path`'s
/// parent; removing it gives the space back.
fn take_all_space(path: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = [1u8; 512];
    while f.write_all(&chunk).is_ok() {}
    while f.write_all(&chunk[..1]).is_ok() {}
    let _ = f.sync_all();
}

/// A full disk is a clean error at append, never SIGBUS, and nothing
/// acknowledged before it is lost. Needs root to mount a small tmpfs.
#[test]
fn a_full_disk_fails_the_append_cleanly() {
    let Some(disk) = small_disk("a_full_disk_fails_the_append_cleanly") else {
        return;
    };
    let dir = &disk.0;
    let cfg = LogConfig {
        segment_bytes: 64 * 1024,
        max_batch_bytes: 8192,
        ..small_config()
    };
    // Room to give back once the disk is full.
    let filler = dir.join("filler");
    std::fs::write(&filler, vec![1u8; 96 * 1024]).unwrap();
    let logdir = dir.join("p-0");
    let mut log = PartitionLog::open(&logdir, cfg.clone()).unwrap();
    let mut acked = Offset(0);
    let err = loop {
        match log.append(&batch("fill-the-disk-with-this-value", 50, 1)) {
            Ok(info) => acked = info.last_offset.next(),
            Err(e) => break e,
        }
        assert!(acked < Offset(1_000_000), "disk never filled");
    };
    assert!(matches!(err, StorageError::DiskFull { .. }), "got {err:?}");
    assert_eq!(log.latest(), acked);
    assert_eq!(read_all(&log).len() as u64, acked.get());
    // Space comes back: the same log takes writes again, through segment
    // rolls (a failed roll must not have left a half-made segment whose
    // name the next roll would find taken).
    std::fs::remove_file(&filler).unwrap();
    let files = || std::fs::read_dir(&logdir).unwrap().count();
    let before = files();
    let mut after_roll = 0;
    while after_roll < 3 {
        let info = log
            .append(&batch("after-space-returned", 50, 1))
            .expect("appends resume once there is space");
        acked = info.last_offset.next();
        if files() > before {
            after_roll += 1;
        }
        assert!(acked < Offset(1_000_000), "no segment rolled");
    }
    assert_eq!(read_all(&log).len() as u64, acked.get());
    drop(log);
    let log = PartitionLog::open(&logdir, cfg).unwrap();
    assert_eq!(log.latest(), acked, "everything acknowledged survives reopen");
}

/// The disk fills exactly when the log must roll to a new segment: the
/// append fails with `DiskFull`, and once space returns the same log rolls
/// and takes writes (no half-made segment left behind whose name the next
/// roll finds taken). Needs root to mount a small tmpfs.
#[test]
fn a_disk_that_fills_at_a_segment_roll_takes_writes_when_space_returns() {
    let Some(disk) = small_disk("a_disk_that_fills_at_a_segment_roll_takes_writes_when_space_returns") else {
        return;
    };
    let cfg = LogConfig {
        segment_bytes: 16 * 1024,
        max_batch_bytes: 8192,
        ..small_config()
    };
    let logdir = disk.0.join("p-0");
    let files = || std::fs::read_dir(&logdir).unwrap().count();
    let mut log = PartitionLog::open(&logdir, cfg).unwrap();
    let record = || batch("a-value-of-some-length-to-fill-segments", 20, 1);
    // Batches per segment: count the appends from one roll to the next.
    let first = files();
    while files() == first {
        log.append(&record()).unwrap();
    }
    let second = files();
    let mut per_segment = 0;
    while files() == second {
        log.append(&record()).unwrap();
        per_segment += 1;
    }
    // Fill the active segment (it holds one batch), then the disk.
    for _ in 1..per_segment {
        log.append(&record()).unwrap();
    }
    let rolled = files();
    let filler = disk.0.join("filler");
    take_all_space(&filler);
    let acked = log.latest();
    let err = log.append(&record()).expect_err("the disk is full");
    assert!(matches!(err, StorageError::DiskFull { .. }), "got {err:?}");
    assert_eq!(log.latest(), acked, "nothing written");
    std::fs::remove_file(&filler).unwrap();
    for _ in 0..3 {
        log.append(&record()).expect("appends resume once there is space");
    }
    assert!(files() > rolled, "the log rolled to a new segment");
    assert_eq!(read_all(&log).len() as u64, log.latest().get());
}

#[test]
fn locate_names_the_batch_holding_an_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for i in 0..30 {
        log.append(&batch("l", 3, i)).unwrap();
    }
    for offset in 0..90 {
        let loc = log.locate(Offset(offset)).unwrap().expect("inside the log");
        assert_eq!(loc.base_offset, Offset(offset / 3 * 3), "offset {offset}");
        assert_eq!(loc.next_offset, loc.base_offset.plus(3));
        assert!(loc.segment_base_offset <= loc.base_offset);
    }
    assert_eq!(log.locate(Offset(90)).unwrap(), None);
}

#[test]
fn control_batches_take_a_place_in_the_log_but_no_offset() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    for i in 0..20 {
        log.append(&strand_storage::control_batch(b"", i)).unwrap();
        let info = log.append(&batch(&format!("d{i}"), 2, i)).unwrap();
        assert_eq!(info.base_offset, Offset(2 * i as u64), "control batches take no offset");
        log.append(&strand_storage::control_batch(b"conf", i)).unwrap();
    }
    let want = read_all(&log);
    assert_eq!(want.len(), 40);
    assert_eq!(want[39].2, b"d19-1");
    log.close().unwrap();
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.latest(), Offset(40));
    assert_eq!(read_all(&log), want);
    let controls = batches(&raw_log(&log))
        .filter(|b| b.as_ref().unwrap().is_control())
        .count();
    assert!(controls > 0, "control batches are served with the data");
}

/// The log as a Raft log (DESIGN.md, "Replication": a Raft entry is one
/// batch; entries without records are control batches that take no offset).
#[test]
fn raft_entries_are_found_by_index_and_truncated_by_index() {
    use strand_storage::Stamp;
    let dir = tempfile::tempdir().unwrap();
    let mut log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.last_raft_index().unwrap(), None);
    // Entry i (from 1) has term 1 + i / 20; every fifth entry is a control batch.
    let entry = |i: u64| {
        if i.is_multiple_of(5) {
            strand_storage::control_batch(b"noop", 0)
        } else {
            batch(&format!("e{i}"), 2, i as i64)
        }
    };
    for i in 1..=100u64 {
        let stamp = Stamp {
            term: Term(1 + i / 20),
            raft_index: RaftIndex(i),
            append_time_ms: 1_000,
        };
        log.append_entry(&entry(i), stamp).unwrap();
    }
    assert!(log.segment_count() > 3);
    assert_eq!(log.first_raft_index().unwrap(), Some(RaftIndex(1)));
    assert_eq!(log.last_raft_index().unwrap(), Some(RaftIndex(100)));
    assert_eq!(log.latest(), Offset(80 * 2), "control entries take no offset");
    for i in 1..=100u64 {
        assert_eq!(
            log.raft_term(RaftIndex(i)).unwrap(),
            Some(Term(1 + i / 20)),
            "term of {i}"
        );
        let (bytes, term) = log.raft_entry(RaftIndex(i)).unwrap().expect("stored");
        let b = strand_storage::BatchRef::validate(&bytes).unwrap();
        assert_eq!(
            (b.raft_index(), term, b.is_control()),
            (RaftIndex(i), Term(1 + i / 20), i.is_multiple_of(5)),
            "entry {i}"
        );
    }
    assert_eq!(log.raft_term(RaftIndex(101)).unwrap(), None);
    let range = log.raft_entries(RaftIndex(10), RaftIndex(40), u64::MAX).unwrap();
    assert_eq!(range.len(), 30);
    let limited = log.raft_entries(RaftIndex(10), RaftIndex(40), 300).unwrap();
    assert!(
        !limited.is_empty() && limited.len() < 30,
        "max_bytes bounds the answer: {}",
        limited.len()
    );
    // A stamp that does not follow the log is refused.
    let stamp = Stamp {
        term: Term(9),
        raft_index: RaftIndex(150),
        append_time_ms: 0,
    };
    assert!(matches!(
        log.append_entry(&entry(1), stamp),
        Err(StorageError::UnexpectedRaftIndex {
            expected: RaftIndex(101),
            got: RaftIndex(150)
        })
    ));

    // A new leader's log diverges from entry 37 on.
    log.truncate_from_raft_index(RaftIndex(37)).unwrap();
    assert_eq!(log.last_raft_index().unwrap(), Some(RaftIndex(36)));
    let offsets_before_37 = (1..37u64).filter(|i| !i.is_multiple_of(5)).count() as u64 * 2;
    assert_eq!(log.latest(), Offset(offsets_before_37));
    for i in 37..=50u64 {
        log.append_entry(
            &batch(&format!("new{i}"), 1, 0),
            Stamp {
                term: Term(7),
                raft_index: RaftIndex(i),
                append_time_ms: 2_000,
            },
        )
        .unwrap();
    }
    drop(log);
    let log = PartitionLog::open(dir.path(), small_config()).unwrap();
    assert_eq!(log.last_raft_index().unwrap(), Some(RaftIndex(50)));
    assert_eq!(log.raft_term(RaftIndex(36)).unwrap(), Some(Term(2)));
    assert_eq!(log.raft_term(RaftIndex(37)).unwrap(), Some(Term(7)));
    let all = read_all(&log);
    assert_eq!(all.len() as u64, offsets_before_37 + 14);
    assert_eq!(all.last().unwrap().2, b"new50-0");
}

/// Regression: a segment holding only control batches (append time 0) looked
/// ancient and rolled into a new segment with the same base offset, whose
/// file then overwrote it. Such a segment must not roll.
#[test]
fn a_segment_without_offsets_never_rolls() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_ms: Some(1000),
        ..small_config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg.clone()).unwrap();
    let stamp = |i| strand_storage::Stamp {
        term: Term(1),
        raft_index: RaftIndex(i),
        append_time_ms: 0,
    };
    log.append_entry(&strand_storage::control_batch(b"", 0), stamp(1))
        .unwrap();
    log.roll().unwrap();
    log.append_entry(
        &batch("after", 2, 5),
        strand_storage::Stamp {
            append_time_ms: 10_000_000,
            ..stamp(2)
        },
    )
    .unwrap();
    assert_eq!(log.segment_count(), 1);
    assert_eq!(log.raft_term(RaftIndex(1)).unwrap(), Some(Term(1)));
    drop(log);
    let log = PartitionLog::open(dir.path(), cfg).unwrap();
    assert_eq!(read_all(&log).len(), 2);
    assert_eq!(log.last_raft_index().unwrap(), Some(RaftIndex(2)));
}

/// Retention of a replicated log never removes an entry above the commit
/// index: a sealed segment whose records are all below the high watermark
/// may still end with entries that take no offset (a new leader's no-op, a
/// configuration change) and are not committed yet.
#[test]
fn retention_stops_at_a_segment_ending_with_an_uncommitted_entry() {
    use strand_storage::Stamp;
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(0),
        ..small_config()
    };
    let mut log = PartitionLog::open(dir.path(), cfg).unwrap();
    let stamp = |i: u64| Stamp {
        term: Term(1),
        raft_index: RaftIndex(i),
        append_time_ms: 1_000,
    };
    // Entries 1..=4 with records, 5 a no-op (no offset), sealed; then 6.
    for i in 1..=4u64 {
        log.append_entry(&batch(&format!("r{i}"), 2, 0), stamp(i)).unwrap();
    }
    log.append_entry(&strand_storage::control_batch(b"noop", 0), stamp(5))
        .unwrap();
    log.roll().unwrap();
    log.append_entry(&batch("r6", 2, 0), stamp(6)).unwrap();
    let hw = Offset(8);
    // The first segment's records are all below the high watermark, but its
    // last entry (5) is above the commit index (4): it stays.
    let kept = log
        .apply_retention_below(strand_storage::now_ms(), hw, Some(RaftIndex(4)))
        .unwrap();
    assert_eq!(kept.deleted_segments, 0);
    assert_eq!(log.first_raft_index().unwrap(), Some(RaftIndex(1)));
    let gone = log
        .apply_retention_below(strand_storage::now_ms(), hw, Some(RaftIndex(5)))
        .unwrap();
    assert_eq!(gone.deleted_segments, 1);
    assert_eq!(gone.last_deleted, Some((RaftIndex(5), Term(1))));
}
