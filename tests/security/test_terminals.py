"""Attested terminals (issue 14) through a real gRPC server: a capture signed by a registered
terminal passes; a changed, reordered or re-targeted capture, another key, an unregistered
terminal and (where required) a missing signature fail with the reason a person with bad luck
sees, before any frame is decoded; the audit has the true reason."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

import idv.pipeline
from idv.cli import main as cli
from idv.client import IdvClient
from idv.security.terminals import (
    TerminalsFileError,
    add_terminal,
    attestation_message,
    load_private_key,
    read_public_key,
    remove_terminal,
    sign_capture,
)
from tests.conftest import ID_SUBJECT_1, nuaa_frames, nuaa_sequences, start_node

NAME = "张三"


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
def keypair(tmp_path: Path) -> tuple[Path, Path]:
    """A terminal key pair made by the CLI, as an operator would."""
    result = CliRunner().invoke(cli, ["keys", "new-terminal", "--out", str(tmp_path / "term"), "till-3"])
    assert result.exit_code == 0, result.output
    return tmp_path / "term" / "till-3.key", tmp_path / "term" / "till-3.pub"


@pytest.fixture()
def attested(node_settings, keypair):
    settings = node_settings.updated(integrity__attestation_required_for=("CHECK_IN",),
                                     challenges__passive_only_for=("check_in", "licence_renewal"),
                                     lockout_after_failures=50)
    result = CliRunner().invoke(cli, ["keys", "add-terminal", "--data-dir", str(settings.store.data_dir),
                                      "--caller", "anonymous", "--terminal-id", "till-3", str(keypair[1])])
    assert result.exit_code == 0, result.output
    node = start_node(settings)
    yield node, settings
    node.stop(0)


def _frames(testdata: Path) -> list[bytes]:
    sequence = next(iter(nuaa_sequences(testdata, "live", "0001").values()))
    return [p.read_bytes() for p in sequence[:15:3]]


def _audit_reasons(settings) -> list[str]:
    records = [json.loads(line) for line in settings.store.audit_path.read_text().splitlines()]
    return [r["true_reason"] for r in records if r.get("event") == "verify"]


def test_key_files_and_registry(tmp_path: Path, keypair) -> None:
    private, public = keypair
    assert stat.S_IMODE(os.stat(private).st_mode) == 0o600
    again = CliRunner().invoke(cli, ["keys", "new-terminal", "--out", str(private.parent), "till-3"])
    assert again.exit_code != 0 and "exists" in again.output  # never overwrites a key
    path = tmp_path / "data" / "terminals.toml"
    add_terminal(path, "cafe", "till-3", read_public_key(public))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(TerminalsFileError, match="already registered"):
        add_terminal(path, "cafe", "till-3", read_public_key(public))
    with pytest.raises(TerminalsFileError, match="terminal id"):
        add_terminal(path, "cafe", "till 3; rm", read_public_key(public))
    with pytest.raises(TerminalsFileError, match="Ed25519|PEM|base64"):
        read_public_key(private)  # a private key is no public key file
    listed = CliRunner().invoke(cli, ["keys", "list-terminals", "--data-dir", str(tmp_path / "data")])
    assert listed.exit_code == 0 and "cafe\ttill-3\t" in listed.output
    assert remove_terminal(path, "cafe", "till-3") and not remove_terminal(path, "cafe", "till-3")
    removed = CliRunner().invoke(cli, ["keys", "remove-terminal", "--data-dir", str(tmp_path / "data"),
                                       "--caller", "cafe", "--terminal-id", "till-3"])
    assert removed.exit_code != 0 and "no terminal" in removed.output


def test_the_message_is_canonical_and_length_prefixed() -> None:
    frames = [b"ab", b"c"]
    base = attestation_message("n1", "CHECK_IN", frames, [0.0, 40.0])
    assert base.startswith(b"\x00\x00\x00\x1aidv-terminal-attestation/1")
    # Moving bytes between fields, frames or order changes the message.
    assert attestation_message("n", "1CHECK_IN", frames, [0.0, 40.0]) != base
    assert attestation_message("n1", "CHECK_IN", [b"a", b"bc"], [0.0, 40.0]) != base
    assert attestation_message("n1", "CHECK_IN", frames[::-1], [0.0, 40.0]) != base
    assert attestation_message("n1", "CHECK_IN", frames, [0.0, 40.5]) != base
    assert attestation_message("n1", "CHECK_IN", frames, [0.0, 40.0]) == base


def test_signed_capture_passes_and_every_forgery_fails_before_decoding(attested, keypair, testdata,
                                                                        decode_counter) -> None:
    node, settings = attested
    key = load_private_key(keypair[0])
    frames = _frames(testdata)
    with IdvClient(f"127.0.0.1:{node.port}", timeout=30, retries=0) as client:
        client.enroll(ID_SUBJECT_1, NAME, [nuaa_frames(testdata, "print", "0001")[0].read_bytes()])
        assert client.verify(ID_SUBJECT_1, NAME, frames, "check_in", terminal_id="till-3",
                             terminal_key=key).verdict == "PASS"
        assert decode_counter[0] > 0  # a genuine capture is decoded
        decode_counter[0] = 0

        def fails(frames_sent, challenge_id: str = "", **signing) -> None:
            result = client.verify(ID_SUBJECT_1, NAME, frames_sent, "check_in", challenge_id, **signing)
            assert (result.verdict, result.reason) == ("FAIL", "LIVENESS_FAILED")

        signature = sign_capture(key, "", "CHECK_IN", frames, [])
        tampered = [frames[0][:-20] + bytes(20)] + frames[1:]  # one frame altered after signing
        fails(tampered, terminal_id="till-3", terminal_signature=signature)
        fails(frames[::-1], terminal_id="till-3", terminal_signature=signature)  # reordered
        fails(frames[:-1], terminal_id="till-3", terminal_signature=signature)  # one dropped
        fails(frames, terminal_id="till-3", terminal_key=Ed25519PrivateKey.generate())  # another key
        fails(frames, terminal_id="till-9", terminal_key=key)  # not registered
        fails(frames, terminal_id="till-3", terminal_signature=signature[:-1])  # malformed signature
        fails(frames)  # CHECK_IN requires a signature: none sent
        # Signed for one challenge, presented with another.
        first, second = client.create_challenge(ID_SUBJECT_1, "check_in"), client.create_challenge(ID_SUBJECT_1,
                                                                                                   "check_in")
        fails(frames, second.challenge_id, terminal_id="till-3",
              terminal_signature=sign_capture(key, first.challenge_id, "CHECK_IN", frames, []))
        # Signed for another purpose.
        fails(frames, terminal_id="till-3", terminal_signature=sign_capture(key, "", "LICENCE_RENEWAL", frames, []))
        assert decode_counter[0] == 0  # none of them got as far as a decode

        # A purpose that does not require attestation still works unsigned.
        assert client.verify(ID_SUBJECT_1, NAME, frames, "licence_renewal").verdict == "PASS"
    reasons = _audit_reasons(settings)
    assert reasons.count("ATTESTATION_INVALID") == 8 and reasons.count("ATTESTATION_MISSING") == 1
    assert reasons.count("VERIFIED") == 2


def test_terminals_are_picked_up_and_dropped_while_serving(attested, keypair, testdata, tmp_path) -> None:
    node, settings = attested
    frames = _frames(testdata)
    other = Ed25519PrivateKey.generate()
    with IdvClient(f"127.0.0.1:{node.port}", timeout=30, retries=0) as client:
        client.enroll(ID_SUBJECT_1, NAME, [nuaa_frames(testdata, "print", "0001")[0].read_bytes()])
        assert client.verify(ID_SUBJECT_1, NAME, frames, terminal_id="till-4", terminal_key=other).verdict == "FAIL"
        from cryptography.hazmat.primitives import serialization

        pub = tmp_path / "till-4.pub"
        pub.write_bytes(other.public_key().public_bytes(serialization.Encoding.PEM,
                                                        serialization.PublicFormat.SubjectPublicKeyInfo))
        add_terminal(settings.store.terminals_path, "anonymous", "till-4", read_public_key(pub))
        assert client.verify(ID_SUBJECT_1, NAME, frames, terminal_id="till-4", terminal_key=other).verdict == "PASS"
        remove_terminal(settings.store.terminals_path, "anonymous", "till-4")
        assert client.verify(ID_SUBJECT_1, NAME, frames, terminal_id="till-4", terminal_key=other).verdict == "FAIL"
        # A terminal of another caller signs nothing for this one.
        add_terminal(settings.store.terminals_path, "someone-else", "till-5", read_public_key(pub))
        assert client.verify(ID_SUBJECT_1, NAME, frames, terminal_id="till-5", terminal_key=other).verdict == "FAIL"
        # A file rewritten badly is refused; the terminals registered before keep working.
        settings.store.terminals_path.write_text("[[terminal]]\ncaller = 1\n")
        key = load_private_key(keypair[0])
        assert client.verify(ID_SUBJECT_1, NAME, frames, terminal_id="till-3", terminal_key=key).verdict == "PASS"


def test_registered_terminals_survive_a_restart(attested, keypair, testdata) -> None:
    node, settings = attested
    node.stop(0)
    restarted = start_node(settings)
    try:
        with IdvClient(f"127.0.0.1:{restarted.port}", timeout=30, retries=0) as client:
            client.enroll(ID_SUBJECT_1, NAME, [nuaa_frames(testdata, "print", "0001")[0].read_bytes()])
            assert client.verify(ID_SUBJECT_1, NAME, _frames(testdata), terminal_id="till-3",
                                 terminal_key=load_private_key(keypair[0])).verdict == "PASS"
    finally:
        restarted.stop(0)


def test_cli_verify_signs_with_the_terminal_key(attested, keypair, testdata, tmp_path) -> None:
    node, _ = attested
    frames = []
    for index, data in enumerate(_frames(testdata)):
        frames.append(tmp_path / f"f{index}.jpg")
        frames[-1].write_bytes(data)
    with IdvClient(f"127.0.0.1:{node.port}", timeout=30, retries=0) as client:
        client.enroll(ID_SUBJECT_1, NAME, [nuaa_frames(testdata, "print", "0001")[0].read_bytes()])
    base = ["verify", "--target", f"127.0.0.1:{node.port}", "--id", ID_SUBJECT_1, "--name", NAME, "--json"]
    signed = CliRunner().invoke(cli, [*base, "--terminal-key", str(keypair[0]), "--terminal-id", "till-3",
                                      *map(str, frames)])
    assert signed.exit_code == 0 and json.loads(signed.output)["verdict"] == "PASS", signed.output
    unsigned = CliRunner().invoke(cli, [*base, *map(str, frames)])
    assert unsigned.exit_code == 1 and json.loads(unsigned.output)["reason"] == "LIVENESS_FAILED"


def test_a_bad_terminals_file_refuses_the_start(node_settings) -> None:
    from tests.conftest import refused_start

    node_settings.store.data_dir.mkdir(parents=True, exist_ok=True)
    node_settings.store.terminals_path.write_text('[[terminal]]\ncaller = "x"\nterminal_id = "t"\npublic_key = "AAAA"\n')
    assert "32-byte" in str(refused_start(node_settings))


def test_unknown_purposes_in_attestation_policy_are_a_config_problem() -> None:
    from idv.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="attestation_required_for"):
        load_settings(environ={}, overrides={"integrity__attestation_required_for": "check_in,lunch"})


def test_session_uploads_are_signed_over_the_capture_token(node_settings, keypair, testdata) -> None:
    """A terminal using sessions signs its capture token (the one value it holds) with the frames."""
    import base64

    import httpx

    settings = node_settings.updated(integrity__attestation_required_for=("CHECK_IN",), device_port=0,
                                     device_requests_per_minute=1000, lockout_after_failures=50)
    add_terminal(settings.store.terminals_path, "anonymous", "till-3", read_public_key(keypair[1]))
    key = load_private_key(keypair[0])
    node = start_node(settings)
    try:
        frames = _frames(testdata)
        stamps = [1000.0 + 300.0 * i for i in range(len(frames))]
        with IdvClient(f"127.0.0.1:{node.port}", timeout=30, retries=0) as client:
            client.enroll(ID_SUBJECT_1, NAME, [nuaa_frames(testdata, "print", "0001")[0].read_bytes()])

            def upload(signature: bytes | None) -> str:
                session = client.create_session(ID_SUBJECT_1, NAME, "check_in")
                header: dict[str, object] = {"timestamps_ms": stamps, "sizes": [len(f) for f in frames]}
                if signature is not None:
                    signed = sign_capture(key, session.capture_token, "CHECK_IN", frames, stamps) \
                        if signature == b"good" else signature
                    header.update(terminal_id="till-3", signature=base64.b64encode(signed).decode())
                answer = httpx.post(f"http://127.0.0.1:{node.device.port}/v1/capture", timeout=60,
                                    content=json.dumps(header).encode() + b"\n" + b"".join(frames),
                                    headers={"Authorization": f"Bearer {session.capture_token}",
                                             "Content-Type": "application/vnd.idv.capture"})
                assert answer.status_code == 200, answer.text
                return answer.json()["reason"]

            assert upload(None) == "LIVENESS_FAILED"
            assert upload(sign_capture(key, "another-token", "CHECK_IN", frames, stamps)) == "LIVENESS_FAILED"
            upload(b"good")  # judged on (the clip performs no challenge: the verdict itself is no matter here)
    finally:
        node.stop(0)
    reasons = _audit_reasons(settings)
    assert reasons[:2] == ["ATTESTATION_MISSING", "ATTESTATION_INVALID"]
    assert reasons[2] not in ("ATTESTATION_MISSING", "ATTESTATION_INVALID")


def test_a_hand_broken_terminals_file_is_refused_and_the_registered_terminals_stay(tmp_path: Path, keypair) -> None:
    """`terminal = 5` (not an array of tables) is a refused file, never an exception per request."""
    from idv.security.terminals import TerminalRegistry, parse_terminals

    _, public = keypair
    path = tmp_path / "terminals.toml"
    add_terminal(path, "cafe", "till-3", read_public_key(public))
    registry = TerminalRegistry(path)
    assert registry.key_for("cafe", "till-3") is not None
    path.write_text("terminal = 5\n")
    with pytest.raises(TerminalsFileError, match="array of tables"):
        parse_terminals(path)
    assert registry.key_for("cafe", "till-3") is not None  # refused on refresh: the previous terminals stay
