//! Helpers shared by the storage tests.

use std::path::{Path, PathBuf};

use strand_storage::{BatchBuilder, Compression, DecodedRecords, LogConfig, NewRecord, Offset, PartitionLog, batches};

/// A config small enough that tests roll segments and write index entries.
pub fn small_config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        segment_ms: None,
        index_interval_bytes: 128,
        index_max_bytes: 4096,
        preallocate_bytes: 4096,
        max_batch_bytes: 1024,
        retention_ms: None,
        retention_bytes: None,
        fsync: strand_storage::FsyncPolicy::Never,
        verify_sealed_on_open: true,
        ..LogConfig::default()
    }
}

/// One batch of `n` records whose values are `"{tag}-{i}"` and timestamps
/// `ts + i`.
pub fn batch(tag: &str, n: u32, ts: i64) -> Vec<u8> {
    let mut b = BatchBuilder::new(Compression::None);
    for i in 0..n {
        let v = format!("{tag}-{i}");
        b.push(&NewRecord {
            timestamp_ms: ts + i64::from(i),
            key: Some(tag.as_bytes()),
            value: Some(v.as_bytes()),
            headers: &[],
        });
    }
    b.build().expect("non-empty batch")
}

/// Every record in the log as `(offset, timestamp, value)`, read through the
/// public read path from the earliest offset to the end.
pub fn read_all(log: &PartitionLog) -> Vec<(Offset, i64, Vec<u8>)> {
    let mut out = Vec::new();
    let mut next = log.earliest();
    while next < log.latest() {
        let bytes = log.read(next, 1 << 16).expect("read");
        assert!(!bytes.is_empty(), "empty read at {next} below latest {}", log.latest());
        for b in batches(&bytes) {
            let b = b.expect("valid batch");
            for r in DecodedRecords::new(&b).expect("decode").iter() {
                let r = r.expect("record");
                if r.offset >= next {
                    out.push((r.offset, r.timestamp_ms, r.value.unwrap_or_default().to_vec()));
                }
            }
            next = b.next_offset();
        }
    }
    out
}

/// The raw bytes of every batch in the log, concatenated.
pub fn raw_log(log: &PartitionLog) -> Vec<u8> {
    let mut out = Vec::new();
    let mut next = log.earliest();
    while next < log.latest() {
        let bytes = log.read(next, 1 << 16).expect("read");
        for b in batches(&bytes) {
            next = b.expect("valid").next_offset();
        }
        out.extend_from_slice(&bytes);
    }
    out
}

/// Segment log files in `dir`, ascending.
pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

/// Logical size of a segment file: the bytes up to the first invalid batch.
pub fn logical_size(path: &Path) -> u64 {
    let data = std::fs::read(path).expect("read segment");
    let mut pos = 0usize;
    while let Some(len) = strand_storage::framed_len(&data[pos..]) {
        if len < strand_storage::HEADER_LEN || pos + len > data.len() {
            break;
        }
        if strand_storage::BatchRef::validate(&data[pos..pos + len]).is_err() {
            break;
        }
        pos += len;
    }
    pos as u64
}

/// Copies a directory's files (flat).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read dir") {
        let p = e.expect("entry").path();
        std::fs::copy(&p, to.join(p.file_name().expect("name"))).expect("copy");
    }
}

/// A small seeded PRNG (xorshift64*), so failures replay from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
