"""Reload without restart (SIGHUP on a real server process): callers and TLS certificates; bad files refused
and named; secrets masked; malformed keys and config files named at start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import grpc
import pytest

from idv.client import IdvClient, TlsConfig
from idv.config import load_settings, mask_dsn, masked
from idv.security.callers import add_caller
from idv.security.devca import make_dev_pki
from tests.conftest import ID_UNKNOWN, REPO, nuaa_sequences
from tests.servers import free_port


class TlsServer:
    def __init__(self, tmp_path: Path, model_dir: Path, **env: str):
        self.port = free_port()
        self.log = tmp_path / "server.log"
        self._log_file = self.log.open("wb")
        environment = {**os.environ, "IDV_DATA_DIR": str(tmp_path / "data"), "IDV_MODEL_DIR": str(model_dir),
                       "IDV_METRICS_PORT": "-1", "IDV_GRACE_SECONDS": "5", "IDV_RELOAD_WATCH_SECONDS": "0", **env}
        self.process = subprocess.Popen([sys.executable, str(REPO / "server.py"), "--port", str(self.port)],
                                        stdout=self._log_file, stderr=subprocess.STDOUT, env=environment)

    def messages(self) -> list[str]:
        return [json.loads(line)["msg"] for line in self.log.read_text().splitlines() if line.startswith("{")]

    def wait_for(self, text: str, seconds: float = 60.0) -> None:
        deadline = time.monotonic() + seconds
        while not any(text in m for m in self.messages()):
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, f"no log line with {text!r}: {self.messages()}"
            time.sleep(0.05)

    def hup(self, expect: str) -> None:
        before = sum(expect in m for m in self.messages())
        self.process.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 10
        while sum(expect in m for m in self.messages()) <= before:
            assert self.process.poll() is None, f"SIGHUP killed the node: {self.log.read_text()}"
            assert time.monotonic() < deadline, f"no {expect!r} after SIGHUP: {self.messages()}"
            time.sleep(0.05)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(30)
        self._log_file.close()
        return code


def _client(server: TlsServer, ca: Path, key: str) -> IdvClient:
    return IdvClient(f"127.0.0.1:{server.port}", timeout=10, retries=0, api_key=key, tls=TlsConfig(ca))


def test_sighup_reloads_callers_and_certificates_for_new_connections_and_refuses_bad_files(
        tmp_path, model_dir, testdata) -> None:
    first = make_dev_pki(tmp_path / "pki-1", ["127.0.0.1"])
    second = make_dev_pki(tmp_path / "pki-2", ["127.0.0.1"])
    serving = tmp_path / "serving"
    serving.mkdir()
    cert, key = serving / "server.pem", serving / "server.key"
    cert.write_bytes(first.server_cert.read_bytes())
    key.write_bytes(first.server_key.read_bytes())
    callers = tmp_path / "data" / "callers.toml"
    old_key = add_caller(callers, "old-terminal", ["admin", "verify:*"])
    server = TlsServer(tmp_path, model_dir, IDV_TLS_CERT_FILE=str(cert), IDV_TLS_KEY_FILE=str(key))
    try:
        server.wait_for("serving")
        frames = [p.read_bytes() for p in next(iter(nuaa_sequences(testdata, "live", "0001").values()))[:24:3]]
        old = _client(server, first.ca_cert, old_key)
        assert not old.identity_status(ID_UNKNOWN).enrolled  # the connection is up

        # Rotate: new certificate from another CA, a new caller; SIGHUP while a call is in flight.
        cert.write_bytes(second.server_cert.read_bytes())
        key.write_bytes(second.server_key.read_bytes())
        new_key = add_caller(callers, "new-terminal", ["admin"])
        in_flight: list[str] = []
        call = threading.Thread(target=lambda: in_flight.append(old.verify(ID_UNKNOWN, "张三", frames).verdict))
        call.start()
        server.hup("TLS certificates reloaded")
        call.join(30)
        assert in_flight == ["FAIL"]  # finished with its verdict, not cut off
        assert "callers reloaded" in server.messages()

        with _client(server, second.ca_cert, new_key) as fresh:
            assert not fresh.identity_status(ID_UNKNOWN).enrolled  # new connection: new cert, new caller
        with _client(server, first.ca_cert, old_key) as stale:
            with pytest.raises(grpc.RpcError) as refused:
                stale.identity_status(ID_UNKNOWN)  # a new connection no longer sees the old certificate
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert not old.identity_status(ID_UNKNOWN).enrolled  # the open connection keeps working

        # Bad new files: refused with a log line naming them; the previous ones stay in force.
        cert.write_text("not a certificate\n")
        server.hup("TLS certificates refused")
        assert any(str(cert) in m for m in server.messages() if "refused" in m)
        callers.write_text("[[caller]]\nname = 'broken'\n")
        server.hup("refused, the previous callers stay")
        assert any(str(callers) in m for m in server.messages() if "callers file" in m)
        with _client(server, second.ca_cert, new_key) as fresh:
            assert not fresh.identity_status(ID_UNKNOWN).enrolled
        old.close()
    finally:
        assert server.stop() == 0


def test_a_changed_callers_file_is_picked_up_without_a_signal(tmp_path, model_dir) -> None:
    callers = tmp_path / "data" / "callers.toml"
    first = add_caller(callers, "first", ["admin"])
    server = TlsServer(tmp_path, model_dir, IDV_RELOAD_WATCH_SECONDS="0.2")
    try:
        server.wait_for("serving")
        second = add_caller(callers, "second", ["admin"])
        server.wait_for("callers reloaded", 10)
        for key in (first, second):
            with IdvClient(f"127.0.0.1:{server.port}", timeout=10, retries=0, api_key=key) as client:
                assert not client.identity_status(ID_UNKNOWN).enrolled
    finally:
        server.stop()


@pytest.mark.parametrize("broken, named", [
    ("keys/pseudonym.key", "key file {data}/keys/pseudonym.key is not valid base64"),
    ("keys/data-1.key", "key file {data}/keys/data-1.key does not hold a 32-byte key"),
    ("callers.toml", "callers file {data}/callers.toml"),
])
def test_malformed_key_and_callers_files_are_named_at_start_without_a_traceback(tmp_path, model_dir, broken,
                                                                                named) -> None:
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    for name in ("pseudonym.key", "data-1.key", "audit.key"):
        (data / "keys" / name).write_text("MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=\n")  # 32 bytes
    contents = {"keys/pseudonym.key": "this is not base64!\n", "keys/data-1.key": "c2hvcnQ=\n",
                "callers.toml": "[[caller]\nname = \n"}
    (data / broken).write_text(contents[broken])
    result = subprocess.run([sys.executable, str(REPO / "server.py"), "--port", str(free_port())],
                            env={**os.environ, "IDV_DATA_DIR": str(data), "IDV_MODEL_DIR": str(model_dir),
                                 "IDV_METRICS_PORT": "-1"}, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert named.format(data=data) in result.stderr
    assert "Traceback" not in result.stderr and "Incorrect padding" not in result.stderr


def test_a_bad_tls_file_at_start_is_named(tmp_path) -> None:
    pki = make_dev_pki(tmp_path / "pki", ["127.0.0.1"])
    other = make_dev_pki(tmp_path / "other", ["127.0.0.1"])
    from idv.reload import TlsFileError, TlsFiles, load_certificate_configuration

    with pytest.raises(TlsFileError, match=f"TLS key {other.server_key} does not belong to the certificate"):
        load_certificate_configuration(TlsFiles(pki.server_cert, other.server_key))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
    with pytest.raises(TlsFileError, match=f"TLS certificate {garbage} is not a PEM certificate"):
        load_certificate_configuration(TlsFiles(garbage, pki.server_key))
    with pytest.raises(TlsFileError, match=f"TLS client CA {garbage} is not a PEM certificate"):
        load_certificate_configuration(TlsFiles(pki.server_cert, pki.server_key, garbage))


@pytest.mark.parametrize("dsn, secret", [
    ("postgresql://idv:s3cret@db.internal:5432/idv", "s3cret"),
    ("postgresql://db.internal/idv?sslmode=require&password=s3cret", "s3cret"),
    ("host=db.internal user=idv password=s3cret dbname=idv", "s3cret"),
    ("host=db.internal password='s3 cret' dbname=idv", "cret"),
    ("postgres://:s3cret@db.internal/idv", "s3cret"),
])
def test_config_show_masks_every_dsn_form(dsn: str, secret: str) -> None:
    assert secret not in mask_dsn(dsn) and "db.internal" in mask_dsn(dsn)
    redis = "redis://:r3dis@cache.internal:6379/0"
    shown = masked(load_settings(environ={}, overrides={"redis_url": redis}))
    assert "r3dis" not in json.dumps(shown) and "cache.internal" in shown["state"]["redis_url"]
