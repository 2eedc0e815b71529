"""Per-caller API keys with scopes.

Keys are random 256-bit tokens shown once when created; only their SHA-256 is
stored (a slow hash adds nothing for keys of that entropy). Authentication
compares the presented key's hash with every stored hash in constant time.

Scopes: `verify:registration`, `verify:licence_renewal`, `verify:check_in`
(or `verify:*`), `enroll`, `admin`, `redeem` (exchange check-in credentials, issue 18).
An entry may carry a `display_name`: what a person sees in their verification history.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from idv.errors import PermissionDenied, Unauthenticated

KNOWN_SCOPES = frozenset({"verify:registration", "verify:licence_renewal", "verify:check_in", "verify:*",
                          "enroll", "admin", "redeem"})
KEY_PREFIX = "idv_"
METADATA_KEY = "x-api-key"


class CallersFileError(ValueError):
    """The callers file is malformed; the message names it."""


@dataclass(frozen=True)
class Caller:
    name: str
    scopes: frozenset[str]
    display_name: str = ""  # shown to people in their verification history (issue 18); else the name

    def may(self, scope: str) -> bool:
        if scope in self.scopes:
            return True
        return scope.startswith("verify:") and "verify:*" in self.scopes


ANONYMOUS = Caller("anonymous", KNOWN_SCOPES)  # development mode without any configured caller


@dataclass(frozen=True)
class _StoredCaller:
    caller: Caller
    key_sha256: bytes


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


class CallerRegistry:
    """Callers from `<data_dir>/callers.toml`; empty means anonymous development access."""

    def __init__(self, entries: list[_StoredCaller]):
        self._entries = entries

    @property
    def required(self) -> bool:
        return bool(self._entries)

    @property
    def count(self) -> int:
        return len(self._entries)

    def display_names(self) -> dict[str, str]:
        """Caller name -> the name people see in their verification history (issue 18)."""
        return {e.caller.name: e.caller.display_name or e.caller.name for e in self._entries}

    @classmethod
    def load(cls, path: Path) -> CallerRegistry:
        """Every problem names the file (and the caller entry): CallersFileError."""
        if not path.exists():
            return cls([])
        try:
            with path.open("rb") as fh:
                raw = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise CallersFileError(f"callers file {path}: {exc}") from None
        entries = []
        for position, item in enumerate(raw.get("caller", []), start=1):
            try:
                name, scopes = str(item["name"]), frozenset(item["scopes"])
                digest = bytes.fromhex(item["key_sha256"])
            except (KeyError, TypeError, ValueError) as exc:
                raise CallersFileError(f"callers file {path}: caller entry {position} is malformed "
                                       f"(needs name, scopes and a hex key_sha256): {exc!r}") from None
            unknown = scopes - KNOWN_SCOPES
            if unknown:
                raise CallersFileError(f"callers file {path}: caller {name!r} has unknown scopes {sorted(unknown)}")
            if len(digest) != 32:
                raise CallersFileError(f"callers file {path}: caller {name!r} has a key_sha256 that is not 32 bytes")
            display_name = str(item.get("display_name", ""))
            entries.append(_StoredCaller(Caller(name, scopes, display_name), digest))
        return cls(entries)

    def authenticate(self, presented: str | None) -> Caller:
        if not self._entries:
            return ANONYMOUS
        if not presented:
            raise Unauthenticated("an API key is required (metadata x-api-key)")
        digest = _digest(presented)
        found: Caller | None = None
        for entry in self._entries:  # no early exit: the time does not depend on which entry matches
            if hmac.compare_digest(entry.key_sha256, digest):
                found = entry.caller
        if found is None:
            raise Unauthenticated("the API key is not valid")
        return found

    @staticmethod
    def authorize(caller: Caller, scope: str) -> None:
        if not caller.may(scope):
            raise PermissionDenied(f"caller {caller.name} lacks the scope {scope}")


def add_caller(path: Path, name: str, scopes: list[str], display_name: str = "") -> str:
    """Append a caller to the registry file; returns the new key (shown once, never stored)."""
    unknown = set(scopes) - KNOWN_SCOPES
    if unknown:
        raise ValueError(f"unknown scopes {sorted(unknown)}; known: {sorted(KNOWN_SCOPES)}")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError("a caller name is letters, digits, '-', '_' and '.'")
    existing = CallerRegistry.load(path)
    if any(e.caller.name == name for e in existing._entries):
        raise ValueError(f"caller {name!r} already exists")
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with path.open("a", encoding="utf-8") as fh:
        fh.write(f'\n[[caller]]\nname = "{name}"\nscopes = {sorted(scopes)!r}\nkey_sha256 = "{_digest(key).hex()}"\n'
                 .replace("'", '"'))
        if display_name:
            fh.write(f"display_name = {json.dumps(display_name, ensure_ascii=False)}\n")
    path.chmod(0o600)
    return key
