"""Shared by the example scripts: the generated stubs, the broker address,
error reasons, and a check() that fails loudly."""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
GEN = os.path.join(HERE, "gen")
if not os.path.exists(os.path.join(GEN, "strand_pb2.py")):
    sys.exit(
        "generated stubs missing: run\n"
        f"  python -m grpc_tools.protoc -I ../../proto/proto --python_out=gen --grpc_python_out=gen strand.proto\n"
        f"in {HERE} (or use run.sh)"
    )
sys.path.insert(0, GEN)  # strand_pb2_grpc imports strand_pb2 as a top-level module

import grpc  # noqa: E402
import strand_pb2 as pb  # noqa: E402
import strand_pb2_grpc as rpc  # noqa: E402

DEFAULT_ADDR = "127.0.0.1:9292"
RPC_TIMEOUT = 10.0  # seconds, every unary call


class Failure(Exception):
    """A check failed: the broker did not do what the .proto promises."""


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


def deviation(what: str) -> None:
    """The broker differs from what the .proto (or docs/FORMAT.md) says: a
    failure, like any other."""
    raise Failure(f"the broker differs from the .proto/docs: {what}")


def parse_args(description: str) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--addr",
        default=os.environ.get("STRAND_ADDR", DEFAULT_ADDR),
        help=f"broker host:port (env STRAND_ADDR, default {DEFAULT_ADDR})",
    )
    p.add_argument(
        "--topic-prefix",
        default=os.environ.get("STRAND_TOPIC_PREFIX", f"py-{int(time.time())}-{os.getpid()}"),
        help="prefix of the topics this script creates (env STRAND_TOPIC_PREFIX)",
    )
    return p.parse_args()


def channel(addr: str) -> grpc.Channel:
    # Plaintext: the broker's client port has no TLS.
    return grpc.insecure_channel(addr)


def reason(err: grpc.RpcError) -> str:
    """The `strand-reason` metadata of a whole-request failure (an ErrorCode name)."""
    for k, v in err.trailing_metadata() or ():
        if k == "strand-reason":
            return v
    return ""


def describe(err: grpc.RpcError) -> str:
    return f"{err.code().name} reason={reason(err) or '-'} details={err.details()!r}"


def error_name(e: "pb.Error") -> str:
    return pb.ErrorCode.Name(e.code)


def create_topic(admin: "rpc.AdminStub", name: str, partitions: int) -> int:
    """Creates the topic (tolerating TOPIC_ALREADY_EXISTS); returns its partition count."""
    try:
        resp = admin.CreateTopic(
            pb.CreateTopicRequest(name=name, partitions=partitions, replication_factor=1),
            timeout=RPC_TIMEOUT,
        )
        print(f"created topic {name}: {len(resp.topic.partitions)} partitions, id {resp.topic.topic_id}")
        return len(resp.topic.partitions)
    except grpc.RpcError as e:
        if reason(e) != "TOPIC_ALREADY_EXISTS":
            raise
        d = admin.DescribeTopic(pb.DescribeTopicRequest(name=name), timeout=RPC_TIMEOUT)
        print(f"topic {name} already exists ({describe(e)}): {len(d.partitions)} partitions, reusing it")
        return len(d.partitions)


def wait_for_leaders(strand: "rpc.StrandStub", topic: str, partitions: int, deadline_s: float = 15.0) -> None:
    """Waits until Metadata names a leader for every partition of the topic."""
    deadline = time.monotonic() + deadline_s
    while True:
        md = strand.Metadata(pb.MetadataRequest(topics=[topic]), timeout=RPC_TIMEOUT)
        t = [t for t in md.topics if t.name == topic]
        if t and not t[0].HasField("error") and len(t[0].partitions) == partitions and all(p.leader for p in t[0].partitions):
            return
        if time.monotonic() > deadline:
            raise Failure(f"topic {topic}: no leader for every partition after {deadline_s}s: {md}")
        time.sleep(0.05)


def run(main) -> None:
    """Runs main(args), turning failures into a clear message and exit status 1."""
    name = os.path.basename(sys.argv[0])
    try:
        main()
    except Failure as e:
        print(f"{name}: FAIL: {e}", file=sys.stderr)
        sys.exit(1)
    except grpc.RpcError as e:
        traceback.print_exc()
        print(f"{name}: FAIL: unexpected gRPC error: {describe(e)}", file=sys.stderr)
        sys.exit(1)
    print(f"{name}: OK")
