"""The issue-16 attacks at full size against a node with its DEFAULT limits, with genuine goodput measured.

Starts `server.py` on a free port (throwaway data dir, two callers: a genuine terminal and
a leaked key the attacker uses), enrols one subject, then runs each attack for
`--seconds` while a genuine client sends Verify (expected PASS) and Health in a loop.
Reports, per attack: the genuine client's answers, failures and slowest latencies, the
node's RSS and fd peaks over its baseline, and the node's refusal counters. Writes
benchmarks/results/hostile_peers.json (or --out). The CI suite runs short versions
(tests/security/test_hostile_peers.py).

    .venv/bin/python benchmarks/security/hostile_peers.py [--seconds 60] [--only half_open,...]

Attacks (from issue 16): half_open (12+ streams per connection with HEADERS and no body, 20
connections), partial_bodies (20 connections x 32 streams, each sending 90 % of a 12 MiB
message), scan_bomb (an 8-frame request of progressive-JPEG scan bombs every 2 s), idle
(`--idle` connections that send nothing or only the HTTP/2 preface; the default 5000 keeps
within a 20,000 fd ulimit with the client's own sockets).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

import grpc  # noqa: E402

from idv.client import IdvClient  # noqa: E402
from idv.security.callers import add_caller  # noqa: E402
from idv.v1 import verification_pb2 as pb  # noqa: E402
from idv.v1 import verification_pb2_grpc as pb_grpc  # noqa: E402
from tests.conftest import ID_SUBJECT_1, ID_UNKNOWN, SHARED, nuaa_frames, nuaa_sequences  # noqa: E402
from tests.security.h2_attacks import (  # noqa: E402
    RawConnection,
    idle_connections,
    partial_body,
    process_fds,
    process_rss_bytes,
    scan_bomb,
)
from tests.security.test_hostile_peers import NAME_1, GenuineClient, HostileNode  # noqa: E402
from tests.test_operations import ServerProcess  # noqa: E402


def _sources(count: int) -> list[str]:
    return [f"127.0.1.{i + 1}" for i in range(count)]


def half_open(node: HostileNode, seconds: float, _: argparse.Namespace) -> dict:
    connections = [RawConnection("127.0.0.1", node.port, source=s) for s in _sources(20)]
    key = (("x-api-key", node.attacker_key),)
    opened = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for i, connection in enumerate(connections):
            while not connection.closed and connection.open_streams() < 12:
                if connection.open_stream(metadata=key if i % 2 else ()) is None:
                    break
                opened += 1
        time.sleep(0.2)
    for connection in connections:
        connection.close()
    return {"streams_opened": opened}


def partial_bodies(node: HostileNode, seconds: float, _: argparse.Namespace) -> dict:
    connections = [RawConnection("127.0.0.1", node.port, source=s) for s in _sources(20)]
    key = (("x-api-key", node.attacker_key),)
    body = partial_body(12 * 1024 * 1024)  # one object shared by every stream
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for connection in connections:
            while not connection.closed and connection.open_streams() < 32:
                if connection.open_stream(metadata=key, body=body) is None:
                    break
        time.sleep(0.2)
    sent = sum(c.bytes_sent() for c in connections)
    for connection in connections:
        connection.close()
    return {"attack_bytes_sent": sent}


def bomb(node: HostileNode, seconds: float, _: argparse.Namespace) -> dict:
    stub = pb_grpc.IdentityVerificationStub(grpc.insecure_channel(f"127.0.0.1:{node.port}"))
    request = pb.VerifyRequest(id_number=ID_UNKNOWN, name=NAME_1, purpose=pb.CHECK_IN, frames=[scan_bomb()] * 8)
    codes: dict[str, int] = {}
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            stub.Verify(request, metadata=(("x-api-key", node.attacker_key),), timeout=10)
            codes["OK"] = codes.get("OK", 0) + 1
        except grpc.RpcError as error:
            codes[error.code().name] = codes.get(error.code().name, 0) + 1
        time.sleep(2.0)
    return {"bomb_requests": codes}


def idle(node: HostileNode, seconds: float, args: argparse.Namespace) -> dict:
    each = args.idle // 8  # 4 addresses, half with the HTTP/2 preface, half silent
    sockets = []
    for source in _sources(4):
        sockets += idle_connections("127.0.0.1", node.port, each, source=source, preface=True)
        sockets += idle_connections("127.0.0.1", node.port, each, source=source, preface=False)
    time.sleep(seconds)
    for sock in sockets:
        sock.close()
    return {"idle_connections_opened": len(sockets)}


ATTACKS = {"half_open": half_open, "partial_bodies": partial_bodies, "scan_bomb": bomb, "idle": idle}


def run(args: argparse.Namespace) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix="idv-hostile-"))
    (tmp / "data").mkdir()
    genuine_key = add_caller(tmp / "data" / "callers.toml", "genuine-terminal", ["verify:*", "enroll"])
    attacker_key = add_caller(tmp / "data" / "callers.toml", "leaked-key", ["verify:check_in"])
    model_dir = Path(os.environ.get("IDV_MODEL_DIR", Path.home() / ".cache" / "idv" / "models"))
    server = ServerProcess(tmp, model_dir, IDV_CALLER_REQUESTS_PER_MINUTE="100000")
    report: dict = {"seconds_per_attack": args.seconds, "attacks": {}}
    try:
        server.wait_serving()
        testdata = SHARED / "testdata"
        burst = [p.read_bytes() for p in next(iter(nuaa_sequences(testdata, "live", "0001").values()))[:15:3]]
        with IdvClient(f"127.0.0.1:{server.port}", timeout=30, api_key=genuine_key, retries=0) as client:
            client.enroll(ID_SUBJECT_1, NAME_1, [nuaa_frames(testdata, "print", "0001")[0].read_bytes()])
        node = HostileNode(server, genuine_key, attacker_key, burst)
        for name in args.only:
            with GenuineClient(node) as quiet:  # goodput without an attack, for comparison
                time.sleep(min(args.seconds, 10))
            rss, fds = process_rss_bytes(node.pid), process_fds(node.pid)
            peaks = {"rss": rss, "fds": fds}
            with GenuineClient(node) as genuine:
                import threading

                stop = threading.Event()

                def sample() -> None:
                    while not stop.is_set():
                        peaks["rss"] = max(peaks["rss"], process_rss_bytes(node.pid))
                        peaks["fds"] = max(peaks["fds"], process_fds(node.pid))
                        time.sleep(0.2)

                sampler = threading.Thread(target=sample, daemon=True)
                sampler.start()
                started = time.monotonic()
                detail = ATTACKS[name](node, args.seconds, args)
                elapsed = time.monotonic() - started
                stop.set()
                sampler.join()
            report["attacks"][name] = {
                **detail,
                "genuine_verify_per_s_quiet": round(len(quiet.verdicts) / min(args.seconds, 10), 2),
                "genuine_verify_per_s_attacked": round(len(genuine.verdicts) / elapsed, 2),
                "genuine_verdicts": sorted(set(genuine.verdicts)), "genuine_failures": genuine.failures[:20],
                "genuine_slowest_verify_s": round(genuine.slowest_verify, 3),
                "genuine_slowest_health_s": round(genuine.slowest_health, 3),
                "rss_baseline_mib": rss >> 20, "rss_peak_over_baseline_mib": (peaks["rss"] - rss) >> 20,
                "fds_baseline": fds, "fds_peak_over_baseline": peaks["fds"] - fds,
            }
            print(name, json.dumps(report["attacks"][name]), flush=True)
        body = __import__("urllib.request").request.urlopen(
            f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
        report["refusal_counters"] = [line for line in body.splitlines()
                                      if line.startswith(("idv_refused_before_handler_total", "idv_rejected_total"))]
    finally:
        server.stop()
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--idle", type=int, default=5000)
    parser.add_argument("--only", type=lambda v: v.split(","), default=list(ATTACKS))
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "hostile_peers.json")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    report = run(args)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
