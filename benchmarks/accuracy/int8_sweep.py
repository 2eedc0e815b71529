"""Sweep of int8 SFace builds (issue 12): which quantisation agrees with sface_fp32, and how fast is it?

    .venv/bin/python benchmarks/accuracy/int8_sweep.py [--shared DIR] [--out FILE]

Every build is onnxruntime static quantisation of sface_fp32_batch, calibrated on aligned
faces of testdata/eastasian/aaf (never LFW or NUAA). The AAF files (sorted) are split by
stride into three disjoint sets: CALIBRATION (files 0, 20, 40, ...), TUNING (5, 25, ...: the
per-layer sensitivity pass and the config choice look only at these) and REPORT (10, 30, ...:
cosine figures of the chosen configs, never used to choose). For each build: cosine of its
embeddings against sface_fp32's on the tuning faces (min, p1, mean), on the report faces,
and on the seeded start-time probe set (idv.models.variants.probe_faces), and ms per face
for a batch of 3 at intra-op 1, timed interleaved with sface_fp32_batch (ratio only: the
machine is shared).

Stages: (1) a grid over calibration method, activation type and pre-processing; (2) for
the best grid point, a sensitivity pass that keeps one quantised node at a time in fp32;
(3) greedy mixed precision: the k most sensitive nodes in fp32 for growing k; (4) structured
mixed precision: whole groups (depthwise convolutions, the first layers) in fp32.
`--write-recipe` writes the committed recipe of the pull-time build (idv/models/convert.py)
for one configuration instead.
Writes benchmarks/results/int8_sweep.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import onnx
import onnxruntime as ort

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from idv.evaluation.provenance import run_provenance  # noqa: E402
from idv.face.embedder import align_face  # noqa: E402
from idv.models.convert import SFACE_INT8_RECIPE  # noqa: E402
from idv.models.manifest import load_manifest  # noqa: E402
from idv.models.model_set import open_detector  # noqa: E402
from idv.models.variants import probe_faces  # noqa: E402

log = logging.getLogger("int8_sweep")
STRIDE = 20
OFFSETS = {"calibration": 0, "tuning": 5, "report": 10}


def aaf_crops(aaf: Path, model_dir: Path, cache: Path) -> dict[str, np.ndarray]:
    """Aligned 112x112 BGR crops per split (largest face per file; files without a face skipped)."""
    if cache.is_file():
        with np.load(cache) as data:
            return {k: data[k] for k in data.files}
    detector = open_detector(load_manifest(), "yunet", model_dir)
    files = sorted(aaf.glob("*.jpg"))
    out = {}
    for split, offset in OFFSETS.items():
        crops = []
        for path in files[offset::STRIDE]:
            image = cv2.imread(str(path))
            faces = detector.detect(image)
            if faces:
                crops.append(align_face(image, max(faces, key=lambda f: f.width * f.height)))
        out[split] = np.stack(crops)
    np.savez(cache, **out)
    return out


def blob(crops: np.ndarray) -> np.ndarray:
    """The recognizer's input: RGB, raw 0..255, NCHW float32."""
    return np.ascontiguousarray(crops[..., ::-1].transpose(0, 3, 1, 2)).astype(np.float32)


def session(path: Path) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads, so.inter_op_num_threads, so.log_severity_level = 1, 1, 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def embed(sess: ort.InferenceSession, data: np.ndarray, batch: int = 16) -> np.ndarray:
    out = np.concatenate([sess.run(None, {"data": data[i:i + batch]})[0] for i in range(0, len(data), batch)])
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def cosine_stats(got: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    cos = np.sum(got * ref, axis=1)
    return {"min": float(cos.min()), "p1": float(np.percentile(cos, 1)), "mean": float(cos.mean()), "n": int(len(cos))}


@dataclass(frozen=True)
class Config:
    method: str = "MinMax"  # MinMax | Entropy | Percentile
    percentile: float = 99.999
    activation: str = "QUInt8"  # QUInt8 (asymmetric) | QInt8 (symmetric)
    preprocess: bool = True  # quant_pre_process with onnxruntime graph optimisation (folds BN into Conv)
    op_types: tuple[str, ...] = ("Conv", "Gemm")
    exclude: tuple[str, ...] = field(default_factory=tuple)
    reduce_range: bool = False

    def label(self) -> str:
        method = f"Percentile{self.percentile}" if self.method == "Percentile" else self.method
        ex = f" excl[{','.join(self.exclude)}]" if self.exclude else ""
        return (f"{method}/{self.activation}/{'pre' if self.preprocess else 'raw'}/{'+'.join(self.op_types)}"
                f"{'/rr' if self.reduce_range else ''}{ex}")


class Builder:
    def __init__(self, source: Path, calibration: np.ndarray, work: Path):
        from onnxruntime.quantization.shape_inference import quant_pre_process

        self.work, self.calibration = work, calibration
        self.inputs = {True: work / "pre.onnx", False: work / "raw.onnx"}
        quant_pre_process(str(source), str(self.inputs[True]), skip_symbolic_shape=True)
        model = onnx.load(str(source))
        self.inputs[False].write_bytes(model.SerializeToString())
        self.count = 0

    def cache_path(self, config: Config) -> Path:
        return self.work / (f"ranges_{config.method}_{config.percentile}_{config.preprocess}_"
                            f"{config.activation == 'QInt8'}_{'+'.join(config.op_types)}.json")

    def build(self, config: Config) -> Path:
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)

        calibration = self.calibration

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self._it = iter(blob(calibration[i:i + 1]) for i in range(len(calibration)))

            def get_next(self):
                item = next(self._it, None)
                return None if item is None else {"data": item}

        method = {"MinMax": CalibrationMethod.MinMax, "Entropy": CalibrationMethod.Entropy,
                  "Percentile": CalibrationMethod.Percentile}[config.method]
        symmetric = config.activation == "QInt8"
        cache = self.cache_path(config)
        self.count += 1
        target = self.work / f"build_{self.count}.onnx"
        extra = {"ActivationSymmetric": symmetric, "CalibTensorRangeSymmetric": symmetric}
        if config.method == "Percentile":
            extra["CalibPercentile"] = config.percentile
        quantize_static(str(self.inputs[config.preprocess]), str(target), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=getattr(QuantType, config.activation), weight_type=QuantType.QInt8,
                        per_channel=True, reduce_range=config.reduce_range, op_types_to_quantize=list(config.op_types),
                        nodes_to_exclude=list(config.exclude), calibrate_method=method,
                        calibration_cache_path=str(cache), extra_options=extra)
        return target


MSE_BINS = 4096
MSE_STEPS = np.geomspace(0.02, 1.0, 48)  # candidate clip points as fractions of the observed min / max


def mse_ranges(model: Path, calibration: np.ndarray, minmax: dict[str, tuple[float, float]]) -> dict[str, tuple[float, float]]:
    """Per tensor the clip range [lo, hi] that minimises the expected squared error of uint8
    quantisation over the calibration faces' values (a histogram of MSE_BINS bins between the
    observed min and max; inside the range the error of uniform rounding, scale^2 / 12, outside
    it the clipping error). Percentile ranges clip every tensor at the same tail mass; this
    picks each tensor's own trade-off between resolution and clipping."""
    graph = onnx.load(str(model))
    known = {o.name for o in graph.graph.output}
    for name in minmax:
        if name not in known:
            graph.graph.output.append(onnx.helper.make_empty_tensor_value_info(name))
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    sess = ort.InferenceSession(graph.SerializeToString(), so, providers=["CPUExecutionProvider"])
    names = list(minmax)
    hist = {n: np.zeros(MSE_BINS, dtype=np.int64) for n in names}
    data = blob(calibration)
    for i in range(0, len(data), 8):
        for name, value in zip(names, sess.run(names, {"data": data[i:i + 8]}), strict=True):
            lo, hi = minmax[name]
            idx = np.clip(((value.ravel() - lo) / (hi - lo) * MSE_BINS).astype(np.int64), 0, MSE_BINS - 1)
            hist[name] += np.bincount(idx, minlength=MSE_BINS)
    out = {}
    for name in names:
        lo, hi = minmax[name]
        centres = lo + (np.arange(MSE_BINS) + 0.5) * (hi - lo) / MSE_BINS
        counts = hist[name].astype(np.float64)
        los = np.minimum(lo * MSE_STEPS, 0.0) if lo < 0 else np.array([0.0])
        his = np.maximum(hi * MSE_STEPS, 0.0) if hi > 0 else np.array([0.0])
        best, best_err = (lo, hi), np.inf
        for a in los:
            for b in his:
                if b - a <= 0:
                    continue
                scale = (b - a) / 255.0
                clipped = np.clip(centres, a, b)
                err = float(np.sum(counts * np.where(clipped == centres, scale * scale / 12.0, (centres - clipped) ** 2)))
                if err < best_err:
                    best, best_err = (float(a), float(b)), err
        out[name] = best
    return out


def write_recipe(builder: "Builder", config: Config, path: Path) -> None:
    """The committed recipe of the pull-time build (idv/models/convert.py sface_int8_qdq): the
    calibration ranges `config` measured on the calibration faces, and its fp32 nodes."""
    from onnxruntime.quantization.calibrate import load_tensors_data

    builder.build(config)  # fills the range cache of this calibration
    ranges = load_tensors_data(builder.cache_path(config))
    recipe = {
        "what": "int8 QDQ recipe of sface_int8: activation ranges and the nodes kept in fp32",
        "produced_by": "benchmarks/accuracy/int8_sweep.py --write-recipe (evidence: benchmarks/results/int8_sweep.json)",
        "calibration_faces": f"{len(builder.calibration)} aligned crops of sorted testdata/eastasian/aaf, every "
                             f"{STRIDE}th file from offset {OFFSETS['calibration']} (no LFW, no NUAA)",
        "config": config.label(),
        "calibration_method": config.method,
        "percentile": config.percentile,
        "op_types": list(config.op_types),
        "exclude": list(config.exclude),
        "ranges": {name: [np.asarray(ranges[name].range_value[0]).tolist(), np.asarray(ranges[name].range_value[1]).tolist()]
                   for name in sorted(ranges.data)},
    }
    path.write_text(json.dumps(recipe, indent=1) + "\n")


def quantised_nodes(path: Path, op_types: tuple[str, ...]) -> list[str]:
    return [n.name for n in onnx.load(str(path)).graph.node if n.op_type in op_types]


def time_pair(paths: dict[str, Path], data: np.ndarray, rounds: int) -> dict[str, float]:
    """Median ms per face of a batch of len(data), the builds interleaved round-robin."""
    sessions = {name: session(p) for name, p in paths.items()}
    for s in sessions.values():
        s.run(None, {"data": data})
    times: dict[str, list[float]] = {n: [] for n in sessions}
    for _ in range(rounds):
        for name, s in sessions.items():
            start = time.perf_counter()
            s.run(None, {"data": data})
            times[name].append((time.perf_counter() - start) * 1e3 / len(data))
    return {n: float(np.median(v)) for n, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shared", type=Path, default=Path(os.environ.get("IDV_SHARED_DIR", REPO.parent / "shared")))
    parser.add_argument("--model-dir", type=Path, default=Path(os.environ.get("IDV_MODEL_DIR", "/root/.cache/idv/models")))
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "idv-int8-sweep")
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--max-excluded", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "int8_sweep.json")
    parser.add_argument("--write-recipe", type=Path, default=None,
                        help="instead of the sweep: write the recipe of one config (--percentile, --exclude)")
    parser.add_argument("--percentile", type=float, default=99.99)
    parser.add_argument("--exclude", default="", help="comma-separated node names kept in fp32")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    manifest = load_manifest()
    fp32_batch = args.model_dir / manifest.entry("sface_fp32_batch").file
    crops = aaf_crops(args.shared / "testdata" / "eastasian" / "aaf", args.model_dir, args.work / "aaf_crops.npz")
    if args.write_recipe:
        exclude = tuple(n for n in args.exclude.split(",") if n)
        write_recipe(Builder(fp32_batch, crops["calibration"], args.work),
                     Config("Percentile", args.percentile, "QUInt8", True, exclude=exclude), args.write_recipe)
        return
    tuning, report, probes = blob(crops["tuning"]), blob(crops["report"]), blob(np.stack(probe_faces(8)))
    ref_sess = session(fp32_batch)
    reference = {"tuning": embed(ref_sess, tuning), "report": embed(ref_sess, report), "probe": embed(ref_sess, probes)}
    builder = Builder(fp32_batch, crops["calibration"], args.work)
    burst = tuning[:3]

    def measure(config: Config, timed: bool, splits=("tuning", "probe")) -> dict:
        path = builder.build(config)
        sess = session(path)
        data = {"tuning": tuning, "report": report, "probe": probes}
        row = {"config": asdict(config), "label": config.label()}
        for split in splits:
            row[f"cosine_{split}"] = cosine_stats(embed(sess, data[split]), reference[split])
        if timed:
            t = time_pair({"fp32_batch": fp32_batch, "int8": path}, burst, args.rounds)
            row.update({"ms_per_face": t["int8"], "fp32_batch_ms_per_face": t["fp32_batch"],
                        "speedup_vs_fp32_batch": t["fp32_batch"] / t["int8"]})
        log.info("%s: tuning min %.5f mean %.5f probe min %.5f %s", row["label"], row["cosine_tuning"]["min"],
                 row["cosine_tuning"]["mean"], row["cosine_probe"]["min"],
                 f"x{row['speedup_vs_fp32_batch']:.2f}" if timed else "")
        return row

    # (1) grid
    grid = []
    for method, percentile in (("MinMax", 0.0), ("Entropy", 0.0), ("Percentile", 99.99), ("Percentile", 99.999)):
        for activation in ("QUInt8", "QInt8"):
            for preprocess in (True, False):
                grid.append(measure(Config(method, percentile, activation, preprocess), timed=True))
    # Lower percentiles clip more: asymmetric activations on the optimised graph (the fast, best pair above).
    for percentile in (99.9, 99.95, 99.98):
        grid.append(measure(Config("Percentile", percentile, "QUInt8", True), timed=True))
    # Symmetric (s8) activations take a slower kernel here than u8: only builds faster than fp32 compete.
    best = max((r for r in grid if r["speedup_vs_fp32_batch"] > 1.2), key=lambda r: r["cosine_tuning"]["min"])
    base = Config(**{**best["config"], "op_types": tuple(best["config"]["op_types"]), "exclude": ()})
    log.info("grid best: %s", base.label())
    base_row = measure(base, timed=True)

    # (2) sensitivity: each quantised node kept in fp32 alone
    nodes = quantised_nodes(builder.inputs[base.preprocess], base.op_types)
    sensitivity = []
    for node in nodes:
        row = measure(Config(**{**asdict(base), "op_types": base.op_types, "exclude": (node,)}), timed=False)
        sensitivity.append({"node": node, "cosine_tuning": row["cosine_tuning"], "cosine_probe": row["cosine_probe"]})
    ranked = sorted(sensitivity, key=lambda r: (-r["cosine_tuning"]["min"], -r["cosine_tuning"]["mean"]))

    # (3) greedy mixed precision
    mixed = []
    for k in range(1, args.max_excluded + 1):
        exclude = tuple(r["node"] for r in ranked[:k])
        mixed.append(measure(Config(**{**asdict(base), "op_types": base.op_types, "exclude": exclude}), timed=True,
                             splits=("tuning", "probe", "report")))

    # (4) structured mixed precision. The sensitivity pass finds no dominant node: the error is
    # spread over every quantised tensor. Depthwise convolutions gain little from int8 here, so
    # keeping them (and the high-resolution first layers) in fp32 removes quantisation points at
    # little cost in speed.
    depthwise = tuple(n for n in nodes if "_dw_" in n)
    structured_sets = {
        "depthwise": depthwise,
        "depthwise+conv_1": depthwise + ("conv_1_conv2d",),
        "depthwise+conv_1+pre_fc1": depthwise + ("conv_1_conv2d", "pre_fc1"),
        "depthwise+conv_1..4": depthwise + ("conv_1_conv2d", "conv_2_conv2d", "conv_3_conv2d", "conv_4_conv2d"),
        "depthwise+conv_1..6": depthwise + tuple(f"conv_{i}_conv2d" for i in range(1, 7)),
        "first_half": tuple(nodes[:14]),
        # int8 on the last pointwise convolutions only: the least quantisation worth timing.
        "all_but_conv_9..14": tuple(n for n in nodes if n not in {f"conv_{i}_conv2d" for i in range(9, 15)}),
        "all_but_conv_12..14": tuple(n for n in nodes if n not in {f"conv_{i}_conv2d" for i in range(12, 15)}),
    }
    structured = []
    for name, exclude in structured_sets.items():
        row = measure(Config(**{**asdict(base), "op_types": base.op_types, "exclude": exclude}), timed=True,
                      splits=("tuning", "probe", "report"))
        structured.append({"set": name, **row})
    recipe = json.loads(SFACE_INT8_RECIPE.read_text())
    shipped = [r["set"] for r in structured if r["label"] == recipe["config"]]  # the committed recipe's set

    result = {
        "what": __doc__.split("\n\n")[0],
        **run_provenance(REPO),
        "onnxruntime": ort.__version__,
        "faces": {split: int(len(c)) for split, c in crops.items()},
        "splits": f"sorted testdata/eastasian/aaf, every {STRIDE}th file from offsets {OFFSETS}",
        "timing_note": "ms per face, batch of 3, intra-op 1, interleaved with sface_fp32_batch; shared machine: "
                       "the ratio is the figure",
        "grid": grid,
        "base": base_row,
        "sensitivity_one_node_in_fp32": ranked,
        "mixed_precision_greedy": mixed,
        "mixed_precision_structured": structured,
        "committed_recipe": {"path": "idv/models/sface_int8_recipe.json", "config": recipe["config"],
                             "structured_set": shipped[0] if shipped else None,
                             "why": "highest mean cosine on the TUNING faces among the builds still ~1.4x faster "
                                    "than sface_fp32_batch; its LFW/NUAA rates (model_variants.json) miss the "
                                    "0.1-point rule, so it is not in the manifest"},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    log.info("wrote %s", args.out)


if __name__ == "__main__":
    main()
