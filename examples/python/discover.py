"""What a client can learn from the broker itself: gRPC server reflection
(v1alpha through grpcio-reflection's descriptor database, v1 through a raw
stream) and the standard health service.

Lists the services, resolves strand.v1.Record and the Strand service through
reflection, calls Strand/Metadata with message classes built from reflection
alone (no generated stubs), and checks grpc.health.v1.Health/Check. Exits 1
on any mismatch.

    python discover.py [--addr 127.0.0.1:9292]
    python discover.py --wait SECONDS [--pid PID]   # poll health until SERVING
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.message_factory import GetMessageClass
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from common import DEFAULT_ADDR, RPC_TIMEOUT, Failure, check, pb, run

WANTED_SERVICES = [
    "strand.v1.Strand",
    "strand.v1.Admin",
    "strand.v1.Groups",
    "strand.v1.Peer",
    "grpc.health.v1.Health",
]


def health_status(ch: grpc.Channel, service: str) -> str:
    resp = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=service), timeout=RPC_TIMEOUT)
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def wait_serving(addr: str, seconds: float, pid: int | None) -> int:
    """Polls Health/Check("") until SERVING, the deadline, or the broker's exit."""
    deadline = time.monotonic() + seconds
    ch = grpc.insecure_channel(addr)
    last = "no answer yet"
    while time.monotonic() < deadline:
        if pid is not None:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                print(f"broker (pid {pid}) exited before it was SERVING", file=sys.stderr)
                return 1
        try:
            status = health_status(ch, "")
            if status == "SERVING":
                return 0
            last = status
        except grpc.RpcError as e:
            last = f"{e.code().name}: {e.details()}"
        time.sleep(0.05)
    print(f"broker at {addr} not SERVING after {seconds}s (last: {last})", file=sys.stderr)
    return 1


def reflection_v1_list(ch: grpc.Channel) -> list:
    """grpc.reflection.v1.ServerReflection/ServerReflectionInfo, list_services.
    v1 and v1alpha messages are identical on the wire, so grpcio-reflection's
    v1alpha classes serve for both."""
    call = ch.stream_stream(
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
        response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
    )
    answers = list(call(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=RPC_TIMEOUT))
    check(len(answers) == 1, f"reflection v1: {len(answers)} answers to one request")
    check(answers[0].WhichOneof("message_response") == "list_services_response", f"reflection v1 answered {answers[0]}")
    return [s.name for s in answers[0].list_services_response.service]


def main_discover(addr: str) -> None:
    print(f"broker {addr}")
    ch = grpc.insecure_channel(addr)

    # --- Reflection: list services (v1alpha and v1) -------------------------
    db = ProtoReflectionDescriptorDatabase(ch)
    services = sorted(db.get_services())
    print("services (reflection v1alpha):")
    for s in services:
        print(f"  {s}")
    for s in WANTED_SERVICES:
        check(s in services, f"reflection v1alpha does not list {s}: {services}")
    v1 = sorted(reflection_v1_list(ch))
    # Each reflection version lists itself (tonic-reflection's way); the rest must agree.
    def app(names):
        return [s for s in names if not s.startswith("grpc.reflection.")]
    check(app(v1) == app(services), f"reflection v1 lists {v1}, v1alpha {services}")
    print(f"reflection v1 lists the same services ({', '.join(s for s in v1 if s.startswith('grpc.reflection.'))} for itself)")

    # --- Resolve types through reflection -----------------------------------
    pool = descriptor_pool.DescriptorPool(db)
    record = pool.FindMessageTypeByName("strand.v1.Record")
    fields = [(f.name, f.number, f.type, f.has_presence) for f in record.fields]
    generated = [(f.name, f.number, f.type, f.has_presence) for f in pb.Record.DESCRIPTOR.fields]
    check(fields == generated, f"strand.v1.Record via reflection {fields} != generated stubs {generated}")
    print("strand.v1.Record via reflection: " + ", ".join(f"{n}={num}{'?' if p else ''}" for n, num, _, p in fields)
          + " (? = optional; same as the generated stubs)")
    svc = pool.FindServiceByName("strand.v1.Strand")
    methods = {m.name: m for m in svc.methods}
    check(set(methods) == {m.name for m in pb.DESCRIPTOR.services_by_name["Strand"].methods},
          f"strand.v1.Strand methods via reflection: {sorted(methods)}")
    print(f"strand.v1.Strand methods: {', '.join(methods)}")

    # --- A call with reflection-built classes only --------------------------
    m = methods["Metadata"]
    Req, Resp = GetMessageClass(m.input_type), GetMessageClass(m.output_type)
    call = ch.unary_unary(f"/{svc.full_name}/{m.name}", request_serializer=Req.SerializeToString,
                          response_deserializer=Resp.FromString)
    md = call(Req(), timeout=RPC_TIMEOUT)
    check(md.cluster_id and len(md.brokers) >= 1, f"Metadata via reflection-built classes: {md}")
    print(f"Strand/Metadata with reflection-built classes: cluster {md.cluster_id}, "
          f"brokers {[f'{b.node_id}@{b.addr}' for b in md.brokers]}, {len(md.topics)} topics")

    # --- Health ---------------------------------------------------------------
    for service in ("", "strand.v1.Strand"):
        status = health_status(ch, service)
        check(status == "SERVING", f"Health/Check({service!r}) = {status}, expected SERVING")
        print(f"grpc.health.v1.Health/Check({service!r}) = {status}")
    try:
        status = health_status(ch, "no.such.Service")
        raise Failure(f"Health/Check('no.such.Service') = {status}; the health protocol answers NOT_FOUND for an unknown service")
    except grpc.RpcError as e:
        check(e.code() == grpc.StatusCode.NOT_FOUND, f"Health/Check('no.such.Service'): {e.code().name}, expected NOT_FOUND")
        print("grpc.health.v1.Health/Check('no.such.Service') = NOT_FOUND")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", default=os.environ.get("STRAND_ADDR", DEFAULT_ADDR))
    p.add_argument("--wait", type=float, metavar="SECONDS", help="only poll health until SERVING")
    p.add_argument("--pid", type=int, help="with --wait: give up if this process exits")
    args = p.parse_args()
    if args.wait is not None:
        sys.exit(wait_serving(args.addr, args.wait, args.pid))
    run(lambda: main_discover(args.addr))


if __name__ == "__main__":
    main()
