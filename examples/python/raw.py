"""Strand with raw record batches built and read by codec.py.

Produces batches (PartitionBatch.batch: uncompressed, snappy, idempotent),
fetches them in the default RECORD_FORMAT_BATCHES and decodes them with
codec.py, checks the leader stored the producer's bytes unchanged, and
shows that damaged batches are refused per partition (CORRUPT_BATCH and
friends) while the rest of the request is stored. Exits 1 on any mismatch.

    python raw.py [--addr 127.0.0.1:9292] [--topic-prefix NAME]
"""

from __future__ import annotations

import struct
import time

import codec
from codec import Header, Producer, Record
from common import (
    RPC_TIMEOUT, channel, check, create_topic, error_name, parse_args, pb, rpc, run, wait_for_leaders,
)

PARTITIONS = 2


def now_ms() -> int:
    return int(time.time() * 1000)


def high_watermark(strand, topic: str, partition: int) -> int:
    return strand.ListOffsets(pb.ListOffsetsRequest(topic=topic, partition=partition, latest=True), timeout=RPC_TIMEOUT).high_watermark


def fetch_batches(strand, topic: str, partition: int, offset: int, max_bytes: int = 0):
    """One Fetch in the default format: (PartitionData, raw batch bytes list)."""
    resp = strand.Fetch(
        pb.FetchRequest(partitions=[pb.FetchPartition(topic=topic, partition=partition, offset=offset, max_bytes=max_bytes)]),
        timeout=RPC_TIMEOUT,
    )
    pd = resp.partitions[0]
    check(not pd.HasField("error"), f"Fetch {topic}/{partition}@{offset}: {error_name(pd.error)} {pd.error.message}")
    check(len(pd.decoded_records) == 0, "a RECORD_FORMAT_BATCHES fetch filled decoded_records")
    return pd


def consume(strand, topic: str, partition: int, offset: int, until: int) -> tuple[list, list]:
    """Reads [offset, until) with Fetch + codec.read_fetch: (records, stored batches)."""
    records, batches = [], []
    while offset < until:
        pd = fetch_batches(strand, topic, partition, offset)
        check(len(pd.records) > 0, f"Fetch {topic}/{partition}@{offset} below the high watermark {until} answered no batches")
        got, nxt = codec.read_fetch(pd.records, offset)
        check(nxt > offset, f"Fetch {topic}/{partition}@{offset}: no progress")
        check(pd.next_offset == nxt, f"Fetch {topic}/{partition}@{offset}: PartitionData.next_offset {pd.next_offset}, the batches end at {nxt}")
        check(not got or got[0].offset == offset, f"first record delivered {got[0].offset if got else None}, asked {offset}")
        records.extend(got)
        batches.extend(codec.split_batches(pd.records))
        offset = nxt
    return records, batches


def produce(strand, batches: list) -> list:
    """Produces [(topic, partition, batch bytes)] in one request; the per-batch results."""
    resp = strand.Produce(
        pb.ProduceRequest(acks=pb.ACKS_ALL, batches=[pb.PartitionBatch(topic=t, partition=p, batch=b) for t, p, b in batches]),
        timeout=RPC_TIMEOUT,
    )
    check(len(resp.results) == len(batches), f"Produce: {len(resp.results)} results for {len(batches)} batches")
    check(len(resp.record_results) == 0, "Produce with batches only answered record_results")
    for (t, p, _), res in zip(batches, resp.results):
        check((res.topic, res.partition) == (t, p), f"result for {res.topic}/{res.partition}, expected {t}/{p} (results are in request order)")
    return list(resp.results)


def damaged(batch: bytes, what: str) -> bytes:
    b = bytearray(batch)
    if what == "flipped byte":  # in the records section, CRC left as it was
        b[-3] ^= 0x40
    elif what == "record attributes 1":  # well framed, CRC resealed, record invalid
        b[codec.HEADER_LEN + 1] = 1
        codec.seal(b)
    elif what == "codec 3":
        struct.pack_into("<H", b, 41, 3)
        codec.seal(b)
    elif what == "truncated":
        b = b[:-1]
    elif what == "control bit":  # a control batch: record_count 0, as a producer must never send
        b = bytearray(codec.encode_control_batch(0, b"\x00"))
    else:
        raise ValueError(what)
    return bytes(b)


def main() -> None:
    args = parse_args(__doc__)
    print(f"broker {args.addr}")
    ch = channel(args.addr)
    strand = rpc.StrandStub(ch)
    admin = rpc.AdminStub(ch)

    topic = f"{args.topic_prefix}-raw"
    n = create_topic(admin, topic, PARTITIONS)
    wait_for_leaders(strand, topic, n)
    start = {p: high_watermark(strand, topic, p) for p in range(n)}

    # --- Produce raw batches -----------------------------------------------
    t = now_ms()
    plain = [
        Record(t, b"user-1", b"login", [Header("trace-id", b"abc"), Header("retry", None)]),
        Record(t - 3, b"user-2", b"\x00\xff\x10", [Header("content-type", b"bin")]),  # earlier than record 0
        Record(t + 1, b"user-1", None),  # tombstone
        Record(t + 2, b"", b""),  # empty, not null
    ]
    snappy = [Record(t + 100 + i, None, f"sensor=greenhouse-{i} temperature=21.{i} unit=celsius".encode()) for i in range(20)]
    more = [Record(t + 200, b"k", b"second batch, same partition"), Record(t + 201, None, b"and another")]
    sent = [
        (topic, 0, codec.encode_batch(plain)),
        (topic, 1, codec.encode_batch(snappy, "snappy")),
        (topic, 0, codec.encode_batch(more)),
    ]
    by_batch = [plain, snappy, more]
    results = produce(strand, sent)
    for (tp, p, b), res, recs in zip(sent, results, by_batch):
        check(not res.HasField("error"), f"batch to {tp}/{p}: {error_name(res.error)} {res.error.message}")
        h = codec.parse_header(b)
        print(f"produced a {len(b)}-byte {'snappy' if h.codec else 'plain'} batch of {len(recs)} records to partition {p}: base offset {res.base_offset}")
    check(results[2].base_offset == results[0].base_offset + len(plain), "the second batch to partition 0 does not follow the first")

    # --- Fetch (RECORD_FORMAT_BATCHES) and decode with codec.py -------------
    expected = {}  # (partition, offset) -> Record
    sent_by_base = {}  # (partition, base offset) -> (bytes sent, append time answered)
    for (tp, p, b), res, recs in zip(sent, results, by_batch):
        sent_by_base[(p, res.base_offset)] = (b, res.log_append_time_ms)
        for i, r in enumerate(recs):
            expected[(p, res.base_offset + i)] = r
    for p in range(n):
        hw = high_watermark(strand, topic, p)
        records, batches = consume(strand, topic, p, start[p], hw)
        got = {(p, r.offset): r for r in records}
        for pos, want in expected.items():
            if pos[0] != p:
                continue
            check(pos in got, f"record {pos} not fetched")
            check(got[pos].same_content(want), f"record {pos}: fetched {got[pos]}, sent {want}")
        check(len(records) == hw - start[p], f"partition {p}: {len(records)} records fetched, high watermark moved by {hw - start[p]}")
        for stored in batches:
            h = codec.validate(stored)
            if h.is_control or (p, h.base_offset) not in sent_by_base:
                continue
            mine, append_time = sent_by_base[(p, h.base_offset)]
            check(stored[40:] == mine[40:], f"partition {p} batch at {h.base_offset}: stored bytes from offset 40 on differ from the producer's")
            check(h.append_time_ms > 0 and h.raft_term > 0, f"batch at {h.base_offset}: leader fields not stamped ({h})")
            check(h.append_time_ms == append_time, f"batch at {h.base_offset}: append_time_ms {h.append_time_ms}, Produce answered log_append_time_ms {append_time}")
        print(f"fetched partition {p} [{start[p]}, {hw}) as batches: {len(records)} records decoded by codec.py, "
              f"stored bytes 40.. equal to what was sent, leader stamped offsets/term/append time")

    # A fetch from the middle of a batch: the batch starts before the offset,
    # the reader skips the records below it.
    mid = results[0].base_offset + 2
    pd = fetch_batches(strand, topic, 0, mid)
    first = codec.parse_header(pd.records)
    got, nxt = codec.read_fetch(pd.records, mid)
    check(first.base_offset < mid and got[0].offset == mid, f"fetch at {mid}: first batch at {first.base_offset}, first record {got[0].offset}")
    print(f"fetch at {mid} (mid-batch): first batch starts at {first.base_offset}, records below {mid} skipped")

    # The same records in the other form: the broker decodes our batches.
    resp = strand.Fetch(pb.FetchRequest(partitions=[pb.FetchPartition(topic=topic, partition=1, offset=results[1].base_offset)],
                                        record_format=pb.RECORD_FORMAT_PROTOBUF), timeout=RPC_TIMEOUT)
    dec = resp.partitions[0].decoded_records
    check([(r.value, r.timestamp_ms) for r in dec[: len(snappy)]] == [(r.value, r.timestamp_ms) for r in snappy],
          "the broker's decoding of our snappy batch differs from what we encoded")
    print(f"RECORD_FORMAT_PROTOBUF of our snappy batch: the broker decodes the same {len(snappy)} records")

    # Subscribe in the default format, decoded with codec.py.
    stream = strand.Subscribe(pb.SubscribeRequest(topic=topic, partition=1, offset=results[1].base_offset), timeout=RPC_TIMEOUT)
    sub, pos = [], results[1].base_offset
    try:
        for msg in stream:
            check(not msg.HasField("error"), f"Subscribe: {error_name(msg.error)} {msg.error.message}")
            recs, pos = codec.read_fetch(msg.records, pos)
            sub.extend(recs)
            if len(sub) >= len(snappy):
                break
    finally:
        stream.cancel()
    check(all(a.same_content(b) for a, b in zip(sub, snappy)), "Subscribe (batches) records differ")
    print(f"subscribe partition 1 (batches): {len(sub)} records decoded by codec.py")

    # --- An idempotent producer ----------------------------------------------
    ids = strand.InitProducerId(pb.InitProducerIdRequest(), timeout=RPC_TIMEOUT)
    check(ids.producer_id >= 1, f"InitProducerId: producer_id {ids.producer_id}")
    idem = codec.encode_batch([Record(now_ms(), b"k", b"exactly once"), Record(now_ms(), b"k", b"me too")],
                              producer=Producer(ids.producer_id, ids.producer_epoch, 0))
    r1 = produce(strand, [(topic, 1, idem)])[0]
    check(not r1.HasField("error"), f"idempotent batch: {error_name(r1.error)} {r1.error.message}")
    hw1 = high_watermark(strand, topic, 1)
    r2 = produce(strand, [(topic, 1, idem)])[0]  # a retry: the same bytes
    check(not r2.HasField("error") and r2.base_offset == r1.base_offset, f"retried idempotent batch: {r2}, first {r1}")
    check(high_watermark(strand, topic, 1) == hw1, "a retried idempotent batch was stored twice")
    gap = codec.encode_batch([Record(now_ms(), b"k", b"gap")], producer=Producer(ids.producer_id, ids.producer_epoch, 5))
    r3 = produce(strand, [(topic, 1, gap)])[0]
    check(r3.error.code == pb.OUT_OF_ORDER_SEQUENCE, f"sequence 5 after 0..1: {error_name(r3.error)}, expected OUT_OF_ORDER_SEQUENCE")
    print(f"idempotent producer {ids.producer_id} epoch {ids.producer_epoch}: batch at {r1.base_offset}, "
          f"retry answered {r2.base_offset} and stored nothing, a sequence gap is OUT_OF_ORDER_SEQUENCE")

    # --- Damaged batches are refused, per partition --------------------------
    good = [Record(now_ms(), None, b"good")]
    cases = [
        ("flipped byte", "CORRUPT_BATCH"),
        ("record attributes 1", "CORRUPT_BATCH"),
        ("codec 3", "CORRUPT_BATCH"),
        ("truncated", "CORRUPT_BATCH"),
        ("control bit", "INVALID_REQUEST"),
    ]
    for what, want in cases:
        bad = damaged(codec.encode_batch([Record(now_ms(), b"k", b"this batch is damaged")]), what)
        try:
            codec.decode_batch(bad)
            check(what == "control bit", f"codec.py decoded the damaged batch ({what})")
        except codec.BatchError:
            pass
        before = [high_watermark(strand, topic, p) for p in range(n)]
        res = produce(strand, [(topic, 0, bad), (topic, 1, codec.encode_batch(good))])
        check(res[0].error.code == getattr(pb, want),
              f"damaged batch ({what}): answered {error_name(res[0].error)} {res[0].error.message!r}, expected {want}")
        check(not res[1].HasField("error"), f"the good batch next to a damaged one: {error_name(res[1].error)} {res[1].error.message}")
        after = [high_watermark(strand, topic, p) for p in range(n)]
        check(after[0] == before[0], f"damaged batch ({what}): partition 0 moved from {before[0]} to {after[0]}")
        check(after[1] == before[1] + 1, f"good batch: partition 1 moved from {before[1]} to {after[1]}")
        print(f"damaged batch ({what}) to partition 0: {want} ({res[0].error.message}); the good batch to partition 1 stored at {res[1].base_offset}")

    # Internal topics are written by the broker only.
    for internal in ("__consumer_offsets", f"__{args.topic_prefix}"):
        res = produce(strand, [(internal, 0, codec.encode_batch(good))])[0]
        check(res.error.code == pb.INVALID_TOPIC, f"a batch to {internal}: {error_name(res.error)}, expected INVALID_TOPIC")
        print(f"a batch to {internal}: INVALID_TOPIC ({res.error.message})")

    # A timestamp more than an hour ahead is INVALID_TIMESTAMP.
    future = codec.encode_batch([Record(now_ms() + 2 * 3600 * 1000, None, b"from the future")])
    res = produce(strand, [(topic, 0, future)])[0]
    check(res.error.code == pb.INVALID_TIMESTAMP, f"timestamp 2 h ahead: {error_name(res.error)}, expected INVALID_TIMESTAMP")
    print(f"a batch 2 h in the future: INVALID_TIMESTAMP ({res.error.message})")


if __name__ == "__main__":
    run(main)
