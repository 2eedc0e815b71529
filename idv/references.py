"""The reference vault: protects identities and templates before they reach a store, and back.

ID numbers and names are stored only as keyed hashes (HMAC-SHA256); templates
are encrypted with AES-256-GCM, bound (as associated data) to the identity's
keyed hash and the model fingerprint, so a row copied onto another identity or
relabelled with another model fails to decrypt.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from cryptography.exceptions import InvalidTag

from idv.errors import TemplateMismatch
from idv.identity import name_match_key
from idv.keys import KeyMaterialError, KeyRing
from idv.store.base import IdentityRecord, ReferenceStore, TemplateRecord


@dataclass(frozen=True, eq=False)
class Reference:
    """Decrypted templates of one identity, in memory only for one comparison."""

    id_key: str
    templates: np.ndarray  # (K, D) float32 unit vectors


@dataclass(frozen=True, eq=False)
class ReferencePage:
    """Identities changed after a revision, decrypted (for the in-memory gallery only)."""

    references: tuple[Reference, ...]
    last_revision: int  # pass back to read the next page
    fetched: int  # identities read from the store (0: nothing more changed)
    # id_keys to drop from the gallery: deleted (DeleteIdentity), or templates another recognizer
    # made (not comparable).
    foreign: tuple[str, ...]


class ReferenceVault:
    def __init__(self, store: ReferenceStore, keys: KeyRing, reload_keys: Callable[[], KeyRing] | None = None):
        self._store = store
        self._keys = keys
        # `idv keys rotate` adds a key and re-encrypts while the node serves: a template under
        # a key this process has not seen yet triggers one reload of the key files.
        self._reload_keys = reload_keys

    def _decrypt(self, key_id: int, blob: bytes, associated: bytes) -> bytes:
        if key_id not in self._keys.data_keys and self._reload_keys is not None:
            self._keys = self._reload_keys()
        return self._keys.decrypt(key_id, blob, associated)

    @property
    def store(self) -> ReferenceStore:
        return self._store

    @property
    def keys(self) -> KeyRing:
        """The key ring in use (sessions seal their identity with its newest data key)."""
        return self._keys

    def id_key(self, canonical_id: str) -> str:
        return self._keys.pseudonym("id", canonical_id)

    def name_key(self, name: str) -> str:
        # name_match_key is the same comparison form names_match uses (NFKC, case-folded).
        return self._keys.pseudonym("name", name_match_key(name))

    @staticmethod
    def _associated(id_key: str, fingerprint: str) -> bytes:
        return f"{id_key}|{fingerprint}".encode()

    def enroll(self, id_key: str, name: str, templates: np.ndarray, fingerprint: str, replace: bool) -> bool:
        """Store `templates` for the identity `id_key` (see `id_key`), encrypted and bound to it."""
        records = []
        for vector in np.asarray(templates, dtype=np.float32):
            key_id, blob = self._keys.encrypt(vector.tobytes(), self._associated(id_key, fingerprint))
            records.append(TemplateRecord(fingerprint, key_id, blob))
        record = IdentityRecord(id_key, self.name_key(name), tuple(records), time.time())
        return self._store.put(record, replace=replace)

    def lookup(self, id_key: str) -> IdentityRecord | None:
        return self._store.get(id_key)

    def name_matches(self, record: IdentityRecord, name: str) -> bool:
        return hmac.compare_digest(record.name_key, self.name_key(name))

    def decrypt(self, record: IdentityRecord, fingerprint: str, dimension: int) -> Reference:
        """The identity's templates for `fingerprint`; a template of another model is an error."""
        foreign = {t.model_fingerprint for t in record.templates if t.model_fingerprint != fingerprint}
        if foreign or not record.templates:
            raise TemplateMismatch(
                "the enrolled reference was made by a different recognizer model; re-enrol the identity "
                "with the model this node serves"
            )
        vectors = []
        for template in record.templates:
            try:
                plain = self._decrypt(template.key_id, template.ciphertext,
                                      self._associated(record.id_key, fingerprint))
            except (InvalidTag, KeyMaterialError):  # KeyMaterialError: its data key is not on this node
                # Altered at rest, or moved onto another identity/model: never compared, never a PASS.
                raise TemplateMismatch("an enrolled template failed its integrity check; re-enrol the identity",
                                       "REFERENCE_INVALID") from None
            vector = np.frombuffer(plain, dtype=np.float32)
            if vector.shape != (dimension,) or not np.all(np.isfinite(vector)):
                raise TemplateMismatch("an enrolled template has the wrong size for this recognizer", "REFERENCE_INVALID")
            vectors.append(vector)
        return Reference(record.id_key, np.stack(vectors))

    def references_since(self, revision: int, fingerprint: str, dimension: int, limit: int = 1000) -> ReferencePage:
        """Decrypt up to `limit` identities put after `revision` (-1: all), in revision order."""
        records = self._store.changes_since(revision, limit)
        references: list[Reference] = []
        foreign: list[str] = []
        for record in records:
            if record.deleted:
                foreign.append(record.id_key)
                continue
            try:
                references.append(self.decrypt(record, fingerprint, dimension))
            except TemplateMismatch:
                foreign.append(record.id_key)
        last = records[-1].revision if records else revision
        return ReferencePage(tuple(references), last, len(records), tuple(foreign))

    def reencrypt_all(self) -> int:
        """Re-encrypt every template under the newest data key (rotation); returns identities touched."""
        touched = 0
        current = self._keys.current_key_id
        for record in self._store.iter_all():
            if all(t.key_id == current for t in record.templates):
                continue
            fresh = []
            for t in record.templates:
                associated = self._associated(record.id_key, t.model_fingerprint)
                plain = self._keys.decrypt(t.key_id, t.ciphertext, associated)
                key_id, blob = self._keys.encrypt(plain, associated)
                fresh.append(TemplateRecord(t.model_fingerprint, key_id, blob))
            self._store.replace_templates(record.id_key, tuple(fresh))
            touched += 1
        return touched
