"""Attested terminals (issue 14): a capture terminal registered with an Ed25519 public key signs
what it captured, and the node checks the signature before any frame is decoded.

A signature binds one capture to one challenge: a frame changed, dropped, added or reordered, a
timestamp moved, or the capture presented against another challenge (or for another purpose)
no longer verifies. It proves the frames came from a terminal holding the private key, which is
what a virtual camera or an injected recording on a caller's own machine cannot forge.

The signed message (`attestation_message`) is canonical, versioned and length-prefixed:

    field(b"idv-terminal-attestation/1") field(nonce) field(purpose)
    u32(frame count) sha256(frame 0) ... sha256(frame n-1)
    u32(timestamp count) f64be(t0) ... f64be(tn-1)

where field(x) = u32be(len(x)) || x. The nonce is the challenge id for a Verify and the capture
token for a session upload (the one value the device holds); the purpose is its proto name
(REGISTRATION, LICENCE_RENEWAL, CHECK_IN). Timestamps are the per-frame capture times sent
with the request (none for a passive burst).

Registered keys live in `<data_dir>/terminals.toml` (mode 0600, like the callers file), one
`[[terminal]]` entry per (caller, terminal id). The node rereads the file when it changes; a
file rewritten badly is refused and the previous terminals stay (logged as an error).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import logging
import os
import re
import struct
import threading
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

log = logging.getLogger(__name__)

ATTESTATION_VERSION = b"idv-terminal-attestation/1"
SIGNATURE_BYTES = 64
_TERMINAL_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class TerminalsFileError(ValueError):
    """The terminals file or a key file is malformed; the message names it."""


@dataclass(frozen=True)
class TerminalAttestation:
    """What a request carries: the terminal's id and its signature (transport-independent)."""

    terminal_id: str
    signature: bytes


def _field(value: bytes) -> bytes:
    return struct.pack(">I", len(value)) + value


def attestation_message(nonce: str, purpose: str, frames: Sequence[bytes | bytearray | memoryview],
                        timestamps_ms: Sequence[float]) -> bytes:
    """The exact bytes a terminal signs (see the module docstring)."""
    parts = [_field(ATTESTATION_VERSION), _field(nonce.encode("utf-8")), _field(purpose.encode("utf-8")),
             struct.pack(">I", len(frames))]
    parts.extend(hashlib.sha256(frame).digest() for frame in frames)
    parts.append(struct.pack(">I", len(timestamps_ms)))
    parts.extend(struct.pack(">d", float(t)) for t in timestamps_ms)
    return b"".join(parts)


def sign_capture(private_key: Ed25519PrivateKey, nonce: str, purpose: str,
                 frames: Sequence[bytes | bytearray | memoryview], timestamps_ms: Sequence[float]) -> bytes:
    return private_key.sign(attestation_message(nonce, purpose, frames, timestamps_ms))


# --------------------------------------------------------------------------- key files

def new_terminal_keypair(private_path: Path, public_path: Path) -> None:
    """A fresh Ed25519 key pair as PEM: the private key created 0600 (never overwritten), the public key 0644."""
    for path in (private_path, public_path):
        if path.exists():
            raise TerminalsFileError(f"{path} exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    public_pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                               serialization.PublicFormat.SubjectPublicKeyInfo)
    private_path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(private_pem)
    public_path.write_bytes(public_pem)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise TerminalsFileError(f"terminal key {path} cannot be read: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise TerminalsFileError(f"terminal key {path} is not an unencrypted PEM private key") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TerminalsFileError(f"terminal key {path} is not an Ed25519 key")
    return key


def read_public_key(path: Path) -> bytes:
    """The raw 32-byte Ed25519 public key from a PEM file (or a file holding its base64)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TerminalsFileError(f"public key {path} cannot be read: {exc.strerror}") from None
    if b"-----BEGIN" in data:
        try:
            key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError):
            raise TerminalsFileError(f"public key {path} is not a PEM public key") from None
        if not isinstance(key, Ed25519PublicKey):
            raise TerminalsFileError(f"public key {path} is not an Ed25519 key")
        return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return _raw_public_key(data.strip(), f"public key {path}")


def _raw_public_key(text: bytes | str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise TerminalsFileError(f"{where} is neither PEM nor the base64 of a 32-byte Ed25519 key") from None
    if len(raw) != 32:
        raise TerminalsFileError(f"{where} does not hold a 32-byte Ed25519 key ({len(raw)} bytes)")
    return raw


# --------------------------------------------------------------------------- the registry

@dataclass(frozen=True)
class RegisteredTerminal:
    caller: str
    terminal_id: str
    public_key: bytes  # raw 32 bytes

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(self.public_key).hexdigest()[:16]


def parse_terminals(path: Path) -> list[RegisteredTerminal]:
    """Every entry of the file (none if it does not exist); TerminalsFileError names any problem."""
    if not path.exists():
        return []
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TerminalsFileError(f"terminals file {path}: {exc}") from None
    found: list[RegisteredTerminal] = []
    seen: set[tuple[str, str]] = set()
    entries = raw.get("terminal", [])
    if not isinstance(entries, list):  # `terminal = 5` by hand: a refused file, not a crash per request
        raise TerminalsFileError(f"terminals file {path}: `terminal` must be an array of tables ([[terminal]])")
    for position, item in enumerate(entries, start=1):
        try:
            caller, terminal_id, key = str(item["caller"]), str(item["terminal_id"]), str(item["public_key"])
        except (KeyError, TypeError):
            raise TerminalsFileError(f"terminals file {path}: entry {position} needs caller, terminal_id "
                                     "and public_key") from None
        if not _TERMINAL_ID.fullmatch(terminal_id):
            raise TerminalsFileError(f"terminals file {path}: entry {position} has an invalid terminal_id")
        public = _raw_public_key(key, f"terminals file {path}: entry {position} public_key")
        if (caller, terminal_id) in seen:
            raise TerminalsFileError(f"terminals file {path}: terminal {terminal_id!r} of caller {caller!r} "
                                     "is listed twice")
        seen.add((caller, terminal_id))
        found.append(RegisteredTerminal(caller, terminal_id, public))
    return found


def _write_terminals(path: Path, terminals: Sequence[RegisteredTerminal]) -> None:
    """Write the whole file atomically (a reader sees the old or the new file, never half of one)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    lines = ["# Attested terminals (idv keys add-terminal); public keys only.\n"]
    for t in terminals:
        lines.append(f'\n[[terminal]]\ncaller = "{t.caller}"\nterminal_id = "{t.terminal_id}"\n'
                     f'public_key = "{base64.b64encode(t.public_key).decode()}"\n')
    temporary = path.with_name(path.name + ".tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(lines)
    os.replace(temporary, path)


def add_terminal(path: Path, caller: str, terminal_id: str, public_key: bytes) -> RegisteredTerminal:
    if not caller or not caller.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise TerminalsFileError("a caller name is letters, digits, '-', '_' and '.'")
    if not _TERMINAL_ID.fullmatch(terminal_id):
        raise TerminalsFileError("a terminal id is 1 to 64 letters, digits, '.', '_' or '-'")
    existing = parse_terminals(path)
    if any(t.caller == caller and t.terminal_id == terminal_id for t in existing):
        raise TerminalsFileError(f"terminal {terminal_id!r} of caller {caller!r} is already registered; "
                                 "remove it first to change its key")
    added = RegisteredTerminal(caller, terminal_id, public_key)
    _write_terminals(path, [*existing, added])
    return added


def remove_terminal(path: Path, caller: str, terminal_id: str) -> bool:
    existing = parse_terminals(path)
    kept = [t for t in existing if not (t.caller == caller and t.terminal_id == terminal_id)]
    if len(kept) == len(existing):
        return False
    _write_terminals(path, kept)
    return True


class TerminalRegistry:
    """The registered terminals, reread when the file changes (checked by stat on each lookup)."""

    def __init__(self, path: Path):
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._keys: dict[tuple[str, str], Ed25519PublicKey] = {}
        self._refresh(strict=True)  # a bad file at start refuses the start

    @property
    def path(self) -> Path:
        return self._path

    def _file_stamp(self) -> tuple[int, int, int] | None:
        try:
            st = self._path.stat()
        except FileNotFoundError:
            return None
        except OSError:  # unreadable: parse_terminals will refuse it and the previous terminals stay
            return (-1, -1, -1)
        return st.st_ino, st.st_mtime_ns, st.st_size  # rewrites replace the file: a new inode

    def _refresh(self, strict: bool = False) -> None:
        stamp = self._file_stamp()
        if stamp == self._stamp and not strict:
            return
        try:
            loaded = parse_terminals(self._path)
        except TerminalsFileError as exc:
            if strict:
                raise
            log.error(f"terminals file refused, the previous terminals stay: {exc}")
            self._stamp = stamp  # do not reparse (and relog) until it changes again
            return
        self._keys = {(t.caller, t.terminal_id): Ed25519PublicKey.from_public_bytes(t.public_key) for t in loaded}
        self._stamp = stamp

    def key_for(self, caller: str, terminal_id: str) -> Ed25519PublicKey | None:
        with self._lock:
            self._refresh()
            return self._keys.get((caller, terminal_id))


class AttestationCheck:
    """The node's side: is this capture signed by a terminal registered for this caller?"""

    def __init__(self, registry: TerminalRegistry, required_for: frozenset[str]):
        self._registry = registry
        self._required_for = required_for  # purpose names (proto spelling) that must be attested

    def required(self, purpose: str) -> bool:
        return purpose in self._required_for

    def problem(self, caller: str, purpose: str, nonce: str, frames: Sequence[bytes | bytearray | memoryview],
                timestamps_ms: Sequence[float], attestation: TerminalAttestation | None) -> str | None:
        """None when the capture is acceptable; else the true reason (audit only):
        ATTESTATION_MISSING (required and absent) or ATTESTATION_INVALID (present and not valid:
        an unregistered terminal, a malformed or wrong signature). Only hashes frames: no decode."""
        if attestation is None or (not attestation.terminal_id and not attestation.signature):
            return "ATTESTATION_MISSING" if self.required(purpose) else None
        key = self._registry.key_for(caller, attestation.terminal_id)
        if key is None or len(attestation.signature) != SIGNATURE_BYTES:
            return "ATTESTATION_INVALID"
        try:
            key.verify(attestation.signature, attestation_message(nonce, purpose, frames, timestamps_ms))
        except InvalidSignature:
            return "ATTESTATION_INVALID"
        return None
