//! The test vectors of `docs/format-vectors.json` against the codec, and
//! against `docs/FORMAT.md`, which prints them (FORMAT.md, "Test vectors").
//!
//! Every batch vector is built with [`BatchBuilder`] (plus the producer
//! fields and the leader's stamp where it has them) and must come out byte
//! for byte as the file says; the same bytes must validate and decode back
//! to the listed records and offsets. So a change to the format fails here
//! until the vectors, and the document that prints them, change with it.
//! The murmur2 vectors are checked by `proto/src/partitioner.rs`'s tests
//! (storage does not depend on proto); here only their presence in
//! FORMAT.md is.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::Deserialize;
use strand_storage::{
    BatchBuilder, BatchRef, Compression, DecodedRecords, Header, NewRecord, Offset, ProducerInfo, RaftIndex,
    RecordBatch, RecordRules, Stamp, Term, batches, control_batch,
};

const VECTORS: &str = include_str!("../../../docs/format-vectors.json");
const FORMAT_MD: &str = include_str!("../../../docs/FORMAT.md");

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Vectors {
    #[allow(dead_code)]
    description: String,
    batches: Vec<BatchVector>,
    fetches: Vec<FetchVector>,
    murmur2: Murmur2,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchVector {
    name: String,
    #[allow(dead_code)]
    description: String,
    compression: String,
    producer: Option<ProducerVector>,
    control: Option<ControlVector>,
    stamp: Option<StampVector>,
    records: Vec<RecordVector>,
    /// Only for compressed batches: the records section before compression.
    #[serde(default)]
    uncompressed_records_hex: Option<String>,
    hex: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProducerVector {
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ControlVector {
    timestamp_ms: i64,
    payload: Data,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StampVector {
    base_offset: u64,
    term: u64,
    raft_index: u64,
    append_time_ms: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecordVector {
    timestamp_ms: i64,
    key: Option<Data>,
    value: Option<Data>,
    headers: Vec<HeaderVector>,
    offset: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HeaderVector {
    key: String,
    value: Option<Data>,
}

/// Bytes in the JSON: `{"utf8": "text"}` or `{"hex": "00ff"}`.
#[derive(Deserialize)]
#[serde(rename_all = "lowercase")]
enum Data {
    Utf8(String),
    Hex(String),
}

impl Data {
    fn bytes(&self) -> Vec<u8> {
        match self {
            Data::Utf8(s) => s.as_bytes().to_vec(),
            Data::Hex(h) => unhex(h),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FetchVector {
    name: String,
    #[allow(dead_code)]
    description: String,
    batches: Vec<String>,
    requested_offset: u64,
    delivered_offsets: Vec<u64>,
    next_offset: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Murmur2 {
    #[allow(dead_code)]
    description: String,
    hashes: Vec<Murmur2Hash>,
    partitions: Vec<Murmur2Partition>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Murmur2Hash {
    key: Data,
    murmur2: i32,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Murmur2Partition {
    key: Data,
    num_partitions: u32,
    partition: u32,
}

fn vectors() -> Vectors {
    serde_json::from_str(VECTORS).expect("docs/format-vectors.json parses")
}

fn unhex(h: &str) -> Vec<u8> {
    assert!(h.len().is_multiple_of(2), "odd-length hex {h:?}");
    (0..h.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&h[i..i + 2], 16).unwrap_or_else(|_| panic!("bad hex {h:?}")))
        .collect()
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn compression(v: &BatchVector) -> Compression {
    v.compression
        .parse()
        .unwrap_or_else(|e| panic!("{}: compression: {e}", v.name))
}

/// The batch as the codec makes it from the vector's inputs: built by a
/// producer, numbered, and stamped by a leader where the vector says so.
fn build(v: &BatchVector) -> Vec<u8> {
    let built = match &v.control {
        Some(c) => control_batch(&c.payload.bytes(), c.timestamp_ms),
        None => {
            let mut b = BatchBuilder::new(compression(v));
            b.set_producer(v.producer.as_ref().map(|p| ProducerInfo {
                producer_id: p.producer_id,
                producer_epoch: p.producer_epoch,
                base_sequence: p.base_sequence,
            }));
            for r in &v.records {
                let (key, value) = (r.key.as_ref().map(Data::bytes), r.value.as_ref().map(Data::bytes));
                let values: Vec<Option<Vec<u8>>> =
                    r.headers.iter().map(|h| h.value.as_ref().map(Data::bytes)).collect();
                let headers: Vec<Header<'_>> = r
                    .headers
                    .iter()
                    .zip(&values)
                    .map(|(h, value)| Header {
                        key: &h.key,
                        value: value.as_deref(),
                    })
                    .collect();
                b.push(&NewRecord {
                    timestamp_ms: r.timestamp_ms,
                    key: key.as_deref(),
                    value: value.as_deref(),
                    headers: &headers,
                });
            }
            b.build().unwrap_or_else(|e| panic!("{}: build: {e}", v.name))
        }
    };
    let Some(s) = &v.stamp else {
        return built;
    };
    // The leader stamps a batch it validated (a producer's, or its own
    // control batch), as the replication loop does before proposing it.
    let validated = if v.control.is_some() {
        RecordBatch::validate(Bytes::from(built))
    } else {
        RecordBatch::validate_producer(Bytes::from(built), &RecordRules::default())
    }
    .unwrap_or_else(|e| panic!("{}: the built batch validates: {e}", v.name));
    let stamp = Stamp {
        term: Term(s.term),
        raft_index: RaftIndex(s.raft_index),
        append_time_ms: s.append_time_ms,
    };
    validated.stamp(Offset(s.base_offset), &stamp).bytes().to_vec()
}

#[test]
fn every_batch_vector_is_exactly_what_the_codec_builds() {
    let mut wrong = Vec::new();
    for v in vectors().batches {
        let got = hex(&build(&v));
        if got != v.hex {
            wrong.push(format!("{}:\n  file:  {}\n  codec: {got}", v.name, v.hex));
        }
    }
    assert!(
        wrong.is_empty(),
        "vectors differ from the codec (FORMAT.md prints them too):\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_batch_vector_validates_and_decodes_to_its_records() {
    for v in vectors().batches {
        let name = &v.name;
        let bytes = unhex(&v.hex);
        let batch = BatchRef::validate(&bytes).unwrap_or_else(|e| panic!("{name}: validate: {e}"));
        if v.stamp.is_none() && v.control.is_none() {
            RecordBatch::validate_producer(Bytes::from(bytes.clone()), &RecordRules::default())
                .unwrap_or_else(|e| panic!("{name}: validate_producer: {e}"));
        }

        // Header fields.
        let stamp = v.stamp.as_ref();
        assert_eq!(
            batch.base_offset(),
            Offset(stamp.map_or(0, |s| s.base_offset)),
            "{name}: base offset"
        );
        assert_eq!(batch.term(), Term(stamp.map_or(0, |s| s.term)), "{name}: term");
        assert_eq!(
            batch.raft_index(),
            RaftIndex(stamp.map_or(0, |s| s.raft_index)),
            "{name}: raft index"
        );
        assert_eq!(
            batch.append_time_ms(),
            stamp.map_or(0, |s| s.append_time_ms),
            "{name}: append time"
        );
        assert_eq!(batch.compression(), compression(&v), "{name}: codec");
        assert_eq!(batch.is_control(), v.control.is_some(), "{name}: control bit");
        assert_eq!(batch.record_count() as usize, v.records.len(), "{name}: record count");
        let producer = v.producer.as_ref().map(|p| ProducerInfo {
            producer_id: p.producer_id,
            producer_epoch: p.producer_epoch,
            base_sequence: p.base_sequence,
        });
        assert_eq!(batch.producer(), producer, "{name}: producer fields");
        if let Some(c) = &v.control {
            assert_eq!(batch.records_section(), c.payload.bytes(), "{name}: control payload");
            assert_eq!(
                batch.next_offset(),
                batch.base_offset(),
                "{name}: a control batch takes no offset"
            );
            assert_eq!(
                (batch.first_timestamp_ms(), batch.max_timestamp_ms()),
                (c.timestamp_ms, c.timestamp_ms),
                "{name}: control timestamps"
            );
        } else {
            let first = v.records.first().map(|r| r.timestamp_ms);
            let max = v.records.iter().map(|r| r.timestamp_ms).max();
            assert_eq!(Some(batch.first_timestamp_ms()), first, "{name}: first timestamp");
            assert_eq!(Some(batch.max_timestamp_ms()), max, "{name}: max timestamp");
        }

        // The records section before compression.
        match (&v.uncompressed_records_hex, batch.compression()) {
            (Some(raw), Compression::Snappy) => {
                let section = snap::raw::Decoder::new()
                    .decompress_vec(batch.records_section())
                    .unwrap_or_else(|e| panic!("{name}: raw snappy: {e}"));
                assert_eq!(hex(&section), *raw, "{name}: decompressed records section");
            }
            (None, Compression::None) => {}
            (raw, codec) => panic!("{name}: uncompressed_records_hex is {raw:?} for codec {codec:?}"),
        }

        // Records.
        let decoded = DecodedRecords::new(&batch).unwrap_or_else(|e| panic!("{name}: decompress: {e}"));
        let got: Vec<_> = decoded
            .iter()
            .enumerate()
            .map(|(i, r)| r.unwrap_or_else(|e| panic!("{name}: record {i}: {e}")))
            .collect();
        assert_eq!(got.len(), v.records.len(), "{name}: records decoded");
        for (i, (got, want)) in got.iter().zip(&v.records).enumerate() {
            assert_eq!(got.offset, Offset(want.offset), "{name} #{i}: offset");
            assert_eq!(got.timestamp_ms, want.timestamp_ms, "{name} #{i}: timestamp");
            assert_eq!(
                got.key.map(<[u8]>::to_vec),
                want.key.as_ref().map(Data::bytes),
                "{name} #{i}: key"
            );
            assert_eq!(
                got.value.map(<[u8]>::to_vec),
                want.value.as_ref().map(Data::bytes),
                "{name} #{i}: value"
            );
            let headers: Vec<(String, Option<Vec<u8>>)> = got
                .headers()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect();
            let want_headers: Vec<(String, Option<Vec<u8>>)> = want
                .headers
                .iter()
                .map(|h| (h.key.clone(), h.value.as_ref().map(Data::bytes)))
                .collect();
            assert_eq!(headers, want_headers, "{name} #{i}: headers");
        }
    }
}

/// A consumer's reading of a Fetch answer (FORMAT.md, "Reading a Fetch
/// answer"): whole batches back to back; a batch that ends at or below the
/// position (a control batch always does) is skipped, as are records below
/// the requested offset.
#[test]
fn fetch_vectors_deliver_the_listed_offsets() {
    let v = vectors();
    let by_name: BTreeMap<&str, &BatchVector> = v.batches.iter().map(|b| (b.name.as_str(), b)).collect();
    for f in &v.fetches {
        let name = &f.name;
        let answer: Vec<u8> = f
            .batches
            .iter()
            .flat_map(|b| {
                unhex(
                    &by_name
                        .get(b.as_str())
                        .unwrap_or_else(|| panic!("{name}: no batch {b}"))
                        .hex,
                )
            })
            .collect();
        let mut position = f.requested_offset;
        let mut delivered = Vec::new();
        for batch in batches(&answer) {
            let batch = batch.unwrap_or_else(|e| panic!("{name}: batch: {e}"));
            if batch.next_offset().get() <= position {
                continue;
            }
            let decoded = DecodedRecords::new(&batch).unwrap_or_else(|e| panic!("{name}: decode: {e}"));
            for r in decoded.iter() {
                let r = r.unwrap_or_else(|e| panic!("{name}: record: {e}"));
                if r.offset.get() >= position {
                    delivered.push(r.offset.get());
                }
            }
            position = batch.next_offset().get();
        }
        assert_eq!(delivered, f.delivered_offsets, "{name}: delivered offsets");
        assert_eq!(position, f.next_offset, "{name}: next fetch offset");
    }
}

/// The ```` ```hex <name> ```` blocks of FORMAT.md, whitespace removed.
fn hex_blocks(doc: &str) -> BTreeMap<String, String> {
    let mut blocks = BTreeMap::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(name) = line.strip_prefix("```hex ") else {
            continue;
        };
        let body: String = lines
            .by_ref()
            .take_while(|l| !l.starts_with("```"))
            .flat_map(|l| l.chars().filter(|c| !c.is_whitespace()))
            .collect();
        let previous = blocks.insert(name.trim().to_owned(), body);
        assert!(previous.is_none(), "FORMAT.md has two hex blocks named {name}");
    }
    blocks
}

#[test]
fn format_md_prints_every_vector_exactly() {
    let v = vectors();
    let mut blocks = hex_blocks(FORMAT_MD);
    for b in &v.batches {
        let printed = blocks
            .remove(&b.name)
            .unwrap_or_else(|| panic!("FORMAT.md has no ```hex {} block", b.name));
        assert_eq!(
            printed, b.hex,
            "FORMAT.md prints vector {} differently from the JSON",
            b.name
        );
        if let Some(raw) = &b.uncompressed_records_hex {
            let key = format!("{}/records", b.name);
            let printed = blocks
                .remove(&key)
                .unwrap_or_else(|| panic!("FORMAT.md has no ```hex {key} block"));
            assert_eq!(&printed, raw, "FORMAT.md prints {key} differently from the JSON");
        }
    }
    assert!(
        blocks.is_empty(),
        "FORMAT.md has hex blocks of no vector: {:?}",
        blocks.keys()
    );
    for h in &v.murmur2.hashes {
        let key = String::from_utf8(h.key.bytes()).expect("murmur2 keys are text");
        let row = format!("| `{key}` | {} |", h.murmur2);
        assert!(FORMAT_MD.contains(&row), "FORMAT.md lacks the murmur2 row {row}");
    }
    for p in &v.murmur2.partitions {
        let key = String::from_utf8(p.key.bytes()).expect("murmur2 keys are text");
        let row = format!("| `{key}` | {} | {} |", p.num_partitions, p.partition);
        assert!(FORMAT_MD.contains(&row), "FORMAT.md lacks the partition row {row}");
    }
}
