//! Batches a careless or hostile producer might send: valid framing and a
//! valid CRC over records that are not (the storage crate's documented
//! layout, written by hand, as a client in another language would). A broker
//! must refuse every one with `CORRUPT_BATCH` and store nothing; the fault
//! suite sends them next to its workload, and the broker's tests name the
//! reason each gets.

/// Zig-zag varint, as the batch format writes it.
fn varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// One record: attributes, timestamp and offset deltas, key `k`, value
/// `value`, no headers.
pub fn record(out: &mut Vec<u8>, attributes: u8, ts_delta: i64, offset_delta: i64) {
    let mut body = vec![attributes];
    varlong(&mut body, ts_delta);
    varlong(&mut body, offset_delta);
    varlong(&mut body, 1);
    body.push(b'k');
    varlong(&mut body, 5);
    body.extend_from_slice(b"value");
    varlong(&mut body, 0);
    varlong(out, body.len() as i64);
    out.extend_from_slice(&body);
}

/// Records `(attributes, timestamp delta, offset delta)`.
pub fn records(list: &[(u8, i64, i64)]) -> Vec<u8> {
    let mut out = Vec::new();
    for &(a, t, o) in list {
        record(&mut out, a, t, o);
    }
    out
}

/// A batch with this records section, record count and timestamps, its
/// header laid out as documented and its CRC right.
pub fn batch(section: &[u8], count: u32, first_ts: i64, max_ts: i64) -> Vec<u8> {
    let mut b = vec![0u8; 77];
    b[8..12].copy_from_slice(&((77 - 12 + section.len()) as u32).to_le_bytes());
    b[40] = 1; // magic
    b[43..47].copy_from_slice(&count.to_le_bytes());
    b[47..55].copy_from_slice(&first_ts.to_le_bytes());
    b[55..63].copy_from_slice(&max_ts.to_le_bytes());
    b[63..71].copy_from_slice(&(-1i64).to_le_bytes());
    b[71..73].copy_from_slice(&(-1i16).to_le_bytes());
    b[73..77].copy_from_slice(&(-1i32).to_le_bytes());
    b.extend_from_slice(section);
    let mut h = crc32fast::Hasher::new();
    h.update(&b[..12]);
    h.update(&b[16..]);
    let crc = h.finalize();
    b[12..16].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Every kind of malformed batch, stamped at `now_ms`: what it is, its
/// bytes, and a phrase the refusal's message contains.
pub fn every_kind(now_ms: i64) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let ts = now_ms;
    let three = records(&[(0, 0, 0), (0, 0, 1), (0, 0, 2)]);
    vec![
        (
            "count 5 over random bytes",
            batch(&[0x9f, 0x13, 0x77, 0x01, 0xfe, 0x42], 5, ts, ts),
            "malformed records",
        ),
        ("count 5 over zeros", batch(&[0; 32], 5, ts, ts), "malformed records"),
        ("truncated varint", batch(&[0x80, 0x80], 1, ts, ts), "truncated varint"),
        ("count 5, three records", batch(&three, 5, ts, ts), "record count"),
        (
            "count 1, three records",
            batch(&three, 1, ts, ts),
            "bytes follow the last record",
        ),
        (
            "offset delta 1000",
            batch(&records(&[(0, 0, 0), (0, 0, 1000)]), 2, ts, ts),
            "offset delta 1000",
        ),
        (
            "two records at delta 0",
            batch(&records(&[(0, 0, 0), (0, 0, 0)]), 2, ts, ts),
            "offset delta 0",
        ),
        (
            "a record 30 years ahead, header max now",
            batch(&records(&[(0, 0, 0), (0, 30 * 365 * 86_400_000, 1)]), 2, ts, ts),
            "above the header's max_timestamp",
        ),
        (
            "record attributes set",
            batch(&records(&[(4, 0, 0)]), 1, ts, ts),
            "attributes must be 0",
        ),
    ]
}
