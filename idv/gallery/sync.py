"""Keeps one replica's gallery in step with the shared reference store.

At start every identity is read and decrypted (references_since(-1)); afterwards a
background thread fetches only identities put since the last revision seen, so an
enrolment through another replica reaches this gallery within the refresh period
(and at once before this replica's own duplicate checks, which refresh first).
"""

from __future__ import annotations

import logging
import threading
import time

from idv.errors import IdvError
from idv.gallery.index import Gallery
from idv.references import ReferenceVault

log = logging.getLogger(__name__)


class GallerySync:
    def __init__(self, vault: ReferenceVault, gallery: Gallery, fingerprint: str, dimension: int,
                 page: int = 1000):
        self._vault = vault
        self._gallery = gallery
        self._fingerprint = fingerprint
        self._dimension = dimension
        self._page = page
        self._revision = -1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def revision(self) -> int:
        return self._revision

    def refresh(self) -> int:
        """Apply every identity changed since the last refresh; returns how many were read."""
        total = 0
        with self._lock:
            while True:
                page = self._vault.references_since(self._revision, self._fingerprint, self._dimension, self._page)
                if page.fetched == 0:
                    return total
                self._gallery.upsert_many([(ref.id_key, ref.templates) for ref in page.references])
                for ref in page.references:
                    ref.templates.fill(0)  # the gallery holds its own copy
                for id_key in page.foreign:  # re-enrolled with another model: no longer comparable
                    self._gallery.remove(id_key)
                self._revision = page.last_revision
                total += page.fetched

    def load(self) -> None:
        started = time.monotonic()
        count = self.refresh()
        log.info("gallery loaded", extra={"identities": count, "templates": self._gallery.templates,
                                          "kind": self._gallery.kind,
                                          "seconds": round(time.monotonic() - started, 3)})

    def start(self, interval_seconds: float) -> None:
        def run() -> None:
            failing = False
            while not self._stop.wait(interval_seconds):
                try:
                    self.refresh()
                    failing = False
                except IdvError as exc:  # store down: readiness reports it; say it once here
                    if not failing:
                        log.warning("gallery refresh failed", extra={"error_reason": exc.reason})
                    failing = True
                except Exception:
                    log.exception("gallery refresh failed")

        self._thread = threading.Thread(target=run, name="idv-gallery-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
