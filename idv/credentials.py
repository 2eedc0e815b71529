"""Check-in credentials (issue 18): what a PASS is used for at a hotel or internet-café desk.

A verification for a purpose the operator lists (default CHECK_IN) that ends in PASS leaves a
short-lived, single-use, opaque code. The person's capture page shows it as a QR code; the
clerk's terminal (scope `redeem`) exchanges it once, with RedeemCredential, for what the stay's
registration needs: ID number, name, purpose, when and at what level it was verified, and the
verification's request id.

What the shared state holds per code, and why (idv.state.base.StoredCredential):
- the SHA-256 of the code, never the code: a dump of Redis gives no usable code;
- the canonical ID and normalised name sealed with the node's newest data key (AES-256-GCM,
  associated data binding them to the digest, purpose and verification): the redemption must
  return them, and nothing readable sits in the state while it waits;
- the keyed ID hash for the audit, the issuing caller, the level and the request id.
No frame, template or score ever enters it. It lives until redeemed or expired, whichever first.

Unknown, used and expired codes all get the same answer (NOT_FOUND, CREDENTIAL_INVALID): no
oracle. A caller the operator did not allow is refused before the code is touched, so seeing
a code is not enough to burn it. Every redemption, granted or refused, is audited.
"""

from __future__ import annotations

import hashlib
import logging
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from idv.audit import AuditLog
from idv.errors import Code, IdvError, PermissionDenied
from idv.keys import KeyRing
from idv.state.base import CredentialStore, StoredCredential
from idv.verdicts import Purpose

log = logging.getLogger("idv.credentials")

CODE_PREFIX = "IDVC1."  # versioned, so a desk scanner can tell an idv code from another QR
CODE_MAX_CHARS = 128
_CODE_SHAPE = re.compile(r"[A-Za-z0-9_.\-]{1,128}")


class CredentialInvalid(IdvError):
    """Unknown, already used or expired: one answer for all three."""

    code = Code.NOT_FOUND
    default_reason = "CREDENTIAL_INVALID"


@dataclass(frozen=True)
class CredentialSettings:
    """The `[credentials]` settings section."""

    # Purposes whose PASS issues a check-in credential (TOML list or comma-separated); empty: none.
    purposes: tuple[str, ...] = ("CHECK_IN",)
    ttl_seconds: float = 120.0  # long enough to walk to the desk, short enough to be useless when lost
    # Callers allowed to redeem (besides holding the `redeem` scope); empty: any caller with the scope.
    redeemers: tuple[str, ...] = ()

    @property
    def issuing_purposes(self) -> frozenset[Purpose]:
        return frozenset(Purpose(p.strip().upper()) for p in self.purposes if p.strip())

    def problems(self) -> list[str]:
        problems: list[str] = []
        known = {p.value for p in Purpose}
        unknown = sorted({p.strip().upper() for p in self.purposes if p.strip()} - known)
        if unknown:
            problems.append(f"credentials.purposes names unknown purposes {unknown}")
        if not (10 <= self.ttl_seconds <= 600):
            problems.append("credentials.ttl_seconds must be between 10 and 600")
        return problems


@dataclass(frozen=True)
class IssuedCredential:
    code: str = field(repr=False)  # the secret: only in the answer to the person and the backend
    expires_at: float


@dataclass(frozen=True, repr=False)
class RedeemedCredential:
    """What the desk gets, once. repr hides the identity."""

    id_number: str
    name: str
    purpose: Purpose
    verified_at: float
    level: str
    verification_request_id: str
    request_id: str


def code_digest(code: str) -> str:
    return hashlib.sha256(code.encode("utf-8", "replace")).hexdigest()


class CheckInCredentials:
    def __init__(self, store: CredentialStore, keys: KeyRing, settings: CredentialSettings, audit: AuditLog,
                 clock: Callable[[], float] = time.time, admit_caller: Callable[[str], None] = lambda caller: None):
        self._store = store
        self._keys = keys
        self._settings = settings
        self._purposes = settings.issuing_purposes
        self._redeemers = frozenset(r.strip() for r in settings.redeemers if r.strip())
        self._audit = audit
        self._clock = clock
        # The caller's request rate (idv.throttle): every refused code costs an fsync'd audit record.
        self._admit_caller = admit_caller

    @staticmethod
    def _associated(digest: str, purpose: str, request_id: str) -> bytes:
        return b"idv-credential\x00" + "\x00".join((digest, purpose, request_id)).encode()

    def issues_for(self, purpose: Purpose | None) -> bool:
        return purpose is not None and purpose in self._purposes

    def issue(self, canonical_id: str, name: str, id_key: str, purpose: Purpose, issuer: str, level: str,
              request_id: str) -> IssuedCredential:
        """A fresh code for a PASS just decided (the caller checks `issues_for` first)."""
        code = CODE_PREFIX + secrets.token_urlsafe(24)  # 192 random bits
        digest = code_digest(code)
        now = self._clock()
        key_id, sealed = self._keys.encrypt(f"{canonical_id}\x00{name}".encode(),
                                            self._associated(digest, purpose.value, request_id))
        expires_at = now + self._settings.ttl_seconds
        self._store.put(StoredCredential(digest, purpose.value, issuer, id_key, sealed, key_id, now, level,
                                         request_id, expires_at))
        return IssuedCredential(code, expires_at)

    def redeem(self, caller: str, code: str) -> RedeemedCredential:
        """Use the code once. The transport has checked the `redeem` scope; the operator's list of
        redeemers is checked here, before the code is touched."""
        request_id = str(uuid.uuid4())
        self._admit_caller(caller)
        if self._redeemers and caller not in self._redeemers:
            raise PermissionDenied(f"caller {caller} may not redeem check-in credentials", "REDEEMER_NOT_ALLOWED")
        code = code.strip()
        credential = None
        if _CODE_SHAPE.fullmatch(code) and len(code) <= CODE_MAX_CHARS:
            credential = self._store.take(code_digest(code))
        if credential is None or Purpose(credential.purpose) not in self._purposes:
            self._audit.append({"event": "credential_refused", "request_id": request_id, "caller": caller,
                                "reason": CredentialInvalid.default_reason})
            raise CredentialInvalid("the check-in code is not valid (unknown, already used or expired)")
        plain = self._keys.decrypt(credential.key_id, credential.sealed_identity,
                                   self._associated(credential.code_digest, credential.purpose, credential.request_id))
        canonical_id, _, name = plain.decode().partition("\x00")
        self._audit.append({"event": "credential_redeemed", "request_id": request_id, "caller": caller,
                            "purpose": credential.purpose, "id_key": credential.id_key, "issuer": credential.issuer,
                            "verification_request_id": credential.request_id, "verdict": "REDEEMED"})
        return RedeemedCredential(canonical_id, name, Purpose(credential.purpose), credential.verified_at,
                                  credential.level, credential.request_id, request_id)
