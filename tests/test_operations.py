"""An operator's first day: a real server process, metrics, JSON logs, drain on SIGTERM, config checks."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from idv.client import IdvClient
from tests.conftest import ID_SUBJECT_1, REPO, nuaa_frames, nuaa_sequences


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    def __init__(self, tmp_path: Path, model_dir: Path, **env: str):
        self.port = _free_port()
        self.metrics_port = _free_port()
        self.log = tmp_path / f"server-{self.port}.log"
        environment = {**os.environ, "IDV_DATA_DIR": str(tmp_path / "data"), "IDV_MODEL_DIR": str(model_dir),
                       "IDV_METRICS_PORT": str(self.metrics_port), "IDV_GRACE_SECONDS": "5",
                       # These tests send passive CHECK_IN bursts: allowed explicitly (issue 14 default: a challenge).
                       "IDV_CHALLENGE_PASSIVE_ONLY_FOR": "check_in", **env}
        self._log_file = self.log.open("wb")
        self.process = subprocess.Popen([sys.executable, str(REPO / "server.py"), "--port", str(self.port)],
                                        stdout=self._log_file, stderr=subprocess.STDOUT, env=environment)

    def wait_serving(self, timeout: float = 60.0) -> None:
        with IdvClient(f"127.0.0.1:{self.port}", timeout=2) as client:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise AssertionError(f"server exited: {self.log.read_text()}")
                try:
                    if client.health() == "SERVING":
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.1)
        raise AssertionError("server did not become SERVING")

    def log_records(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.startswith("{")]

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=30)
        self._log_file.close()
        return code


@pytest.fixture()
def server(tmp_path, model_dir):
    process = ServerProcess(tmp_path, model_dir)
    process.wait_serving()
    yield process
    process.stop()


def test_logs_are_json_lines_with_cold_start_and_decisions_without_payload(server, testdata) -> None:
    with IdvClient(f"127.0.0.1:{server.port}") as client:
        client.enroll(ID_SUBJECT_1, "张三", [nuaa_frames(testdata, "print", "0001")[0].read_bytes()])
        frames = [p.read_bytes() for p in next(iter(nuaa_sequences(testdata, "live", "0001").values()))[:9:3]]
        result = client.verify(ID_SUBJECT_1, "张三", frames)
    time.sleep(0.2)
    records = server.log_records()
    serving = [r for r in records if r["msg"] == "serving"]
    assert serving and serving[0]["seconds"] > 0 and "recognizer" in serving[0]["fingerprints"]
    decisions = [r for r in records if r["msg"] == "decision"]
    assert decisions[-1]["request_id"] == result.request_id
    assert {"caller", "purpose", "verdict", "reason", "timings_ms"} <= set(decisions[-1])
    text = server.log.read_text()
    assert ID_SUBJECT_1 not in text and "张三" not in text


def test_metrics_endpoint_counts_requests_without_identities(server, testdata) -> None:
    with IdvClient(f"127.0.0.1:{server.port}") as client:
        frames = [p.read_bytes() for p in next(iter(nuaa_sequences(testdata, "live", "0001").values()))[:9:3]]
        client.verify(ID_SUBJECT_1, "张三", frames)
    body = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
    assert 'idv_verdicts_total{purpose="CHECK_IN",reason="NOT_VERIFIED",verdict="FAIL"} 1.0' in body
    assert 'idv_requests_total{code="OK",reason="",rpc="Verify"} 1.0' in body
    assert "idv_stage_seconds_bucket" in body and 'stage="detect"' in body
    assert "idv_models_info" in body and "idv_serving 1.0" in body
    assert ID_SUBJECT_1 not in body and "张三" not in body


def test_sigterm_drains_in_flight_calls_then_exits_zero(server, testdata) -> None:
    frames = [p.read_bytes() for p in next(iter(nuaa_sequences(testdata, "live", "0001").values()))[:24:3]]
    results: list[str] = []

    def call() -> None:
        with IdvClient(f"127.0.0.1:{server.port}", timeout=30, retries=0) as client:
            try:
                results.append(client.verify(ID_SUBJECT_1, "张三", frames).verdict)
            except grpc.RpcError as error:
                results.append(error.code().name)

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(0.15)
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    for thread in threads:
        thread.join(timeout=30)
    code = server.process.wait(timeout=30)
    assert code == 0
    assert time.monotonic() - started < 5 + 3
    assert results.count("FAIL") >= 1, results  # in-flight work finished with a verdict
    assert "stopped" in [r["msg"] for r in server.log_records()]


def test_second_instance_on_the_same_port_exits_non_zero(server, tmp_path, model_dir) -> None:
    clash = subprocess.run([sys.executable, str(REPO / "server.py"), "--port", str(server.port)],
                           env={**os.environ, "IDV_DATA_DIR": str(tmp_path / "other"), "IDV_MODEL_DIR": str(model_dir),
                                "IDV_METRICS_PORT": "-1"},
                           capture_output=True, text=True, timeout=60)
    assert clash.returncode != 0
    assert "cannot listen" in clash.stderr


def test_missing_model_refuses_to_serve_with_a_clear_message(tmp_path) -> None:
    result = subprocess.run([sys.executable, str(REPO / "server.py"), "--port", str(_free_port())],
                            env={**os.environ, "IDV_DATA_DIR": str(tmp_path / "d"), "IDV_MODEL_DIR": str(tmp_path / "none"),
                                 "IDV_METRICS_PORT": "-1"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "refusing to serve" in result.stderr and "idv models pull" in result.stderr


def test_health_is_answered_while_the_node_is_saturated(tmp_path, model_dir, testdata) -> None:
    process = ServerProcess(tmp_path, model_dir, IDV_MAX_CONCURRENT_RPCS="2", IDV_WORKER_THREADS="1")
    try:
        process.wait_serving()
        frames = [p.read_bytes() for p in next(iter(nuaa_sequences(testdata, "live", "0001").values()))[:24:3]]
        stop = threading.Event()
        codes: list[str] = []

        def hammer() -> None:
            with IdvClient(f"127.0.0.1:{process.port}", timeout=30, retries=0) as client:
                while not stop.is_set():
                    try:
                        client.verify(ID_SUBJECT_1, "张三", frames)
                        codes.append("OK")
                    except grpc.RpcError as error:
                        codes.append(error.code().name)

        workers = [threading.Thread(target=hammer) for _ in range(6)]
        for worker in workers:
            worker.start()
        time.sleep(1.0)
        channel = grpc.insecure_channel(f"127.0.0.1:{process.port}")
        health = health_pb2_grpc.HealthStub(channel)
        for _ in range(5):
            started = time.monotonic()
            status = health.Check(health_pb2.HealthCheckRequest(service="idv.v1.IdentityVerification"), timeout=5)
            assert status.status == health_pb2.HealthCheckResponse.SERVING
            assert time.monotonic() - started < 1.0
        stop.set()
        for worker in workers:
            worker.join(timeout=30)
        assert "RESOURCE_EXHAUSTED" in codes  # excess load was shed, not queued without bound
    finally:
        process.stop()


def test_config_show_masks_secrets_and_production_refuses_unsafe_settings(tmp_path) -> None:
    cli = [sys.executable, "-m", "idv.cli", "config", "show"]
    shown = subprocess.run(cli, env={**os.environ, "IDV_STORE": "postgresql://idv:s3cret@db.internal/idv"},
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0 and "s3cret" not in shown.stdout and "db.internal" in shown.stdout
    config = tmp_path / "idv.toml"
    config.write_text('mode = "production"\nreflection = true\nlog_level = "DEBUG"\n')
    refused = subprocess.run([*cli, "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0
    for problem in ("reflection", "DEBUG", "mutual TLS", "plaintext"):
        assert problem in refused.stderr
    config.write_text("port = 'fifty'\n")
    bad = subprocess.run([*cli, "--config", str(config)], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "setting port" in bad.stderr
