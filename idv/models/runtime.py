"""Open verified onnxruntime sessions with explicit options and checked contracts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from idv.models.manifest import ModelContract, ModelEntry
import hashlib


class ModelLoadError(RuntimeError):
    """A model is missing, altered, or does not have the expected contract: refuse to serve."""


@dataclass(frozen=True)
class RuntimeOptions:
    # Never left to onnxruntime's default (one thread per core per session):
    # with several worker threads that oversubscribes the CPU badly.
    intra_op_threads: int = 1
    inter_op_threads: int = 1


@dataclass(frozen=True)
class LoadedModel:
    entry: ModelEntry
    path: Path
    session: ort.InferenceSession

    @property
    def fingerprint(self) -> str:
        """Short, stable identity of the exact weights (used to tag templates and audit records)."""
        return f"{self.entry.name}:{self.entry.sha256[:16]}"


def _check_contract(name: str, session: ort.InferenceSession, contract: ModelContract) -> None:
    def compare(kind: str, actual: dict[str, list], expected: dict[str, tuple]) -> None:
        if set(actual) != set(expected):
            raise ModelLoadError(f"{name}: {kind} are {sorted(actual)}, expected {sorted(expected)}")
        for key, shape in expected.items():
            got = tuple(actual[key])
            if len(got) != len(shape) or any(
                isinstance(e, int) and isinstance(g, int) and e != g for g, e in zip(got, shape)
            ):
                raise ModelLoadError(f"{name}: {kind[:-1]} {key} has shape {got}, expected {shape}")

    compare("inputs", {i.name: i.shape for i in session.get_inputs()}, contract.inputs)
    compare("outputs", {o.name: o.shape for o in session.get_outputs()}, contract.outputs)


def open_session(
    entry: ModelEntry,
    model_dir: Path,
    options: RuntimeOptions,
    expected_sha256: str | None = None,
) -> LoadedModel:
    """Load `entry` from `model_dir` after checking its digest and contract."""
    path = model_dir / entry.file
    if not path.is_file():
        raise ModelLoadError(
            f"model file {path} is missing; run `idv models pull` (with IDV_MODEL_MIRROR for an offline mirror)"
        )
    pinned = (expected_sha256 or entry.sha256).lower()
    # Hash the very bytes we load, so the file cannot change between check and use.
    model_bytes = path.read_bytes()
    actual = hashlib.sha256(model_bytes).hexdigest()
    if actual != pinned:
        raise ModelLoadError(f"model file {path} has SHA-256 {actual}, pinned {pinned}: it was altered; refusing it")
    session_options = ort.SessionOptions()
    session_options.intra_op_num_threads = options.intra_op_threads
    session_options.inter_op_num_threads = options.inter_op_threads
    session_options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    session_options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session_options.log_severity_level = 3  # warnings about unused initializers are noise
    session_options.enable_cpu_mem_arena = True
    try:
        session = ort.InferenceSession(model_bytes, session_options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises several unrelated types for bad graphs
        raise ModelLoadError(f"model file {path} could not be loaded by onnxruntime: {exc}") from exc
    if entry.contract is not None:
        _check_contract(entry.name, session, entry.contract)
    return LoadedModel(entry=entry, path=path, session=session)
