"""Strand with protobuf-native records, from the generated stubs alone.

Creates a topic, produces `Record` messages (keyed, explicit partition,
keyless, headers with a null value, a tombstone), checks where each went
(keyed ones against murmur2 computed here), fetches them back as decoded
records, replays from a timestamp, subscribes, and commits and fetches a
consumer-group offset as a standalone consumer. Exits 1 on any mismatch.

    python native.py [--addr 127.0.0.1:9292] [--topic-prefix NAME]
"""

from __future__ import annotations

import time

from common import (
    RPC_TIMEOUT, Failure, channel, check, create_topic, describe, deviation, error_name, grpc, parse_args,
    pb, reason, rpc, run, wait_for_leaders,
)
from codec import partition_for_key

PARTITIONS = 4


def rec(key=None, value=None, headers=(), partition=None, timestamp_ms=0) -> "pb.Record":
    """A request Record. None leaves an optional field absent (null)."""
    r = pb.Record(timestamp_ms=timestamp_ms)
    if key is not None:
        r.key = key
    if value is not None:
        r.value = value
    if partition is not None:
        r.partition = partition
    for k, v in headers:
        h = r.headers.add(key=k)
        if v is not None:
            h.value = v
    return r


def content(r: "pb.Record"):
    """What must survive the round trip: key, value, headers, with null distinct from empty."""
    return (
        r.key if r.HasField("key") else None,
        r.value if r.HasField("value") else None,
        [(h.key, h.value if h.HasField("value") else None) for h in r.headers],
    )


def show(b) -> str:
    return "null" if b is None else repr(b)


def fetch_all(strand, topic: str, partition: int, offset: int, high_watermark: int) -> list:
    """Fetch with RECORD_FORMAT_PROTOBUF from `offset` up to the high watermark,
    following next_offset. Checks the answers' own promises on the way."""
    out = []
    while offset < high_watermark:
        resp = strand.Fetch(
            pb.FetchRequest(
                partitions=[pb.FetchPartition(topic=topic, partition=partition, offset=offset)],
                record_format=pb.RECORD_FORMAT_PROTOBUF,
                max_wait_ms=0,
            ),
            timeout=RPC_TIMEOUT,
        )
        check(len(resp.partitions) == 1, f"Fetch answered {len(resp.partitions)} partitions for one asked")
        pd = resp.partitions[0]
        check(not pd.HasField("error"), f"Fetch {topic}/{partition}@{offset}: {error_name(pd.error)} {pd.error.message}")
        check(len(pd.records) == 0, f"Fetch with RECORD_FORMAT_PROTOBUF also filled `records` ({len(pd.records)} bytes)")
        check(pd.decoded_records, f"Fetch {topic}/{partition}@{offset} below the high watermark {high_watermark} answered no records (next_offset {pd.next_offset})")
        offsets = [r.offset for r in pd.decoded_records]
        check(offsets[0] == offset, f"Fetch {topic}/{partition}@{offset}: first decoded record has offset {offsets[0]}, expected {offset} (decoded_records start at the requested offset)")
        check(offsets == list(range(offsets[0], offsets[0] + len(offsets))), f"Fetch {topic}/{partition}: offsets not consecutive: {offsets}")
        check(pd.next_offset == offsets[-1] + 1, f"Fetch {topic}/{partition}: next_offset {pd.next_offset}, last record {offsets[-1]}")
        out.extend(pd.decoded_records)
        offset = pd.next_offset
    return out


def main() -> None:
    args = parse_args(__doc__)
    print(f"broker {args.addr}")
    ch = channel(args.addr)
    strand = rpc.StrandStub(ch)
    admin = rpc.AdminStub(ch)
    groups = rpc.GroupsStub(ch)

    topic = f"{args.topic_prefix}-native"
    n = create_topic(admin, topic, PARTITIONS)
    wait_for_leaders(strand, topic, n)

    # --- Produce protobuf-native records -----------------------------------
    pinned = n - 1
    sent = [
        # keyed, no partition: murmur2(key) % n
        rec(b"user-1", b"login"),
        rec(b"user-2", b"\x00\xff\x10 binary"),
        rec(b"order-42", b"created", headers=[("trace-id", b"abc"), ("retry", None), ("trace-id", b"dup"), ("", b"")]),
        rec(b"", b"empty key is a key"),
        rec(b"user-1", None),  # a tombstone: key, null value
        rec(b"user-2", b""),  # an empty (not null) value
        # explicit partition (overrides the key's hash)
        rec(b"pinned-key", b"pinned", partition=pinned),
        rec(None, b"keyless pinned", partition=pinned, headers=[("null-header", None)]),
        # keyless, no partition: all of them on one partition
        rec(None, b"keyless-1"),
        rec(None, b"keyless-2", headers=[("h", b"v")]),
        rec(None, None),
    ]
    t_before = int(time.time() * 1000)
    resp = strand.Produce(
        pb.ProduceRequest(acks=pb.ACKS_ALL, records=[pb.TopicRecords(topic=topic, records=sent)]),
        timeout=RPC_TIMEOUT,
    )
    check(len(resp.results) == 0, f"Produce with records only answered {len(resp.results)} batch results")
    check(len(resp.record_results) == len(sent), f"Produce: {len(resp.record_results)} record_results for {len(sent)} records")
    print(f"produced {len(sent)} records:")
    for r, res in zip(sent, resp.record_results):
        check(not res.HasField("error"), f"record {content(r)}: {error_name(res.error)} {res.error.message}")
        check(res.topic == topic, f"record_results topic {res.topic!r}")
        check(res.log_append_time_ms > 0, f"record_results log_append_time_ms {res.log_append_time_ms}")
        key = r.key if r.HasField("key") else None
        print(f"  key={show(key):14} value={show(r.value if r.HasField('value') else None):24} -> partition {res.partition} offset {res.offset}")

    where = {}  # (partition, offset) -> sent record
    for r, res in zip(sent, resp.record_results):
        where[(res.partition, res.offset)] = r
        if r.HasField("partition"):
            check(res.partition == r.partition, f"record with partition={r.partition} went to {res.partition}")
        elif r.HasField("key"):
            want = partition_for_key(r.key, n)
            check(res.partition == want, f"key {r.key!r}: broker chose partition {res.partition}, murmur2 says {want} of {n}")
    check(len(where) == len(sent), "two records got the same partition and offset")
    keyless = [res.partition for r, res in zip(sent, resp.record_results) if not r.HasField("key") and not r.HasField("partition")]
    check(len(set(keyless)) == 1, f"keyless records of one request went to several partitions: {keyless}")
    # Offsets per partition: consecutive, in request order.
    per_partition = {}
    for res in resp.record_results:
        per_partition.setdefault(res.partition, []).append(res.offset)
    for p, offs in per_partition.items():
        check(offs == list(range(offs[0], offs[0] + len(offs))), f"partition {p}: offsets {offs} not consecutive in request order")
    print(f"  keyed records on their murmur2 partitions; keyless ones together on partition {keyless[0]}")

    # --- Fetch them back as protobuf records --------------------------------
    hw = {}
    for p in range(n):
        lo = strand.ListOffsets(pb.ListOffsetsRequest(topic=topic, partition=p, latest=True), timeout=RPC_TIMEOUT)
        hw[p] = lo.high_watermark
        check(lo.offset == lo.high_watermark, f"ListOffsets latest {topic}/{p}: offset {lo.offset}, high watermark {lo.high_watermark}")
    fetched = {}
    for p in range(n):
        for r in fetch_all(strand, topic, p, 0, hw[p]):
            fetched[(p, r.offset)] = r
    for pos, r in where.items():
        check(pos in fetched, f"record sent to {pos} not fetched back")
        got = fetched[pos]
        check(content(got) == content(r), f"record at {pos}: fetched {content(got)}, sent {content(r)}")
        check(not got.HasField("partition"), f"record at {pos}: answer carries a partition field")
        # timestamp_ms 0 in the request means "now" at the broker.
        check(t_before - 60_000 <= got.timestamp_ms <= int(time.time() * 1000) + 60_000,
              f"record at {pos}: timestamp {got.timestamp_ms} is not 'now' (sent 0)")
    print(f"fetched all {len(where)} records back (RECORD_FORMAT_PROTOBUF from offset 0): keys, values, headers, nulls intact")

    # A fetch from the middle of a stored batch starts exactly there.
    p_multi, offs = max(per_partition.items(), key=lambda kv: len(kv[1]))
    if len(offs) >= 2:
        mid = offs[1]
        got = fetch_all(strand, topic, p_multi, mid, hw[p_multi])
        check(got[0].offset == mid, f"fetch from {mid}: first record {got[0].offset}")
        print(f"fetch from mid-batch offset {p_multi}@{mid}: answer starts at {got[0].offset}")

    # Past the high watermark: OFFSET_OUT_OF_RANGE with the valid range.
    resp = strand.Fetch(pb.FetchRequest(partitions=[pb.FetchPartition(topic=topic, partition=0, offset=hw[0] + 100)],
                                        record_format=pb.RECORD_FORMAT_PROTOBUF), timeout=RPC_TIMEOUT)
    e = resp.partitions[0].error
    check(e.code == pb.OFFSET_OUT_OF_RANGE and e.latest == hw[0],
          f"fetch past the high watermark: {error_name(e)} [{e.earliest}, {e.latest}], expected OFFSET_OUT_OF_RANGE [.., {hw[0]}]")
    print(f"fetch at {hw[0] + 100} on partition 0: OFFSET_OUT_OF_RANGE, valid [{e.earliest}, {e.latest}]")

    # --- Replay from a timestamp ------------------------------------------
    # Explicit timestamps a few seconds ahead of now (at most 1 h is allowed),
    # so they are above everything already in the partition.
    tp = 0
    base_ts = int(time.time() * 1000) + 5_000
    timed = [rec(f"t{i}".encode(), f"at +{10 * i} ms".encode(), partition=tp, timestamp_ms=base_ts + 10 * i) for i in range(5)]
    resp = strand.Produce(pb.ProduceRequest(records=[pb.TopicRecords(topic=topic, records=timed)]), timeout=RPC_TIMEOUT)
    for res in resp.record_results:
        check(not res.HasField("error"), f"timed record: {error_name(res.error)} {res.error.message}")
    timed_offsets = [res.offset for res in resp.record_results]
    lo = strand.ListOffsets(pb.ListOffsetsRequest(topic=topic, partition=tp, timestamp_ms=base_ts + 15), timeout=RPC_TIMEOUT)
    check(lo.offset == timed_offsets[2], f"ListOffsets timestamp_ms=T+15: offset {lo.offset}, expected {timed_offsets[2]} (the record at T+20)")
    replay = fetch_all(strand, topic, tp, lo.offset, lo.high_watermark)
    check([r.value for r in replay] == [r.value for r in timed[2:]], f"replay from T+15: {[r.value for r in replay]}")
    check([r.timestamp_ms for r in replay] == [base_ts + 10 * i for i in range(2, 5)], f"replay timestamps {[r.timestamp_ms for r in replay]}")
    past = strand.ListOffsets(pb.ListOffsetsRequest(topic=topic, partition=tp, timestamp_ms=base_ts + 1_000_000), timeout=RPC_TIMEOUT)
    check(past.offset == past.high_watermark, f"ListOffsets past every record: {past.offset}, high watermark {past.high_watermark}")
    early = strand.ListOffsets(pb.ListOffsetsRequest(topic=topic, partition=tp, earliest=True), timeout=RPC_TIMEOUT)
    try:
        none = strand.ListOffsets(pb.ListOffsetsRequest(topic=topic, partition=tp), timeout=RPC_TIMEOUT)
        raise Failure(f"ListOffsets with no spec answered {none}; the .proto says INVALID_REQUEST")
    except grpc.RpcError as e:
        check(reason(e) == "INVALID_REQUEST", f"ListOffsets with no spec: {describe(e)}, expected INVALID_REQUEST")
    check(early.offset == early.log_start_offset, f"ListOffsets earliest {early.offset} != log start {early.log_start_offset}")
    print(f"replay: ListOffsets(timestamp T+15) = {lo.offset}; fetched {len(replay)} records from there ({[r.value.decode() for r in replay]})")

    # --- Subscribe ----------------------------------------------------------
    sp = tp
    want = fetch_all(strand, topic, sp, 0, lo.high_watermark)
    stream = strand.Subscribe(pb.SubscribeRequest(topic=topic, partition=sp, offset=0, record_format=pb.RECORD_FORMAT_PROTOBUF),
                              timeout=RPC_TIMEOUT)
    got = []
    try:
        for msg in stream:
            check(not msg.HasField("error"), f"Subscribe: {error_name(msg.error)} {msg.error.message}")
            check(len(msg.records) == 0, "Subscribe with RECORD_FORMAT_PROTOBUF also filled `records`")
            got.extend(msg.decoded_records)
            if len(got) >= len(want):
                break
    finally:
        stream.cancel()
    check([r.offset for r in got[: len(want)]] == [r.offset for r in want], f"Subscribe offsets {[r.offset for r in got]}, Fetch {[r.offset for r in want]}")
    check(all(content(a) == content(b) for a, b in zip(got, want)), "Subscribe records differ from Fetch records")
    print(f"subscribe {topic}/{sp} from 0: {len(got)} records, same as Fetch")

    # Subscribe pushes records as they arrive: start at the end, then produce.
    end = strand.ListOffsets(pb.ListOffsetsRequest(topic=topic, partition=sp, latest=True), timeout=RPC_TIMEOUT).offset
    stream = strand.Subscribe(pb.SubscribeRequest(topic=topic, partition=sp, offset=end, record_format=pb.RECORD_FORMAT_PROTOBUF),
                              timeout=RPC_TIMEOUT)
    live = [rec(b"live", f"pushed {i}".encode(), partition=sp) for i in range(2)]
    t0 = time.monotonic()
    resp = strand.Produce(pb.ProduceRequest(records=[pb.TopicRecords(topic=topic, records=live)]), timeout=RPC_TIMEOUT)
    check(not any(r.HasField("error") for r in resp.record_results), f"live records: {resp}")
    pushed = []
    try:
        for msg in stream:
            pushed.extend(msg.decoded_records)
            if len(pushed) >= len(live):
                break
    finally:
        stream.cancel()
    check([r.offset for r in pushed] == [r.offset for r in resp.record_results] and [r.value for r in pushed] == [r.value for r in live],
          f"Subscribe from the end pushed {[(r.offset, r.value) for r in pushed]}")
    print(f"subscribe {topic}/{sp} from the end ({end}): the 2 records produced next were pushed within {time.monotonic() - t0:.2f}s")

    # Subscribe outside [log start, high watermark]: the stream fails with the reason.
    stream = strand.Subscribe(pb.SubscribeRequest(topic=topic, partition=sp, offset=end + 1000), timeout=RPC_TIMEOUT)
    try:
        msgs = list(stream)
        check(len(msgs) == 1 and msgs[0].error.code == pb.OFFSET_OUT_OF_RANGE,
              f"Subscribe at {end + 1000}: answered {msgs}, expected OFFSET_OUT_OF_RANGE")
        print(f"subscribe at {end + 1000}: PartitionData.error OFFSET_OUT_OF_RANGE")
    except grpc.RpcError as e:
        check(reason(e) == "OFFSET_OUT_OF_RANGE", f"Subscribe at {end + 1000}: {e.code().name} {reason(e)}, expected OFFSET_OUT_OF_RANGE")
        md = dict(e.trailing_metadata() or ())
        print(f"subscribe at {end + 1000}: the stream fails {e.code().name}, strand-reason {reason(e)}, "
              f"range [{md.get('strand-earliest', '?')}, {md.get('strand-latest', '?')}] in strand-earliest/strand-latest metadata")

    # --- Per-partition errors with protobuf records --------------------------
    bad = [
        rec(b"a", b"to a partition that does not exist", partition=n + 5),
        rec(None, b"fine", partition=0),
        rec(None, b"2 h ahead", partition=1, timestamp_ms=int(time.time() * 1000) + 2 * 3600 * 1000),
        rec(None, b"same partition as the one 2 h ahead", partition=1),
    ]
    hw1 = strand.ListOffsets(pb.ListOffsetsRequest(topic=topic, partition=1, latest=True), timeout=RPC_TIMEOUT).offset
    resp = strand.Produce(pb.ProduceRequest(records=[pb.TopicRecords(topic=topic, records=bad)]), timeout=RPC_TIMEOUT)
    codes = [error_name(r.error) if r.HasField("error") else "ok" for r in resp.record_results]
    check(codes == ["UNKNOWN_PARTITION", "ok", "INVALID_TIMESTAMP", "INVALID_TIMESTAMP"],
          f"records to a missing partition, a good one, two in a partition with a timestamp 2 h ahead: {codes}")
    check(strand.ListOffsets(pb.ListOffsetsRequest(topic=topic, partition=1, latest=True), timeout=RPC_TIMEOUT).offset == hw1,
          "a refused partition's records were stored")
    print(f"per-record results of a mixed request: {codes} (the refused partition stored nothing)")
    internal = f"__{args.topic_prefix}"
    resp = strand.Produce(pb.ProduceRequest(records=[pb.TopicRecords(topic=internal, records=[rec(None, b"x", partition=0)])]),
                          timeout=RPC_TIMEOUT)
    e = resp.record_results[0].error
    if e.code == pb.INVALID_TOPIC:
        print(f"records to the internal name {internal}: INVALID_TOPIC")
    else:
        # ProduceRequest.records: "the same validation ... as a producer's batch";
        # a batch to a `__` topic is INVALID_TOPIC (docs/FORMAT.md, "What the broker
        # checks"; raw.py checks it), whether or not such a topic exists.
        deviation(f"protobuf records to the internal name {internal} answered {error_name(e)} ({e.message!r}); "
                  f"a raw batch to it is INVALID_TOPIC, and records promise the same validation")

    # --- A group offset, as a standalone consumer ---------------------------
    group = f"{args.topic_prefix}-native-group"
    deadline = time.monotonic() + 15
    while True:
        try:
            coord = groups.FindCoordinator(pb.FindCoordinatorRequest(group=group), timeout=RPC_TIMEOUT)
            break
        except grpc.RpcError as e:
            if reason(e) not in ("NOT_COORDINATOR", "NOT_LEADER") or time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    print(f"group {group}: coordinator node {coord.node_id} at {coord.addr}")
    check(coord.addr, "FindCoordinator answered no address")
    gch = ch if coord.addr == args.addr else channel(coord.addr)
    cgroups = rpc.GroupsStub(gch)
    commit_at = want[-1].offset + 1
    c = cgroups.CommitOffsets(
        pb.CommitOffsetsRequest(group=group, member_id="", member_epoch=-1,
                                offsets=[pb.OffsetCommit(topic=topic, partition=sp, offset=commit_at, metadata="python")]),
        timeout=RPC_TIMEOUT,
    )
    check([(o.topic, o.partition, o.offset) for o in c.committed] == [(topic, sp, commit_at)], f"CommitOffsets answered {c}")
    f = cgroups.FetchOffsets(pb.FetchOffsetsRequest(group=group, partitions=[pb.TopicPartitions(topic=topic, partitions=[sp])]),
                             timeout=RPC_TIMEOUT)
    check(len(f.offsets) == 1 and (f.offsets[0].topic, f.offsets[0].partition, f.offsets[0].offset) == (topic, sp, commit_at),
          f"FetchOffsets after committing {commit_at}: {f}")
    if f.offsets[0].metadata != "python":
        # OffsetCommit.metadata: "Free text stored with the offset."
        deviation(f"committed metadata 'python' with offset {commit_at}; CommitOffsets answered {c.committed[0].metadata!r} and "
                  f"FetchOffsets {f.offsets[0].metadata!r} (OffsetCommit.metadata is 'free text stored with the offset')")
    # A commit below the committed offset leaves it unchanged.
    c2 = cgroups.CommitOffsets(
        pb.CommitOffsetsRequest(group=group, member_id="", member_epoch=-1,
                                offsets=[pb.OffsetCommit(topic=topic, partition=sp, offset=1)]),
        timeout=RPC_TIMEOUT,
    )
    check([o.offset for o in c2.committed] == [commit_at], f"a lower commit moved the offset: {c2}")
    f_all = cgroups.FetchOffsets(pb.FetchOffsetsRequest(group=group), timeout=RPC_TIMEOUT)
    check([(o.topic, o.partition, o.offset) for o in f_all.offsets] == [(topic, sp, commit_at)], f"FetchOffsets (all) {f_all}")
    print(f"committed {topic}/{sp} = {commit_at} (member_id '', epoch -1) and read it back; a lower commit left it at {commit_at}")

    # A standalone commit is refused with FENCED while the group has members.
    joined = cgroups.Heartbeat(pb.GroupHeartbeatRequest(group=group, member_epoch=0, topics=[topic], session_timeout_ms=10_000,
                                                        client_id="native.py"), timeout=RPC_TIMEOUT)
    check(joined.member_id and joined.member_epoch > 0, f"Heartbeat (join): {joined}")
    try:
        try:
            cgroups.CommitOffsets(pb.CommitOffsetsRequest(group=group, member_id="", member_epoch=-1,
                                                          offsets=[pb.OffsetCommit(topic=topic, partition=sp, offset=commit_at + 1)]),
                                  timeout=RPC_TIMEOUT)
            raise Failure("a standalone commit while the group has a member was accepted; the .proto says FENCED")
        except grpc.RpcError as e:
            check(reason(e) == "FENCED", f"standalone commit with a member in the group: {describe(e)}, expected FENCED")
    finally:
        cgroups.Heartbeat(pb.GroupHeartbeatRequest(group=group, member_id=joined.member_id, member_epoch=-1), timeout=RPC_TIMEOUT)
    c3 = cgroups.CommitOffsets(pb.CommitOffsetsRequest(group=group, member_id="", member_epoch=-1,
                                                       offsets=[pb.OffsetCommit(topic=topic, partition=sp, offset=commit_at + 1)]),
                               timeout=RPC_TIMEOUT)
    check([o.offset for o in c3.committed] == [commit_at + 1], f"standalone commit after the member left: {c3}")
    print(f"with member {joined.member_id} (epoch {joined.member_epoch}) in the group a standalone commit is FENCED; "
          f"after it left (epoch -1), committing {commit_at + 1} works again")


if __name__ == "__main__":
    run(main)
