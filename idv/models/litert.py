"""Load LiteRT (TFLite) models of the manifest with the same rules as the onnxruntime ones:
the pinned SHA-256 checked on the very bytes handed to the interpreter, the contract checked,
the thread count explicit."""

from __future__ import annotations

import hashlib
from pathlib import Path

from idv.models.manifest import ModelEntry
from idv.models.runtime import ModelLoadError
from liveness.facemesh import FaceMesh, FaceMeshLoadError, open_facemesh


def load_facemesh(entry: ModelEntry, model_dir: Path, num_threads: int = 1, instances: int = 1) -> FaceMesh:
    path = model_dir / entry.file
    if not path.is_file():
        raise ModelLoadError(
            f"model file {path} is missing; run `idv models pull` (with IDV_MODEL_MIRROR for an offline mirror)"
        )
    model_bytes = path.read_bytes()
    actual = hashlib.sha256(model_bytes).hexdigest()
    if actual != entry.sha256:
        raise ModelLoadError(f"model file {path} has SHA-256 {actual}, pinned {entry.sha256}: it was altered; refusing it")
    if entry.contract is None:
        raise ModelLoadError(f"{entry.name}: the manifest gives no contract to check")
    try:
        return open_facemesh(model_bytes, f"{entry.name}:{entry.sha256[:16]}", entry.contract.inputs,
                             entry.contract.outputs, num_threads, instances)
    except FaceMeshLoadError as exc:
        raise ModelLoadError(f"{entry.name}: {exc}") from exc
