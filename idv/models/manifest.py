"""The model manifest (`idv/models/manifest.toml`): what may be loaded, pinned by SHA-256."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

# Shipped as package data, so an installed wheel finds it next to this module.
DEFAULT_MANIFEST = Path(__file__).resolve().parent / "manifest.toml"


class ManifestError(ValueError):
    """The manifest is malformed or names something that is not in it."""


@dataclass(frozen=True)
class ModelContract:
    """Input and output names with their shapes, as the serving code expects them."""

    inputs: dict[str, tuple[int | str, ...]]
    outputs: dict[str, tuple[int | str, ...]]


@dataclass(frozen=True)
class ModelEntry:
    name: str
    role: str  # detector | recognizer | liveness | landmarks | source
    file: str
    sha256: str
    licence: str
    kind: str = ""
    urls: tuple[str, ...] = ()
    wheel: str = ""  # "dist==version:member/path/in/wheel"
    derived_from: str = ""
    converter: str = ""
    contract: ModelContract | None = None
    thresholds: dict[str, object] = field(default_factory=dict)
    # A faster build of another entry that serves in its place when it agrees with it
    # (idv/models/variants.py): same thresholds, same template fingerprint.
    variant_of: str = ""
    # For a variant: where its accuracy was shown to match the reference's (within 0.1 point
    # on LFW and NUAA); a variant without it never serves.
    evidence: str = ""


@dataclass(frozen=True)
class Manifest:
    path: Path
    models: dict[str, ModelEntry]
    packs: dict[str, dict[str, str]]

    def entry(self, name: str) -> ModelEntry:
        try:
            return self.models[name]
        except KeyError:
            raise ManifestError(f"model {name!r} is not in {self.path}") from None

    def pack(self, name: str) -> dict[str, str]:
        try:
            return self.packs[name]
        except KeyError:
            raise ManifestError(f"model pack {name!r} is not in {self.path} (known: {sorted(self.packs)})") from None

    def closure(self, names: list[str]) -> list[ModelEntry]:
        """The named entries plus everything they are derived from, sources first."""
        ordered: list[ModelEntry] = []
        seen: set[str] = set()

        def visit(name: str) -> None:
            if name in seen:
                return
            entry = self.entry(name)
            if entry.derived_from:
                visit(entry.derived_from)
            seen.add(name)
            ordered.append(entry)

        for name in names:
            visit(name)
        return ordered

    def variants(self, name: str) -> list[ModelEntry]:
        """The entries that may serve in place of `name`, in manifest order."""
        return [e for e in self.models.values() if e.variant_of == name]


def _shape_map(raw: dict[str, list[int | str]]) -> dict[str, tuple[int | str, ...]]:
    return {name: tuple(shape) for name, shape in raw.items()}


def load_manifest(path: Path = DEFAULT_MANIFEST) -> Manifest:
    with path.open("rb") as fh:
        raw = tomllib.load(fh)
    if raw.get("schema") != 1:
        raise ManifestError(f"{path}: unsupported manifest schema {raw.get('schema')!r}")
    models: dict[str, ModelEntry] = {}
    for name, spec in raw.get("models", {}).items():
        try:
            contract_raw = spec.get("contract")
            contract = (
                ModelContract(_shape_map(contract_raw.get("inputs", {})), _shape_map(contract_raw.get("outputs", {})))
                if contract_raw
                else None
            )
            models[name] = ModelEntry(
                name=name,
                role=spec["role"],
                file=spec["file"],
                sha256=spec["sha256"].lower(),
                licence=spec["licence"],
                kind=spec.get("kind", ""),
                urls=tuple(spec.get("urls", ())),
                wheel=spec.get("wheel", ""),
                derived_from=spec.get("derived_from", ""),
                converter=spec.get("converter", ""),
                contract=contract,
                thresholds=dict(spec.get("thresholds", {})),
                variant_of=spec.get("variant_of", ""),
                evidence=spec.get("evidence", ""),
            )
        except KeyError as exc:
            raise ManifestError(f"{path}: model {name!r} lacks {exc.args[0]!r}") from None
    for entry in models.values():
        if entry.derived_from and entry.derived_from not in models:
            raise ManifestError(f"{path}: {entry.name} is derived from unknown {entry.derived_from!r}")
        if entry.variant_of and entry.variant_of not in models:
            raise ManifestError(f"{path}: {entry.name} is a variant of unknown {entry.variant_of!r}")
    return Manifest(path=path, models=models, packs=dict(raw.get("packs", {})))
