//! Storage micro-benchmarks: append throughput (with and without snappy, no
//! fsync), sequential read throughput from the map, and index lookup latency.
//!
//! Run: `cargo bench -p benches --bench storage` (add `-- --quick` for a
//! shorter run). Results per machine are in `benches/README.md`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use strand_storage::{BatchBuilder, Compression, FsyncPolicy, LogConfig, NewRecord, Offset, PartitionLog};

const RECORDS_PER_BATCH: usize = 100;
const RECORD_BYTES: usize = 100;

fn config() -> LogConfig {
    LogConfig {
        fsync: FsyncPolicy::Never,
        segment_bytes: 256 << 20,
        retention_ms: None,
        ..LogConfig::default()
    }
}

/// A batch of 100 records × 100 bytes of mildly compressible text.
fn batch(codec: Compression) -> Vec<u8> {
    let mut b = BatchBuilder::new(codec);
    let mut value = [0u8; RECORD_BYTES];
    for i in 0..RECORDS_PER_BATCH {
        for (j, v) in value.iter_mut().enumerate() {
            *v = b"abcdefghijklmnopqrstuvwxyz0123456789"[(i * 7 + j * 13) % 36];
        }
        let key = format!("key-{i}");
        b.push(&NewRecord {
            timestamp_ms: 1_700_000_000_000 + i as i64,
            key: Some(key.as_bytes()),
            value: Some(&value),
            headers: &[],
        });
    }
    b.build().expect("batch")
}

fn append(c: &mut Criterion) {
    let mut g = c.benchmark_group("append");
    for codec in [Compression::None, Compression::Snappy] {
        let bytes = batch(codec);
        // Throughput in uncompressed record payload, what a producer sends.
        g.throughput(Throughput::Bytes((RECORDS_PER_BATCH * RECORD_BYTES) as u64));
        g.bench_function(BenchmarkId::new("100x100B", format!("{codec:?}")), |b| {
            let dir = tempfile::tempdir().expect("tempdir");
            let mut log = PartitionLog::open(dir.path(), config()).expect("open");
            b.iter(|| log.append(&bytes).expect("append"));
        });
    }
    g.finish();
}

fn filled_log(batches: usize) -> (tempfile::TempDir, PartitionLog) {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut log = PartitionLog::open(dir.path(), config()).expect("open");
    let bytes = batch(Compression::None);
    for _ in 0..batches {
        log.append(&bytes).expect("append");
    }
    (dir, log)
}

fn read(c: &mut Criterion) {
    let mut g = c.benchmark_group("read");
    let (_dir, log) = filled_log(4000); // ~45 MB
    let total = log.size_bytes();
    g.throughput(Throughput::Bytes(total));
    g.bench_function("sequential_1MiB_fetches", |b| {
        b.iter(|| {
            let mut offset = Offset(0);
            let mut bytes = 0usize;
            while offset < log.latest() {
                let chunk = log.read(offset, 1 << 20).expect("read");
                let last = strand_storage::batches(&chunk).last().expect("batch").expect("valid");
                offset = last.next_offset();
                bytes += chunk.len();
            }
            bytes
        });
    });
    g.finish();
}

fn lookup(c: &mut Criterion) {
    let mut g = c.benchmark_group("lookup");
    let (_dir, log) = filled_log(4000);
    let latest = log.latest().get();
    let mut i = 0u64;
    g.bench_function("read_one_batch_at_random_offset", |b| {
        b.iter(|| {
            // A spread of offsets so the branch predictor cannot learn one path.
            i = (i + 7919) % latest;
            log.read(Offset(i), 1).expect("read").len()
        });
    });
    g.bench_function("offset_index_locate", |b| {
        b.iter(|| {
            i = (i + 7919) % latest;
            log.locate(Offset(i)).expect("locate")
        });
    });
    let mut t = 0i64;
    g.bench_function("timestamp_to_offset", |b| {
        b.iter(|| {
            t = (t + 37) % 100;
            log.lookup_by_timestamp(1_700_000_000_000 + t).expect("lookup")
        });
    });
    g.finish();
}

criterion_group!(benches, append, read, lookup);
criterion_main!(benches);
