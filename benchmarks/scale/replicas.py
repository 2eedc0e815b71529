"""Verify throughput: one replica on its embedded stores, one and two replicas on one shared
PostgreSQL + Redis. Each replica is a real `idv serve` process; one client process drives
them round-robin with genuine NUAA bursts.

    python -m benchmarks.scale.replicas [--seconds 30] [--concurrency 4]

PostgreSQL and Redis: IDV_BENCH_POSTGRES_DSN / IDV_BENCH_REDIS_URL, else the local
defaults; a private schema and key prefix are used and removed afterwards.
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import numpy as np

from benchmarks.scale.results import machine, write_section
from idv.client import IdvClient

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("IDV_SHARED_DIR", REPO.parent / "shared"))
NUAA = SHARED / "testdata" / "nuaa"
SUBJECTS = [f"{i:04d}" for i in range(1, 10)]


def _id_number(seq: int) -> str:
    """A valid 18-digit resident ID number (GB 11643 check digit) for a synthetic person."""
    body = f"11010119800101{seq:03d}"
    weights = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights)) % 11]


ID_NUMBERS = [_id_number(i) for i in range(1, 10)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _id_ok(number: str) -> bool:
    from idv.identity import IdentityError, parse_id_number
    try:
        parse_id_number(number)
        return True
    except IdentityError:
        return False


def _burst(subject: str, count: int = 4) -> list[bytes]:
    frames = sorted((NUAA / "live" / subject).glob("*.jpg"))
    prefix = frames[0].stem.rpartition("_")[0]
    sequence = sorted((p for p in frames if p.stem.rpartition("_")[0] == prefix),
                      key=lambda p: int(p.stem.rpartition("_")[2]))
    return [p.read_bytes() for p in sequence[: count * 3 : 3]]


class Replica:
    def __init__(self, env: dict[str, str], data_dir: Path, replica_id: str):
        self.port = _free_port()
        full = {k: v for k, v in os.environ.items() if not k.startswith("IDV_")}
        full.update(env, IDV_PORT=str(self.port), IDV_DATA_DIR=str(data_dir), IDV_REPLICA_ID=replica_id,
                    IDV_METRICS_PORT="-1", IDV_LOG_LEVEL="WARNING")
        self._log = open(data_dir / f"replica-{replica_id}.log", "wb")
        self.process = subprocess.Popen([sys.executable, "-m", "idv.cli", "serve"], env=full, cwd=REPO,
                                        stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        with IdvClient(f"127.0.0.1:{self.port}", timeout=2, retries=0) as client:
            while True:
                try:
                    if client.health() == "SERVING":
                        return
                except grpc.RpcError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self._log.close()
                    tail = Path(self._log.name).read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"replica {replica_id} did not start:\n{tail}")
                time.sleep(0.2)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def drive(ports: list[int], seconds: float, concurrency: int, warmup: float) -> dict[str, object]:
    identities = [(n, s) for n, s in zip(ID_NUMBERS, SUBJECTS) if _id_ok(n)]
    bursts = {s: _burst(s) for _, s in identities}
    clients = [IdvClient(f"127.0.0.1:{p}", timeout=30, retries=0) for p in ports]
    order = itertools.count()
    latencies: list[float] = []
    outcomes: dict[str, int] = {}
    lock = threading.Lock()
    start_measure = time.monotonic() + warmup
    end = start_measure + seconds

    def worker() -> None:
        while time.monotonic() < end:
            i = next(order)
            number, subject = identities[i % len(identities)]
            client = clients[i % len(clients)]
            started = time.monotonic()
            try:
                outcome = client.verify(number, f"测试{subject}", bursts[subject]).reason
            except grpc.RpcError as error:
                outcome = error.code().name
            if started >= start_measure and time.monotonic() <= end:
                with lock:
                    latencies.append(time.monotonic() - started)
                    outcomes[outcome] = outcomes.get(outcome, 0) + 1

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in clients:
        c.close()
    lat = np.array(latencies) * 1000
    return {"verifies_per_second": round(len(latencies) / seconds, 2), "completed": len(latencies),
            "latency_ms_p50": round(float(np.percentile(lat, 50)), 1) if len(lat) else None,
            "latency_ms_p95": round(float(np.percentile(lat, 95)), 1) if len(lat) else None,
            "outcomes": outcomes}


def enrol_all(port: int) -> int:
    enrolled = 0
    with IdvClient(f"127.0.0.1:{port}", timeout=60, retries=0) as client:
        for number, subject in zip(ID_NUMBERS, SUBJECTS):
            if not _id_ok(number):
                continue
            photo = sorted((NUAA / "print" / subject).glob("*.jpg"))[0].read_bytes()
            client.enroll(number, f"测试{subject}", [photo])
            enrolled += 1
    return enrolled


def run(label: str, env: dict[str, str], replicas: int, args) -> dict[str, object]:
    data_dir = Path(tempfile.mkdtemp(prefix="idv-scale-"))
    nodes: list[Replica] = []
    try:
        for rid in "ab"[:replicas]:
            nodes.append(Replica(env, data_dir, rid))
        enrolled = enrol_all(nodes[0].port)
        load_before = os.getloadavg()[0]
        result = drive([n.port for n in nodes], args.seconds, args.concurrency, args.warmup)
        # The machine may be shared: other work in the run shows here, not in the throughput alone.
        result.update(replicas=replicas, identities=enrolled,
                      load_average_1min=[round(load_before, 2), round(os.getloadavg()[0], 2)])
        print(label, result, flush=True)
        return result
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--warmup", type=float, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    dsn = os.environ.get("IDV_BENCH_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
    url = os.environ.get("IDV_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
    tag = secrets.token_hex(4)
    schema, prefix = f"idv_bench_{tag}", f"idvbench:{tag}:"
    common = {"IDV_CHALLENGE_PASSIVE_ONLY_FOR": "check_in",  # passive CHECK_IN measured (issue 14)
              "IDV_CALLER_REQUESTS_PER_MINUTE": "1000000", "IDV_CALLER_DISTINCT_IDENTITIES_PER_HOUR": "1000000"}
    for name in ("IDV_MODEL_DIR", "IDV_MODEL_MANIFEST"):
        if os.environ.get(name):
            common[name] = os.environ[name]
    # Each run has its own keys (a fresh data_dir), so each gets its own schema and prefix.
    def shared(run: str) -> dict[str, str]:
        return {**common, "IDV_STORE": dsn, "IDV_POSTGRES_SCHEMA": f"{schema}_{run}", "IDV_REDIS_URL": url,
                "IDV_REDIS_PREFIX": f"{prefix}{run}:"}
    section: dict[str, object] = {
        "machine": machine(), "seconds": args.seconds, "concurrency": args.concurrency,
        "request": "Verify, CHECK_IN, 4 live NUAA frames, liveness on, default worker_threads=2 per replica",
        "note": "all replicas, PostgreSQL, Redis and the client share this machine's CPUs",
    }
    try:
        section["one_replica_sqlite_local_state"] = run("1 replica, SQLite + local state", common, 1, args)
        section["one_replica_postgres_redis"] = run("1 replica, PostgreSQL + Redis", shared("one"), 1, args)
        section["two_replicas_postgres_redis"] = run("2 replicas, PostgreSQL + Redis", shared("two"), 2, args)
    finally:
        import psycopg
        import redis
        with psycopg.connect(dsn, autocommit=True) as conn:
            for run_name in ("one", "two"):
                conn.execute(f"DROP SCHEMA IF EXISTS {schema}_{run_name} CASCADE")
        client = redis.Redis.from_url(url)
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()
    write_section("replicas", section)


if __name__ == "__main__":
    main()
