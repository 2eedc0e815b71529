"""The gallery index: enrolled templates by identity, searched by cosine similarity (inner product
of unit vectors).

Exact search (IndexFlatIP) up to `exact_max` templates; above, an inverted-file index
(IndexIVFFlat, `nprobe` of its lists searched per query). IVF rather than HNSW in the
service because an identity's templates must be removable when it is re-enrolled, and
HNSW cannot remove; benchmarks/scale measures both against exact search.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass

import faiss
import numpy as np

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GalleryConfig:
    dimension: int
    exact_max: int = 1_000_000
    nprobe: int = 256
    # Vectors the IVF quantizer is trained on, at most (k-means cost grows with it).
    train_max: int = 200_000


@dataclass(frozen=True)
class Match:
    id_key: str
    score: float  # the best cosine of the query against this identity's templates


def ivf_lists(templates: int) -> int:
    """faiss's rule of thumb (about 4 sqrt(n) lists), as a power of two within [64, 65536]."""
    wanted = max(64, min(65536, 4 * math.isqrt(max(templates, 1))))
    return 1 << (wanted.bit_length() - 1)


class Gallery:
    """Thread-safe; every operation holds one lock (faiss does not mix writes with searches)."""

    def __init__(self, config: GalleryConfig):
        self._config = config
        self._lock = threading.Lock()
        self._index: faiss.Index = faiss.IndexIDMap2(faiss.IndexFlatIP(config.dimension))
        self._approximate = False
        # faiss labels are handed out in sequence, an identity's templates as one run: label ->
        # id_key is a list (8 bytes a template; None once replaced), id_key -> (first, count).
        self._owner: list[str | None] = []
        self._labels: dict[str, tuple[int, int]] = {}

    @property
    def kind(self) -> str:
        return "ivf" if self._approximate else "exact"

    @property
    def templates(self) -> int:
        with self._lock:
            return int(self._index.ntotal)

    @property
    def identities(self) -> int:
        with self._lock:
            return len(self._labels)

    def _vectors(self, vectors: np.ndarray) -> np.ndarray:
        array = np.array(vectors, dtype=np.float32, copy=True).reshape(-1, self._config.dimension)
        faiss.normalize_L2(array)
        return array

    def upsert(self, id_key: str, vectors: np.ndarray) -> None:
        self.upsert_many([(id_key, vectors)])

    def upsert_many(self, items: list[tuple[str, np.ndarray]]) -> None:
        """Set each identity's templates (replacing any it had)."""
        if not items:
            return
        with self._lock:
            self._forget([id_key for id_key, _ in items if id_key in self._labels])
            blocks = []
            first = len(self._owner)
            for id_key, vectors in items:
                block = self._vectors(vectors)
                self._labels[id_key] = (len(self._owner), len(block))
                self._owner.extend([id_key] * len(block))
                blocks.append(block)
            stacked = np.concatenate(blocks)
            self._index.add_with_ids(stacked, np.arange(first, len(self._owner), dtype=np.int64))
            stacked.fill(0)  # faiss keeps its own copy
            if not self._approximate and self._index.ntotal > self._config.exact_max:
                self._to_ivf()

    def remove(self, id_key: str) -> None:
        with self._lock:
            self._forget([id_key] if id_key in self._labels else [])

    def _forget(self, id_keys: list[str]) -> None:
        """Remove these identities' templates (lock held)."""
        if not id_keys:
            return
        runs = [self._labels.pop(id_key) for id_key in id_keys]
        gone = np.concatenate([np.arange(first, first + count, dtype=np.int64) for first, count in runs])
        self._index.remove_ids(gone)
        for label in gone.tolist():
            self._owner[label] = None

    def _to_ivf(self) -> None:
        """Replace the exact index by a trained IVF index holding the same vectors (lock held)."""
        flat = self._index
        total = int(flat.ntotal)
        labels = faiss.vector_to_array(flat.id_map).astype(np.int64)
        vectors = flat.index.reconstruct_n(0, total)
        nlist = ivf_lists(total)
        rng = np.random.default_rng(0)
        sample = vectors[rng.choice(total, size=min(total, self._config.train_max), replace=False)]
        quantizer = faiss.IndexFlatIP(self._config.dimension)
        ivf = faiss.IndexIVFFlat(quantizer, self._config.dimension, nlist, faiss.METRIC_INNER_PRODUCT)
        ivf.train(sample)
        ivf.add_with_ids(vectors, labels)
        ivf.nprobe = min(self._config.nprobe, nlist)
        self._index, self._approximate = ivf, True
        # Keep the quantizer alive with its index (faiss holds a raw pointer to it).
        self._quantizer = quantizer
        log.info("gallery switched to approximate search", extra={"templates": total, "lists": nlist})

    def search(self, vector: np.ndarray, identities: int = 4) -> list[Match]:
        """The best-matching identities, best first, each with its best template's score."""
        query = self._vectors(vector)[:1]
        with self._lock:
            if self._index.ntotal == 0:
                return []
            # Each identity has up to a handful of templates: fetch enough rows to fill `identities`.
            k = min(int(self._index.ntotal), identities * 8)
            scores, labels = self._index.search(query, k)
            best: dict[str, float] = {}
            for score, label in zip(scores[0].tolist(), labels[0].tolist()):
                id_key = self._owner[label] if label >= 0 else None
                if id_key is not None and id_key not in best:  # results arrive best first
                    best[id_key] = score
        query.fill(0)
        return [Match(k, s) for k, s in list(best.items())[:identities]]
