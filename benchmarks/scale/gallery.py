"""1:N gallery at 10k, 100k and 1M synthetic templates: build and enrol time, memory, query time,
and the recall of approximate search (IVF, HNSW) against exact search.

Synthetic templates are random unit vectors (128-d, SFace's size). Random vectors are the
hard case for approximate search (no cluster structure to exploit), so the recalls here
are a floor. Queries are planted near-duplicates of enrolled templates at a fixed cosine:
0.50 (just above the duplicate threshold: SFace's fmr_1e-5 level, 0.4711), 0.70 and 0.90.

    python -m benchmarks.scale.gallery [--sizes 10000,100000,1000000] [--queries 200]
"""

from __future__ import annotations

import argparse
import gc
import time

import faiss
import numpy as np

from benchmarks.scale.results import machine, write_section
from idv.gallery.index import Gallery, GalleryConfig, ivf_lists
from idv.models.manifest import load_manifest

D = 128
# The service's duplicate threshold: the recognizer's calibrated fmr_1e-5 level.
THRESHOLD = float(load_manifest().entry("sface_fp32").thresholds["fmr_1e-5"])  # type: ignore[arg-type]
COSINES = (0.5, 0.7, 0.9)


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def unit_vectors(rng: np.random.Generator, n: int) -> np.ndarray:
    out = np.empty((n, D), dtype=np.float32)
    for start in range(0, n, 100_000):
        block = rng.standard_normal((min(100_000, n - start), D), dtype=np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        out[start:start + len(block)] = block
    return out


def near(rng: np.random.Generator, v: np.ndarray, cosine: float) -> np.ndarray:
    noise = rng.standard_normal(v.shape, dtype=np.float32)
    noise -= (noise * v).sum(axis=1, keepdims=True) * v
    noise /= np.linalg.norm(noise, axis=1, keepdims=True)
    return (cosine * v + np.sqrt(1 - cosine**2) * noise).astype(np.float32)


def timed_queries(search, queries: np.ndarray) -> tuple[list[int], list[float], dict[str, float]]:
    """One query at a time, as the service asks: top-1 label, its score, latency percentiles."""
    labels, scores, took = [], [], []
    for q in queries:
        started = time.perf_counter()
        label, score = search(q)
        took.append((time.perf_counter() - started) * 1000)
        labels.append(label)
        scores.append(score)
    t = np.array(took)
    return labels, scores, {"p50_ms": round(float(np.percentile(t, 50)), 3),
                            "p95_ms": round(float(np.percentile(t, 95)), 3)}


def gallery_search(gallery: Gallery):
    def search(q: np.ndarray) -> tuple[int, float]:
        best = gallery.search(q, identities=1)
        return (int(best[0].id_key), best[0].score) if best else (-1, -1.0)
    return search


def faiss_search(index):
    def search(q: np.ndarray) -> tuple[int, float]:
        scores, labels = index.search(q[None], 1)
        return int(labels[0, 0]), float(scores[0, 0])
    return search


def evaluate(name: str, search, planted: dict[float, tuple[np.ndarray, np.ndarray]],
             exact: dict[float, tuple[list[int], list[float]]] | None) -> dict[str, object]:
    out: dict[str, object] = {}
    for cosine, (targets, queries) in planted.items():
        labels, scores, timing = timed_queries(search, queries)
        row: dict[str, object] = {
            **timing,
            # The planted template is the best match.
            "recall_at_1_planted": round(float(np.mean(np.array(labels) == targets)), 4),
            # The duplicate decision (any identity >= threshold) is reached.
            "duplicate_found": round(float(np.mean(np.array(scores) >= THRESHOLD)), 4),
        }
        if exact is not None:
            ex_labels, ex_scores = exact[cosine]
            row["top1_agrees_with_exact"] = round(float(np.mean(np.array(labels) == np.array(ex_labels))), 4)
            decided = np.array(ex_scores) >= THRESHOLD
            row["duplicate_recall_vs_exact"] = round(
                float(np.mean((np.array(scores) >= THRESHOLD)[decided])) if decided.any() else 1.0, 4)
        out[f"cos_{cosine:.2f}"] = row
    print(name, out, flush=True)
    return out


def run_size(n: int, queries: int, hnsw_max: int, rng: np.random.Generator) -> dict[str, object]:
    base = unit_vectors(rng, n)
    picks = rng.choice(n, queries, replace=False)
    planted = {c: (picks, near(rng, base[picks], c)) for c in COSINES}
    result: dict[str, object] = {"templates": n, "index_bytes_vectors": n * D * 4}

    # Exact, through the service's Gallery (identity bookkeeping included).
    gc.collect()
    before = rss_mb()
    started = time.perf_counter()
    gallery = Gallery(GalleryConfig(D, exact_max=n + 1000))
    for start in range(0, n, 10_000):
        gallery.upsert_many([(str(i), base[i:i + 1]) for i in range(start, min(n, start + 10_000))])
    build = time.perf_counter() - started
    memory = rss_mb() - before
    enrol = []
    fresh = unit_vectors(rng, 70)
    for i in range(50):  # enrolling one more identity into a gallery of n
        t0 = time.perf_counter()
        gallery.upsert(str(n + i), fresh[i][None])
        enrol.append((time.perf_counter() - t0) * 1000)
    replace_ms = []
    for i in range(20):  # re-enrolment: the old templates are removed first (O(n) for flat)
        t0 = time.perf_counter()
        gallery.upsert(str(n + i), fresh[50 + i][None])
        replace_ms.append((time.perf_counter() - t0) * 1000)
    exact_rows = {}
    search = gallery_search(gallery)
    for c, (_, qs) in planted.items():
        labels, scores, _ = timed_queries(search, qs)
        exact_rows[c] = (labels, scores)
    result["exact"] = {
        "build_seconds": round(build, 2), "rss_mb": round(memory, 1),
        "enrol_one_ms_p50": round(float(np.median(enrol)), 3),
        "re_enrol_one_ms_p50": round(float(np.median(replace_ms)), 3),
        "queries": evaluate(f"exact {n}", search, planted, None),
    }
    del gallery
    gc.collect()

    # IVF, through the Gallery as the service runs it above gallery_exact_max.
    nlist = ivf_lists(n)
    before = rss_mb()
    started = time.perf_counter()
    gallery = Gallery(GalleryConfig(D, exact_max=min(n - 1, 50_000), nprobe=1))
    for start in range(0, n, 10_000):
        gallery.upsert_many([(str(i), base[i:i + 1]) for i in range(start, min(n, start + 10_000))])
    build = time.perf_counter() - started
    ivf_rows: dict[str, object] = {"lists": nlist, "build_seconds": round(build, 2),
                                   "rss_mb": round(rss_mb() - before, 1), "by_nprobe": {}}
    for nprobe in (16, 64, 128, 256):
        gallery._index.nprobe = min(nprobe, nlist)
        ivf_rows["by_nprobe"][str(nprobe)] = evaluate(f"ivf {n} nprobe={nprobe}", gallery_search(gallery),
                                                      planted, exact_rows)
    result["ivf"] = ivf_rows
    del gallery
    gc.collect()

    # HNSW (raw faiss: the service does not use it, it cannot remove re-enrolled templates).
    if n <= hnsw_max:
        before = rss_mb()
        started = time.perf_counter()
        hnsw = faiss.IndexHNSWFlat(D, 32, faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = 80
        hnsw.add(base)
        hnsw_rows: dict[str, object] = {"M": 32, "efConstruction": 80,
                                        "build_seconds": round(time.perf_counter() - started, 2),
                                        "rss_mb": round(rss_mb() - before, 1), "by_ef_search": {}}
        for ef in (64, 256):
            hnsw.hnsw.efSearch = ef
            hnsw_rows["by_ef_search"][str(ef)] = evaluate(f"hnsw {n} ef={ef}", faiss_search(hnsw), planted,
                                                          exact_rows)
        result["hnsw"] = hnsw_rows
        del hnsw
    else:
        result["hnsw"] = f"not run above {hnsw_max} templates (build time on this machine)"
    del base
    gc.collect()
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--hnsw-max", type=int, default=100_000)
    args = parser.parse_args()
    rng = np.random.default_rng(20240601)
    section: dict[str, object] = {
        "machine": machine(), "faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(),
        "dimension": D, "duplicate_threshold": THRESHOLD, "queries_per_cosine": args.queries,
        "data": "random unit vectors, one template per identity; queries = planted near-duplicates "
                "of enrolled templates at the given cosine, searched one at a time",
        "sizes": {},
    }
    for n in (int(s) for s in args.sizes.split(",")):
        started = time.perf_counter()
        section["sizes"][str(n)] = run_size(n, args.queries, args.hnsw_max, rng)
        section["sizes"][str(n)]["seconds_total"] = round(time.perf_counter() - started, 1)
        write_section("gallery", section)


if __name__ == "__main__":
    main()
