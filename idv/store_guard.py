"""Replicas that agree or refuse: a node checks, before serving, that the store is the one it
expects and that its keys are the store's keys.

A replica with another pseudonymisation key finds nobody (keyed hashes differ) and one
with another data key cannot decrypt anybody; both used to answer NOT_VERIFIED to
everyone, counting toward lockouts, with no error anywhere. So the store records, at
first start, a fingerprint of the keys (HMAC of a constant under each key, never the
keys) and a random store id; a node whose keys do not match refuses to start.

The data directory keeps the store id it last used (`store.id`): a store that is empty
and unclaimed while the data directory says one was in use (the file was deleted, the
DSN points elsewhere) is refused instead of being silently started afresh.
"""

from __future__ import annotations

import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

from idv.keys import KeyFingerprint, KeyRing
from idv.store.base import ReferenceStore

log = logging.getLogger("idv.node")

KEYS_META = "key_fingerprint"
STORE_ID_META = "store_id"


class StoreMismatch(RuntimeError):
    """The store is not the one this node expects, or the node's keys are not the store's."""


@dataclass(frozen=True)
class StoreGuardConfig:
    marker_path: Path  # <data_dir>/store.id
    store_description: str  # for messages: a path or a masked DSN and schema


def check_store(store: ReferenceStore, keys: KeyRing, config: StoreGuardConfig) -> str:
    """Claim a new store for these keys, or check an existing one; returns the store id. Raises StoreMismatch."""
    where = config.store_description
    store_id = store.get_meta(STORE_ID_META)
    expected_id = _read_marker(config.marker_path)
    if store_id is None:
        if expected_id is not None and store.count() == 0:
            raise StoreMismatch(
                f"the reference store {where} is empty and unclaimed, but {config.marker_path} says this node used "
                f"store {expected_id}: was the store deleted or replaced? Restore it, or remove "
                f"{config.marker_path} to start a new empty store deliberately")
        store.set_meta(STORE_ID_META, str(uuid.uuid4()), None)  # a racing replica may win: read back
        store_id = store.get_meta(STORE_ID_META) or ""
        log.info("reference store claimed", extra={"store_id": store_id})
    elif expected_id is not None and expected_id != store_id:
        raise StoreMismatch(
            f"the reference store {where} is store {store_id}, but {config.marker_path} says this node used store "
            f"{expected_id}: the store was replaced. Restore it, or remove {config.marker_path} if the change is "
            "deliberate")
    _check_keys(store, keys.fingerprint(), where)
    if expected_id != store_id:
        _write_marker(config.marker_path, store_id)
    return store_id


def _check_keys(store: ReferenceStore, mine: KeyFingerprint, where: str) -> None:
    for _ in range(5):  # compare-and-set: replicas starting together merge their key lists
        recorded_text = store.get_meta(KEYS_META)
        if recorded_text is None:
            if store.set_meta(KEYS_META, mine.to_json(), None):
                return
            continue
        recorded = KeyFingerprint.from_json(recorded_text)
        if recorded.pseudonym != mine.pseudonym:
            raise StoreMismatch(
                f"this node's pseudonymisation key does not match the reference store {where} (key fingerprint "
                f"{mine.pseudonym[:12]}, the store's {recorded.pseudonym[:12]}): it would find nobody. Start it with "
                "the same keys as the other replicas (keys/ or IDV_PSEUDONYM_KEY)")
        differing = sorted(k for k in set(mine.data) & set(recorded.data) if mine.data[k] != recorded.data[k])
        if differing:
            raise StoreMismatch(
                f"this node's data key(s) {differing} do not match the reference store {where}: it could not "
                "decrypt the templates. Start it with the same keys as the other replicas (keys/ or IDV_DATA_KEYS)")
        newest = max(recorded.data, default=0)
        if newest and newest not in mine.data:
            raise StoreMismatch(
                f"the reference store {where} has templates under data key {newest}, which this node lacks: copy "
                "the key from the other replicas (`idv keys rotate` ran elsewhere)")
        merged = KeyFingerprint(recorded.pseudonym, {**recorded.data, **mine.data})
        if merged == recorded or store.set_meta(KEYS_META, merged.to_json(), recorded_text):
            return
    raise StoreMismatch(f"could not record this node's key fingerprints in the reference store {where}; retry")


def _read_marker(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise StoreMismatch(f"cannot read {path}: {exc.strerror}") from None
    return text or None


def _write_marker(path: Path, store_id: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temporary = path.with_name(path.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as fh:
        fh.write(store_id + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, path)


def require_existing_file(path: Path, marker_path: Path, what: str) -> None:
    """A file every earlier start created (the SQLite counters) must still exist once the node has run:
    opening an empty one would silently forget every lockout. Call before the file is opened."""
    if marker_path.exists() and not path.exists():
        raise StoreMismatch(
            f"the {what} {path} is missing, but {marker_path} shows this node ran before: was it deleted? Restore "
            f"it (lockouts and failure caps live there), or remove {marker_path} to start afresh deliberately")
