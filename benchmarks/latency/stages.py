"""Per-stage timings with the service's own stage classes, on 640x480 NUAA JPEG frames.

    .venv/bin/python -m benchmarks.latency.stages [--iterations 200] [--out stages.json]

Per frame: decode, detect, align, quality, embed (the recognizer as served: SFace
folded to fp32). Per burst of 5: liveness (liveness.LivenessChecker when it
imports, else recorded as not available) and compare (fuse the frames'
embeddings, look the reference up, decrypt it, cosine). Every stage runs on one
thread, as it does inside one server worker, with the configured intra-op threads.

Also: SFace int8 block-quantized *as shipped* (only the dangling graph inputs
dropped, so onnxruntime accepts it) against the fp32 fold idv serves, on the
same aligned crops: the speed-up of the pull-time fold, and the embeddings'
agreement (the fold must not change what the model computes).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.latency.data import ID_NUMBER, NAME, stage_bursts
from benchmarks.latency.stats import summary_dict
from idv.config import Settings, load_settings
from idv.face.burst import pick_frames
from idv.face.embedder import Embedder, align_face
from idv.face.quality import assess
from idv.face.types import FaceDetection
from idv.imaging import decode_frame
from idv.liveness_gate import LivenessSettings
from idv.models.manifest import DEFAULT_MANIFEST, Manifest, load_manifest
from idv.models.model_set import ModelSet, load_models
from idv.models.runtime import RuntimeOptions, open_session
from liveness import LivenessChecker, LivenessConfig

_WARMUP = 10


@dataclass(frozen=True)
class StageRunConfig:
    iterations: int = 200
    intra_op_threads: int = 1
    burst: int = 5


def _timed(fn: Callable[[], Any], sink: list[float]) -> Any:
    start = time.perf_counter()
    result = fn()
    sink.append((time.perf_counter() - start) * 1000.0)
    return result


def _subject(faces: Sequence[FaceDetection]) -> FaceDetection | None:
    # The pipeline's rule: the largest face is the subject.
    return max(faces, key=lambda f: min(f.width, f.height)) if faces else None


def _models(settings: Settings, manifest: Manifest, intra: int) -> ModelSet:
    """The served models, loaded as the node loads them (idv.models.model_set.load_models)."""
    return load_models(manifest, replace(settings.models, intra_op_threads=intra))


def _liveness_checker(models: ModelSet) -> LivenessChecker:
    return LivenessChecker(models.minifasnet_v2, models.minifasnet_v1se,
                           LivenessConfig(allow_single_frame=LivenessSettings().allow_single_frame))


def _vault(tmp: Path, embedder: Embedder, reference_template: np.ndarray):
    """The service's reference vault (SQLite + AES-GCM) holding one enrolled template."""
    from idv.identity import normalise_name, parse_id_number
    from idv.keys import load_keyring
    from idv.references import ReferenceVault
    from idv.store.sqlite import SqliteReferenceStore

    vault = ReferenceVault(SqliteReferenceStore(tmp / "references.sqlite3"), load_keyring(tmp))
    id_key = vault.id_key(parse_id_number(ID_NUMBER).value)
    vault.enroll(id_key, normalise_name(NAME), reference_template[np.newaxis], embedder.fingerprint, False)
    return vault, id_key


def run_stages(settings: Settings, manifest: Manifest, config: StageRunConfig) -> dict[str, Any]:
    models = _models(settings, manifest, config.intra_op_threads)
    image_limits = settings.image
    quality_limits = settings.quality
    bursts = stage_bursts(frames=config.burst)
    paths = [p for burst in bursts for p in burst]
    blobs = [p.read_bytes() for p in paths]

    samples: dict[str, list[float]] = {k: [] for k in ("decode", "detect", "refine", "align", "quality", "embed")}
    # Frame index -> (image, face, aligned crop, embedding), kept from the first pass over the frames.
    observations: dict[int, tuple[np.ndarray, FaceDetection, np.ndarray, np.ndarray]] = {}
    no_face = 0
    for i in range(config.iterations + _WARMUP):
        data = blobs[i % len(blobs)]
        sink = samples if i >= _WARMUP else {k: [] for k in samples}
        image = _timed(lambda: decode_frame(data, image_limits, 0), sink["decode"])
        faces = _timed(lambda: models.detector.detect(image), sink["detect"])
        face = _subject(faces)
        if face is None:
            no_face += 1
            continue
        face = _timed(lambda: models.detector.refine(image, face), sink["refine"])  # a no-op: detect refines
        aligned = _timed(lambda: align_face(image, face), sink["align"])
        _timed(lambda: assess(face, aligned, quality_limits), sink["quality"])
        embedding = _timed(lambda: models.embedder.embed([aligned]), sink["embed"])[0]
        observations.setdefault(i % len(blobs), (image, face, aligned, embedding))

    result: dict[str, Any] = {
        "frames": {"count": len(paths), "size": "640x480 JPEG", "source": f"NUAA live: {len(bursts)} bursts of {config.burst} (2 sequences per subject, every 3rd frame)",
                   "mean_jpeg_bytes": int(np.mean([len(b) for b in blobs]))},
        "iterations": config.iterations,
        "intra_op_threads": config.intra_op_threads,
        "frames_without_face": no_face,
        "per_frame_ms": {k: summary_dict(v) for k, v in samples.items()},
    }
    result["per_burst_ms"] = _burst_stages(settings, manifest, models, observations, config)
    result["recognizer_fold"] = _fold_comparison(settings, manifest, [o[2] for o in observations.values()], config)
    return result


def _bursts(observations: dict[int, tuple], size: int) -> list[list]:
    """Consecutive groups of `size` frame indices are one real burst (see stage_bursts); keep complete ones."""
    count = max(observations) + 1
    groups = [[observations.get(j) for j in range(k, k + size)] for k in range(0, count - size + 1, size)]
    return [g for g in groups if all(o is not None for o in g)]


def _burst_stages(settings: Settings, manifest: Manifest, models: ModelSet, observations: dict[int, tuple],
                  config: StageRunConfig) -> dict[str, Any]:
    bursts = _bursts(observations, config.burst)
    out: dict[str, Any] = {"burst_frames": config.burst, "bursts": len(bursts),
                           "embed_frames": settings.burst.embed_frames}

    # compare: what the pipeline's compare stage does, plus the reference lookup before it.
    with tempfile.TemporaryDirectory(prefix="idv-bench-vault-") as tmp:
        vault, id_key = _vault(Path(tmp), models.embedder, bursts[0][0][3])
        lookup, compare = [], []
        for i in range(config.iterations + _WARMUP):
            embeddings = [o[3] for o in bursts[i % len(bursts)]]
            keep = lookup if i >= _WARMUP else []
            record = _timed(lambda: vault.lookup(id_key), keep)

            def fuse_and_compare() -> bool:
                mean = np.mean(embeddings, axis=0)
                probe = mean / max(float(np.linalg.norm(mean)), 1e-12)
                reference = vault.decrypt(record, models.embedder.fingerprint, models.embedder.dimension)
                return float(np.max(reference.templates @ probe)) >= 0.5

            _timed(fuse_and_compare, compare if i >= _WARMUP else [])
        out["lookup"] = summary_dict(lookup)
        out["compare"] = summary_dict(compare)

    # The recognizer's work per burst: k crops in one call of the build the node serves.
    batch_ms: list[float] = []
    k = settings.burst.embed_frames
    for i in range(config.iterations + _WARMUP):
        crops = [o[2] for o in bursts[i % len(bursts)][:k]]
        _timed(lambda: models.embedder.embed(crops), batch_ms if i >= _WARMUP else [])
    out[f"embed_{k}_in_one_call"] = summary_dict(batch_ms)

    checker = _liveness_checker(models)
    import liveness

    def as_liveness(group: list) -> list:
        # As the service: only the k picked frames carry an embedding (idv/face/burst.py).
        picked = set(pick_frames(list(range(len(group))), [1.0] * len(group), settings.burst.embed_frames))
        return [liveness.FaceObservation(img, face.box_xywh, face.landmarks, emb if j in picked else None)
                for j, (img, face, _, emb) in enumerate(group)]

    timings: list[float] = []
    passed = 0
    for i in range(config.iterations + _WARMUP):
        group = as_liveness(bursts[i % len(bursts)])
        decision = _timed(lambda: checker.check(group), timings if i >= _WARMUP else [])
        passed += int(bool(decision.passed)) if i >= _WARMUP else 0
    out["liveness"] = {"available": True, "checker": "liveness.LivenessChecker (default LivenessConfig)",
                       **(summary_dict(timings) or {}), "passed_fraction": round(passed / config.iterations, 3)}
    out["liveness_1_frame"] = _single_frame_liveness(models, bursts, config)
    return out


def _single_frame_liveness(models: ModelSet, bursts: list[list], config: StageRunConfig) -> dict[str, Any]:
    """The passive-only check of a 1-frame Verify, as the benchmark nodes run it (they allow single
    frames: node_process.py); benchmarks/latency/floors.py needs its cost for the 1-frame floor."""
    import liveness

    checker = LivenessChecker(models.minifasnet_v2, models.minifasnet_v1se, LivenessConfig(allow_single_frame=True))
    timings: list[float] = []
    passed = 0
    for i in range(config.iterations + _WARMUP):
        img, face, _, emb = bursts[i % len(bursts)][0]  # a 1-frame burst's one frame is its embedded one
        decision = _timed(lambda: checker.check([liveness.FaceObservation(img, face.box_xywh, face.landmarks, emb)]),
                          timings if i >= _WARMUP else [])
        passed += int(bool(decision.passed)) if i >= _WARMUP else 0
    return {"checker": "liveness.LivenessChecker (default LivenessConfig, allow_single_frame=True)",
            **(summary_dict(timings) or {}), "passed_fraction": round(passed / config.iterations, 3)}


def _without_dangling_inputs(path: Path) -> bytes:
    """The shipped int8bq graph with only the inputs no node consumes removed (what onnxruntime needs to load it)."""
    import onnx

    model = onnx.load(str(path))
    consumed = {name for node in model.graph.node for name in node.input}
    kept = [i for i in model.graph.input if i.name in consumed]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return model.SerializeToString()


def _fold_comparison(settings: Settings, manifest: Manifest, crops: list[np.ndarray],
                     config: StageRunConfig) -> dict[str, Any]:
    import onnxruntime as ort

    folded_entry = manifest.entry(manifest.pack(settings.models.pack)["recognizer"])
    if not folded_entry.derived_from:
        return {"available": False, "reason": f"{folded_entry.name} is not derived from a shipped file"}
    source_entry = manifest.entry(folded_entry.derived_from)
    options = RuntimeOptions(intra_op_threads=config.intra_op_threads)
    folded = open_session(folded_entry, settings.models.dir, options)  # digest-checked by open_session

    source_path = settings.models.dir / source_entry.file
    session_options = ort.SessionOptions()  # the same options open_session sets
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.log_severity_level = 3
    shipped = ort.InferenceSession(_without_dangling_inputs(source_path), session_options,
                                   providers=["CPUExecutionProvider"])

    def blob(crop: np.ndarray) -> np.ndarray:  # as SFaceEmbedder feeds it
        return crop[:, :, ::-1].transpose(2, 0, 1)[np.newaxis].astype(np.float32)

    runs: dict[str, list[float]] = {"int8bq_as_shipped": [], "fp32_folded": []}
    cosines: list[float] = []
    sessions = {"int8bq_as_shipped": shipped, "fp32_folded": folded.session}
    for i in range(config.iterations + _WARMUP):
        x = blob(crops[i % len(crops)])
        outs = {}
        # Alternate the order so neither variant always runs on a warmer cache.
        for name in (sorted(sessions) if i % 2 else sorted(sessions, reverse=True)):
            session = sessions[name]
            feed = {session.get_inputs()[0].name: x}
            outs[name] = _timed(lambda: session.run(None, feed)[0][0], runs[name] if i >= _WARMUP else [])
        a, b = outs["int8bq_as_shipped"], outs["fp32_folded"]
        cosines.append(float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))))
    shipped_ms = summary_dict(runs["int8bq_as_shipped"])
    folded_ms = summary_dict(runs["fp32_folded"])
    return {
        "available": True,
        "intra_op_threads": config.intra_op_threads,
        "int8bq_as_shipped_ms": shipped_ms,
        "fp32_folded_ms": folded_ms,
        "speedup_p50": round(shipped_ms["p50"] / folded_ms["p50"], 2),
        "embedding_cosine_min": round(min(cosines), 6),
        "files": {"int8bq_as_shipped": source_entry.file, "fp32_folded": folded_entry.file},
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=200)
    parser.add_argument("--intra-op-threads", type=int, default=1)
    parser.add_argument("--manifest", type=Path, default=None, help="default: idv/models/manifest.toml")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    settings = load_settings()
    manifest = load_manifest(args.manifest or settings.models.manifest or DEFAULT_MANIFEST)
    result = run_stages(settings, manifest, StageRunConfig(args.iterations, args.intra_op_threads))
    text = json.dumps(result, indent=2, ensure_ascii=False)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return result


if __name__ == "__main__":
    main()
