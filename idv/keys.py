"""Keys for data at rest: a pseudonymisation key (HMAC-SHA256) and versioned data keys (AES-256-GCM).

Keys live in files under `<data_dir>/keys/` (mode 0600, created on first start)
or come from the environment (IDV_PSEUDONYM_KEY, IDV_DATA_KEYS as
"id:base64key,id:base64key"), never from the database. The newest data key
encrypts; every listed key decrypts, so keys can be rotated while serving.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

_NONCE_BYTES = 12


class KeyMaterialError(RuntimeError):
    """Keys are missing or malformed."""


@dataclass(frozen=True)
class KeyRing:
    pseudonym_key: bytes
    data_keys: Mapping[int, bytes]  # key id -> 32-byte AES key

    @property
    def current_key_id(self) -> int:
        return max(self.data_keys)

    def fingerprint(self) -> KeyFingerprint:
        """HMACs of a constant under each key: equal keys give equal fingerprints; the keys stay secret."""
        return KeyFingerprint(_key_fingerprint(self.pseudonym_key),
                              {key_id: _key_fingerprint(key) for key_id, key in self.data_keys.items()})

    def pseudonym(self, purpose: str, value: str) -> str:
        """Keyed hash: the same value under the same key gives the same pseudonym; unreadable without the key."""
        mac = hmac.new(self.pseudonym_key, purpose.encode() + b"\x00" + value.encode("utf-8"), hashlib.sha256)
        return mac.hexdigest()

    def encrypt(self, plaintext: bytes, associated: bytes) -> tuple[int, bytes]:
        key_id = self.current_key_id
        nonce = secrets.token_bytes(_NONCE_BYTES)
        return key_id, nonce + AESGCM(self.data_keys[key_id]).encrypt(nonce, plaintext, associated)

    def decrypt(self, key_id: int, blob: bytes, associated: bytes) -> bytes:
        try:
            key = self.data_keys[key_id]
        except KeyError:
            raise KeyMaterialError(f"data key {key_id} is not available; was it removed before re-encryption finished?") from None
        return AESGCM(key).decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], associated)


_FINGERPRINT_CONSTANT = b"idv key fingerprint v1"


def _key_fingerprint(key: bytes) -> str:
    return hmac.new(key, _FINGERPRINT_CONSTANT, hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class KeyFingerprint:
    """What a store records about the keys it was written with (idv.store_guard)."""

    pseudonym: str
    data: Mapping[int, str]  # key id -> fingerprint

    def to_json(self) -> str:
        return json.dumps({"pseudonym": self.pseudonym, "data": {str(k): v for k, v in sorted(self.data.items())}},
                          sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> KeyFingerprint:
        raw = json.loads(text)
        return cls(str(raw["pseudonym"]), {int(k): str(v) for k, v in raw["data"].items()})


def _write_secret(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(base64.b64encode(data) + b"\n")


def _decode(text: bytes | str, where: str) -> bytes:
    """Base64 of a 32-byte key; every problem names where the key came from (file or variable)."""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise KeyMaterialError(f"{where} is not valid base64 (expected a base64 32-byte key)") from None
    if len(raw) != 32:
        raise KeyMaterialError(f"{where} does not hold a 32-byte key (it holds {len(raw)} bytes)")
    return raw


def _read_secret(path: Path) -> bytes:
    try:
        text = path.read_bytes().strip()
    except OSError as exc:
        raise KeyMaterialError(f"key file {path} cannot be read: {exc.strerror}") from None
    return _decode(text, f"key file {path}")


def _data_key_id(path: Path) -> int:
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        raise KeyMaterialError(f"key file {path}: a data key file is named data-<number>.key") from None


def key_dir(data_dir: Path) -> Path:
    return data_dir / "keys"


def load_audit_key(data_dir: Path, environ: Mapping[str, str] | None = None, create: bool = True) -> bytes:
    """The audit chain's HMAC key (IDV_AUDIT_KEY, or keys/audit.key created on first start)."""
    env = os.environ if environ is None else environ
    if env.get("IDV_AUDIT_KEY"):
        return _decode(env["IDV_AUDIT_KEY"], "IDV_AUDIT_KEY")
    path = key_dir(data_dir) / "audit.key"
    if not path.exists():
        if not create:
            raise KeyMaterialError(f"no audit key at {path}")
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_secret(path, secrets.token_bytes(32))
    return _read_secret(path)


def add_data_key(data_dir: Path) -> int:
    """Create the next data key file; returns its id. Used by first start and by rotation."""
    directory = key_dir(data_dir)
    directory.mkdir(parents=True, exist_ok=True, mode=0o700)
    existing = [_data_key_id(p) for p in directory.glob("data-*.key")]
    key_id = max(existing, default=0) + 1
    _write_secret(directory / f"data-{key_id}.key", secrets.token_bytes(32))
    return key_id


def load_keyring(data_dir: Path, environ: Mapping[str, str] | None = None, create: bool = True) -> KeyRing:
    env = os.environ if environ is None else environ
    if env.get("IDV_PSEUDONYM_KEY") and env.get("IDV_DATA_KEYS"):
        pseudonym = _decode(env["IDV_PSEUDONYM_KEY"], "IDV_PSEUDONYM_KEY")
        data_keys = {}
        for position, item in enumerate(env["IDV_DATA_KEYS"].split(","), start=1):
            key_id, _, value = item.strip().partition(":")
            if not key_id.strip().isdigit():
                raise KeyMaterialError(f"IDV_DATA_KEYS item {position} is not 'id:base64key'")
            data_keys[int(key_id)] = _decode(value, f"IDV_DATA_KEYS item {position} (key {int(key_id)})")
        return KeyRing(pseudonym, data_keys)
    directory = key_dir(data_dir)
    pseudonym_path = directory / "pseudonym.key"
    if not pseudonym_path.exists():
        if not create:
            raise KeyMaterialError(f"no keys in {directory}")
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        _write_secret(pseudonym_path, secrets.token_bytes(32))
    if not list(directory.glob("data-*.key")):
        add_data_key(data_dir)
    data_keys = {_data_key_id(p): _read_secret(p) for p in directory.glob("data-*.key")}
    return KeyRing(_read_secret(pseudonym_path), data_keys)
