"""Operator actions on one identity (scope `admin`): erase it, unlock it, inspect it. No gRPC in here.

Every action is audited with the keyed hash of the ID and who asked; no answer
carries a template, an image or a score.

Erasure (PIPL Art. 47): the store deletes the identity's templates and name hash in
one transaction and leaves a deletion marker (keyed hash and revision only). Verify
reads the store on every call, so the identity is unknown to every replica at once;
this replica's 1:N gallery drops it before answering, the others at their next
refresh, i.e. within `gallery_refresh_seconds` (the bound DeleteIdentity states).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from idv.audit import AuditLog
from idv.service import canonical_id_number
from idv.references import ReferenceVault
from idv.throttle import Throttle


@dataclass(frozen=True)
class AdminConfig:
    # Other replicas' galleries drop a deleted identity within this (their refresh period).
    propagation_bound_seconds: float = 2.0
    # References older than this answer REENROLMENT_REQUIRED to a matching face (0: no limit).
    reference_max_age_seconds: float = 0.0


@dataclass(frozen=True)
class Deletion:
    request_id: str
    deleted: bool
    propagation_bound_seconds: float


@dataclass(frozen=True)
class Unlock:
    request_id: str
    was_locked: bool


@dataclass(frozen=True)
class IdentityStatus:
    request_id: str
    enrolled: bool
    template_count: int
    enrolled_at: float  # unix time, 0 when not enrolled
    model_fingerprints: tuple[str, ...]
    consecutive_failures: int
    locked_until: float  # unix time, 0 when not locked now
    failure_cap_reached: bool
    reenrolment_required: bool

    def as_dict(self) -> dict[str, object]:
        return {
            "enrolled": self.enrolled, "template_count": self.template_count, "enrolled_at": self.enrolled_at,
            "model_fingerprints": list(self.model_fingerprints), "consecutive_failures": self.consecutive_failures,
            "locked_until": self.locked_until, "failure_cap_reached": self.failure_cap_reached,
            "reenrolment_required": self.reenrolment_required, "request_id": self.request_id,
        }


class AdminService:
    def __init__(self, vault: ReferenceVault, throttle: Throttle, audit: AuditLog, config: AdminConfig,
                 gallery_refresh: Callable[[], object] | None = None, clock: Callable[[], float] = time.time):
        self._vault = vault
        self._throttle = throttle
        self._audit = audit
        self._config = config
        self._gallery_refresh = gallery_refresh
        self._clock = clock

    def _id_key(self, id_number: str) -> str:
        return self._vault.id_key(canonical_id_number(id_number))

    def _audited(self, event: str, caller: str, id_key: str, **facts: object) -> str:
        request_id = str(uuid.uuid4())
        self._audit.append({"event": event, "request_id": request_id, "caller": caller, "id_key": id_key, **facts})
        return request_id

    def delete(self, caller: str, id_number: str) -> Deletion:
        id_key = self._id_key(id_number)
        deleted = self._vault.store.delete(id_key)
        if deleted and self._gallery_refresh is not None:
            self._gallery_refresh()  # this replica's gallery forgets it before we answer
        self._throttle.reset_identity(id_key)  # nothing left to protect; a new enrolment starts clean
        request_id = self._audited("admin_delete", caller, id_key, deleted=deleted)
        return Deletion(request_id, deleted, self._config.propagation_bound_seconds)

    def unlock(self, caller: str, id_number: str) -> Unlock:
        id_key = self._id_key(id_number)
        before = self._throttle.identity_state(id_key)
        self._throttle.reset_identity(id_key)
        was_locked = before.locked or before.consecutive_failures > 0
        request_id = self._audited("admin_unlock", caller, id_key, was_locked=was_locked,
                                   failures_before=before.consecutive_failures)
        return Unlock(request_id, was_locked)

    def status(self, caller: str, id_number: str) -> IdentityStatus:
        id_key = self._id_key(id_number)
        record = self._vault.store.get(id_key)
        lock = self._throttle.identity_state(id_key)
        request_id = self._audited("admin_status", caller, id_key)
        if record is None:
            return IdentityStatus(request_id, False, 0, 0.0, (), lock.consecutive_failures, lock.locked_until,
                                  lock.failure_cap_reached, False)
        limit = self._config.reference_max_age_seconds
        expired = limit > 0 and self._clock() - record.enrolled_at > limit
        fingerprints = tuple(sorted({t.model_fingerprint for t in record.templates}))
        return IdentityStatus(request_id, True, len(record.templates), record.enrolled_at, fingerprints,
                              lock.consecutive_failures, lock.locked_until, lock.failure_cap_reached, expired)
