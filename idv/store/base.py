"""The reference store contract: opaque, already-protected rows.

Backends never see an ID number, a name or a plaintext template: the vault
(idv.references) hands them keyed hashes and AES-GCM ciphertexts.
"""

from __future__ import annotations

from dataclasses import dataclass
from contextlib import AbstractContextManager
from typing import Iterator, Protocol


@dataclass(frozen=True)
class TemplateRecord:
    model_fingerprint: str
    key_id: int
    ciphertext: bytes  # nonce || AES-GCM(template float32 bytes)


@dataclass(frozen=True)
class IdentityRecord:
    id_key: str  # HMAC of the canonical ID number
    name_key: str  # HMAC of the normalised, case-folded name
    templates: tuple[TemplateRecord, ...]
    enrolled_at: float
    # Store-assigned, increasing with every put: lets each replica's gallery fetch only
    # what changed since it last looked (0 on records not yet stored).
    revision: int = 0
    # A deletion marker (DeleteIdentity): no name, no templates; tells every replica's
    # gallery to drop the identity. Only the keyed hash remains.
    deleted: bool = False


class ReferenceStore(Protocol):
    def get(self, id_key: str) -> IdentityRecord | None: ...

    def put(self, record: IdentityRecord, replace: bool) -> bool:
        """Store `record`; returns False (and stores nothing) if it exists and not `replace`."""
        ...

    def iter_all(self) -> Iterator[IdentityRecord]: ...

    def changes_since(self, revision: int, limit: int) -> list[IdentityRecord]:
        """Up to `limit` identities put or deleted after `revision`, in revision order (-1: from the
        start); a deletion comes back as a record with `deleted` set and no templates."""
        ...

    def delete(self, id_key: str) -> bool:
        """Remove the identity and its templates, leaving a deletion marker; False if it was absent."""
        ...

    def replace_templates(self, id_key: str, templates: tuple[TemplateRecord, ...]) -> None: ...

    def count(self) -> int: ...

    def get_meta(self, name: str) -> str | None:
        """A fact about the store itself (its id, the fingerprint of its keys); None if unset."""
        ...

    def set_meta(self, name: str, value: str, expected: str | None) -> bool:
        """Set `name` to `value` if it is still `expected` (None: unset); False if another writer won."""
        ...

    def enrolment_lock(self, timeout_seconds: float) -> AbstractContextManager[None]:
        """Held across the duplicate check and the put of an enrolment, by every replica sharing
        the store, so a duplicate check sees every committed enrolment; StoreUnavailable if it
        cannot be had within `timeout_seconds`."""
        ...

    def ping(self) -> None:
        """Raise StoreUnavailable if the store cannot answer."""
        ...

    def close(self) -> None: ...
