"""Credentials, scopes and transport security, checked before any frame is decoded."""

from __future__ import annotations

from pathlib import Path

import grpc
import pytest

import idv.pipeline
from idv.client import IdvClient, TlsConfig
from idv.rpc.status import error_info
from idv.security.callers import add_caller
from idv.security.devca import make_dev_pki
from tests.conftest import ID_SUBJECT_1, nuaa_frames, nuaa_sequences, start_node


@pytest.fixture()
def decode_counter(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    calls = [0]
    original = idv.pipeline.decode_frame

    def counting(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)

    monkeypatch.setattr(idv.pipeline, "decode_frame", counting)
    return calls


@pytest.fixture()
def secured(node_settings):
    keys = {
        "cafe": add_caller(node_settings.store.callers_path, "cafe-terminal-17", ["verify:check_in"]),
        "registrar": add_caller(node_settings.store.callers_path, "registrar", ["verify:*", "enroll"]),
    }
    node = start_node(node_settings)
    yield node, keys
    node.stop(0)


def _frames(testdata: Path) -> list[bytes]:
    sequence = next(iter(nuaa_sequences(testdata, "live", "0001").values()))
    return [p.read_bytes() for p in sequence[:15:3]]


def _code_and_reason(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as failure:
        call()
    info = error_info(failure.value)
    return failure.value.code(), info.reason if info else ""


def test_missing_and_wrong_keys_are_unauthenticated_before_decoding(secured, testdata, decode_counter) -> None:
    node, keys = secured
    target = f"127.0.0.1:{node.port}"
    for api_key in (None, "idv_not-a-real-key", keys["cafe"] + "x", keys["cafe"][:-1]):
        with IdvClient(target, api_key=api_key, retries=0) as client:
            code, reason = _code_and_reason(lambda: client.verify(ID_SUBJECT_1, "张三", _frames(testdata)))
            assert code == grpc.StatusCode.UNAUTHENTICATED
    assert decode_counter[0] == 0


def test_wrong_scope_is_permission_denied_before_decoding(secured, testdata, decode_counter) -> None:
    node, keys = secured
    with IdvClient(f"127.0.0.1:{node.port}", api_key=keys["cafe"], retries=0) as cafe:
        # A café terminal may check guests in, not register accounts or enrol references.
        code, _ = _code_and_reason(lambda: cafe.verify(ID_SUBJECT_1, "张三", _frames(testdata), "registration"))
        assert code == grpc.StatusCode.PERMISSION_DENIED
        reference = nuaa_frames(testdata, "print", "0001")[0].read_bytes()
        code, _ = _code_and_reason(lambda: cafe.enroll(ID_SUBJECT_1, "张三", [reference]))
        assert code == grpc.StatusCode.PERMISSION_DENIED
    assert decode_counter[0] == 0
    with IdvClient(f"127.0.0.1:{node.port}", api_key=keys["registrar"], retries=0) as registrar:
        registrar.enroll(ID_SUBJECT_1, "张三", [reference])
    with IdvClient(f"127.0.0.1:{node.port}", api_key=keys["cafe"], retries=0) as cafe:
        assert cafe.verify(ID_SUBJECT_1, "张三", _frames(testdata), "check_in").verdict == "PASS"


def test_keys_are_stored_only_as_hashes(secured) -> None:
    node, keys = secured
    stored = node.settings.store.callers_path.read_text()
    for key in keys.values():
        assert key not in stored


@pytest.fixture()
def pki(tmp_path: Path):
    return make_dev_pki(tmp_path / "pki", ["127.0.0.1", "localhost"])


def test_mutual_tls_refuses_plaintext_missing_and_foreign_client_certificates(node_settings, pki, tmp_path) -> None:
    settings = node_settings.updated(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key,
                       tls_client_ca_file=pki.ca_cert)
    node = start_node(settings)
    target = f"127.0.0.1:{node.port}"
    try:
        with IdvClient(target, timeout=3, tls=TlsConfig(pki.ca_cert, pki.client_cert, pki.client_key)) as good:
            assert good.health() == "SERVING"
        with IdvClient(target, timeout=3, retries=0) as plaintext:
            with pytest.raises(grpc.RpcError) as failure:
                plaintext.health()
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        with IdvClient(target, timeout=3, retries=0, tls=TlsConfig(pki.ca_cert)) as no_client_cert:
            with pytest.raises(grpc.RpcError) as failure:
                no_client_cert.health()
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
        other = make_dev_pki(tmp_path / "other", ["127.0.0.1"])
        with IdvClient(target, timeout=3, retries=0,
                       tls=TlsConfig(pki.ca_cert, other.client_cert, other.client_key)) as foreign:
            with pytest.raises(grpc.RpcError) as failure:
                foreign.health()
            assert failure.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        node.stop(0)


def test_plaintext_is_refused_outside_local_development(node_settings) -> None:
    from idv.config import ConfigError

    with pytest.raises(ConfigError, match="plaintext"):
        node_settings.updated(host="0.0.0.0").validate()
    with pytest.raises(ConfigError, match="plaintext"):
        node_settings.updated(mode="production").validate()


def test_the_device_endpoint_serves_tls_with_the_grpc_certificate_and_no_client_certificate(
        node_settings, pki) -> None:
    import ssl

    import httpx

    settings = node_settings.updated(tls_cert_file=pki.server_cert, tls_key_file=pki.server_key,
                       tls_client_ca_file=pki.ca_cert, device_port=0)
    node = start_node(settings)
    try:
        base = f"https://127.0.0.1:{node.device.port}"
        page = httpx.get(f"{base}/capture/", verify=ssl.create_default_context(cafile=str(pki.ca_cert)), timeout=10)
        assert page.status_code == 200 and 'id="start"' in page.text  # a phone has no client certificate
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{node.device.port}/capture/", timeout=5)
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{base}/capture/", timeout=5)  # not trusted without the CA
        with IdvClient(f"127.0.0.1:{node.port}", timeout=10,
                       tls=TlsConfig(pki.ca_cert, pki.client_cert, pki.client_key)) as client:
            assert client.create_session(ID_SUBJECT_1, "张三", "check_in").capture_url.startswith(base + "/capture/#")
    finally:
        node.stop(0)


def test_a_plaintext_device_endpoint_is_refused_off_loopback(node_settings) -> None:
    from idv.config import ConfigError

    with pytest.raises(ConfigError, match="plaintext device endpoint"):
        node_settings.updated(device_port=8080, device_host="0.0.0.0").validate()
