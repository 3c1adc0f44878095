//! Zig-zag varints, as in Kafka's record format and protobuf's `sint64`.

use crate::error::BatchError;

/// Appends `v` zig-zag encoded.
pub(crate) fn put_varlong(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Reads one zig-zag varint from the front of `buf`, advancing it.
pub(crate) fn get_varlong(buf: &mut &[u8]) -> Result<i64, BatchError> {
    let mut z: u64 = 0;
    let mut shift = 0u32;
    loop {
        let (&b, rest) = buf.split_first().ok_or(BatchError::MalformedRecords {
            reason: "truncated varint",
        })?;
        *buf = rest;
        if shift >= 64 {
            return Err(BatchError::MalformedRecords {
                reason: "varint longer than 10 bytes",
            });
        }
        z |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
    }
    Ok(((z >> 1) as i64) ^ -((z & 1) as i64))
}

/// Encoded size of `v`.
pub(crate) fn varlong_len(v: i64) -> usize {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    let mut n = 1;
    while z >= 0x80 {
        z >>= 7;
        n += 1;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varlong_round_trips_edge_values() {
        for (i, v) in [0i64, 1, -1, 63, -64, 64, 300, i64::MAX, i64::MIN, i32::MIN as i64]
            .into_iter()
            .enumerate()
        {
            let mut out = Vec::new();
            put_varlong(&mut out, v);
            assert_eq!(out.len(), varlong_len(v), "#{i}: length of {v}");
            let mut s = out.as_slice();
            assert_eq!(get_varlong(&mut s).unwrap(), v, "#{i}");
            assert!(s.is_empty(), "#{i}: leftover bytes");
        }
    }
}
