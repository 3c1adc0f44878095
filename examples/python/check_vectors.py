"""Checks codec.py against every vector of docs/format-vectors.json.

- producer vectors (no stamp, no control): encode must equal `hex` exactly
  (snappy: the records section before compression must equal
  `uncompressed_records_hex`, and our compressed batch must decode back);
- stamped vectors: decode `hex` to the listed records and offsets, and
  build + stamp reproduces `hex` exactly (control batch included);
- fetch cases: concatenate, read from `requested_offset`, compare the
  delivered offsets and the next offset;
- murmur2: every hash and every partition.

Exits non-zero on the first mismatch. No broker needed.
"""

from __future__ import annotations

import json
import os
import sys

import codec

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_VECTORS = os.path.join(HERE, "..", "..", "docs", "format-vectors.json")


class Mismatch(Exception):
    pass


def bytes_of(v):
    if v is None:
        return None
    if "utf8" in v:
        return v["utf8"].encode("utf-8")
    return bytes.fromhex(v["hex"])


def records_of(vec) -> list:
    return [
        codec.Record(
            r["timestamp_ms"],
            bytes_of(r["key"]),
            bytes_of(r["value"]),
            [codec.Header(h["key"], bytes_of(h["value"])) for h in r["headers"]],
            offset=r["offset"],
        )
        for r in vec["records"]
    ]


def expect(cond: bool, what: str) -> None:
    if not cond:
        raise Mismatch(what)


def first_diff(a: bytes, b: bytes) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at byte {i}: ours {x:02x}, expected {y:02x}"
    return f"lengths differ: ours {len(a)}, expected {len(b)}"


def check_decode(vec, want: list) -> None:
    name = vec["name"]
    h, got = codec.decode_batch(bytes.fromhex(vec["hex"]))
    expect(len(got) == len(want), f"{name}: decoded {len(got)} records, expected {len(want)}")
    for g, w in zip(got, want):
        expect(g.offset == w.offset, f"{name}: offset {g.offset}, expected {w.offset}")
        expect(g.same_content(w), f"{name}: record at {w.offset} decoded as {g}, expected {w}")
    if vec["stamp"]:
        expect(h.base_offset == vec["stamp"]["base_offset"], f"{name}: base_offset {h.base_offset}")


def check_batch(vec) -> str:
    name = vec["name"]
    want_hex = bytes.fromhex(vec["hex"])
    records = records_of(vec)
    producer = codec.Producer(**vec["producer"]) if vec["producer"] else None

    if vec["control"]:
        built = codec.encode_control_batch(vec["control"]["timestamp_ms"], bytes_of(vec["control"]["payload"]))
    else:
        built = None
        if vec["compression"] == "snappy":
            section = codec.encode_records_section(records)
            want_section = bytes.fromhex(vec["uncompressed_records_hex"])
            expect(section == want_section, f"{name}: records section differs, {first_diff(section, want_section)}")
            ours = codec.encode_batch(records, "snappy", producer)
            h, back = codec.decode_batch(ours)
            expect(
                len(back) == len(records) and all(a.same_content(b) for a, b in zip(back, records)),
                f"{name}: our snappy batch does not decode back to the records",
            )
            expect(h.codec == codec.CODEC_SNAPPY, f"{name}: our batch's codec is {h.codec}")
            # Snappy output is not unique; the Rust `snap` encoder's bytes are
            # the vector's. Compare the header fields that do not depend on it.
            theirs = codec.parse_header(want_hex)
            for f in ("magic", "attributes", "record_count", "first_timestamp_ms", "max_timestamp_ms",
                      "producer_id", "producer_epoch", "base_sequence"):
                expect(getattr(h, f) == getattr(theirs, f), f"{name}: header {f} {getattr(h, f)} != {getattr(theirs, f)}")
            if ours == want_hex:
                built = ours  # cramjam compressed exactly as Rust's snap did: compare it all
            else:
                note = "records section equals uncompressed_records_hex; cramjam compressed differently (allowed)"
        else:
            built = codec.encode_batch(records, vec["compression"], producer)

    if built is not None and vec["stamp"]:
        s = vec["stamp"]
        built = codec.stamp(built, s["base_offset"], s["term"], s["raft_index"], s["append_time_ms"])
    if built is not None:
        expect(built == want_hex, f"{name}: encoded bytes differ from the vector, {first_diff(built, want_hex)}")
        note = "built and stamped bytes equal hex" if vec["stamp"] else "encoded bytes equal hex"
        if vec["compression"] == "snappy":
            note += " (records section and snappy bytes)"

    check_decode(vec, records)
    if vec["stamp"] and not vec["control"]:
        note += "; decodes to records and offsets"
    elif not vec["control"]:
        note += "; decodes back"
    else:
        note += "; decodes to no records"
    return note


def check_fetch(case, by_name) -> str:
    data = b"".join(bytes.fromhex(by_name[n]["hex"]) for n in case["batches"])
    got, nxt = codec.read_fetch(data, case["requested_offset"])
    offsets = [r.offset for r in got]
    expect(offsets == case["delivered_offsets"], f"{case['name']}: delivered {offsets}, expected {case['delivered_offsets']}")
    expect(nxt == case["next_offset"], f"{case['name']}: next offset {nxt}, expected {case['next_offset']}")
    # The delivered records are the vectors' records with those offsets.
    want = {r.offset: r for n in case["batches"] for r in records_of(by_name[n])}
    for r in got:
        expect(r.same_content(want[r.offset]), f"{case['name']}: record {r.offset} differs")
    return f"delivered {offsets}, next {nxt}"


def check_murmur2(m) -> str:
    for h in m["hashes"]:
        key = bytes_of(h["key"])
        got = codec.murmur2(key)
        expect(got == h["murmur2"], f"murmur2({key!r}) = {got}, expected {h['murmur2']}")
    for p in m["partitions"]:
        key = bytes_of(p["key"])
        got = codec.partition_for_key(key, p["num_partitions"])
        expect(got == p["partition"], f"partition({key!r}, {p['num_partitions']}) = {got}, expected {p['partition']}")
    return f"{len(m['hashes'])} hashes, {len(m['partitions'])} partitions"


def refused(batch: bytes, what: str) -> None:
    try:
        codec.decode_batch(batch)
    except codec.BatchError:
        return
    raise Mismatch(f"a damaged batch ({what}) decoded without error")


def check_refusals(by_name) -> None:
    """The decoder must refuse what FORMAT.md calls invalid."""
    plain = bytes.fromhex(by_name["plain"]["hex"])
    flipped = bytearray(plain)
    flipped[85] ^= 0x01  # inside "hello": CRC mismatch
    refused(bytes(flipped), "flipped byte")
    refused(plain[:-1], "truncated")
    refused(plain + b"\x00", "byte after the batch")
    bad_attr = bytearray(plain)
    bad_attr[78] = 1  # record 0's attributes
    codec.seal(bad_attr)
    refused(bytes(bad_attr), "record attributes 1, CRC resealed")
    bad_magic = bytearray(plain)
    bad_magic[40] = 2
    codec.seal(bad_magic)
    refused(bytes(bad_magic), "magic 2")
    bad_codec = bytearray(plain)
    bad_codec[41] = 3
    codec.seal(bad_codec)
    refused(bytes(bad_codec), "codec 3")


def check_all(path: str = DEFAULT_VECTORS, verbose: bool = True) -> None:
    with open(path) as f:
        doc = json.load(f)
    by_name = {v["name"]: v for v in doc["batches"]}
    n = 0
    for vec in doc["batches"]:
        note = check_batch(vec)
        n += 1
        if verbose:
            print(f"  ok  batch {vec['name']}: {note}")
    for case in doc["fetches"]:
        note = check_fetch(case, by_name)
        n += 1
        if verbose:
            print(f"  ok  fetch {case['name']}: {note}")
    note = check_murmur2(doc["murmur2"])
    if verbose:
        print(f"  ok  murmur2: {note}")
    check_refusals(by_name)
    if verbose:
        print("  ok  damaged copies of the vectors are refused")
    # The varint table of FORMAT.md.
    table = {0: "00", -1: "01", 1: "02", -3: "05", 5: "0a", 49: "62", 63: "7e", -64: "7f",
             64: "8001", 300: "d804", 1000: "d00f", -1000: "cf0f"}
    for v, hx in table.items():
        out = bytearray()
        codec.write_varint(out, v)
        expect(out.hex() == hx, f"varint {v}: {out.hex()}, expected {hx}")
        expect(codec.read_varint(out, 0, len(out)) == (v, len(out)), f"varint {v} does not decode back")
    if verbose:
        print(f"  ok  varint table ({len(table)} values)")
    print(f"check_vectors: all {n} batch/fetch vectors and the murmur2 vectors pass")


def main() -> int:
    path = sys.argv[1] if len(sys.argv) > 1 else DEFAULT_VECTORS
    try:
        check_all(path)
    except (Mismatch, codec.BatchError) as e:
        print(f"check_vectors: FAIL: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
