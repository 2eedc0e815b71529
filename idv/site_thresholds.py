"""Site calibration (issue 15): per-level thresholds an operator measured on their own sample.

`idv eval calibrate DIR --write` writes them to a TOML file in the node's data
directory (setting `site_thresholds_file`, default `<data_dir>/site_thresholds.toml`),
never into the shipped manifest. The node reads the file at start: when it holds a
threshold for the configured security level, made with the recognizer the node
loaded, that threshold replaces the manifest's (the file is logged and audited at
start). A file made with another recognizer stops the node: its thresholds mean
nothing for a different model.

References fused from several photos (idv/reference_thresholds.py): the operator's
sample is scored photo against photo, so its threshold is the one-photo (m = 1)
threshold; for m >= 2 the node adds the shipped increment of m over one photo (the
manifest's "<level>@m<k>" minus "<level>"), measured on the shipped calibration sets.
A site threshold therefore moves every m by the same amount and never makes a fused
reference laxer than a single photo. An operator's own recognizer file has one
threshold for every m (no fused calibration of it ships).
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from pathlib import Path

from idv.reference_thresholds import ReferenceThresholds, from_manifest

if TYPE_CHECKING:
    from idv.models.manifest import Manifest
    from idv.models.settings import ModelSettings

SCHEMA = 1
FILE_NAME = "site_thresholds.toml"
LEVELS = ("fmr_1e-3", "fmr_1e-4", "fmr_1e-5")


class SiteThresholdsError(RuntimeError):
    """The site thresholds file is unreadable, malformed, or made for another recognizer."""


@dataclass(frozen=True)
class SiteSampleRecord:
    """What the thresholds were measured on (no image, name or score: counts and a digest)."""

    digest: str  # sha256 of the sample listing (relative path, file sha256, person, role per line)
    people: int
    images: int
    faces: int
    genuine_pairs: int
    impostor_pairs: int
    kind: str  # "folders" | "csv"


@dataclass(frozen=True)
class SiteThresholds:
    recognizer: str  # fingerprint of the recognizer calibrated (e.g. "sface_fp32:8c52a43419a6dcff")
    thresholds: dict[str, float]
    sample: SiteSampleRecord
    rule: str
    written_at: str
    shipped: dict[str, float] = field(default_factory=dict)  # the thresholds in force before


def site_thresholds_path(site_thresholds_file: Path | None, data_dir: Path) -> Path:
    return Path(site_thresholds_file) if site_thresholds_file else Path(data_dir) / FILE_NAME


def load_site_thresholds(path: Path) -> SiteThresholds | None:
    """None when the file does not exist; SiteThresholdsError when it exists but is not usable."""
    try:
        with path.open("rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        return None
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SiteThresholdsError(f"site thresholds {path}: {exc}") from None
    try:
        if raw.get("schema") != SCHEMA:
            raise SiteThresholdsError(f"site thresholds {path}: schema {raw.get('schema')!r}, expected {SCHEMA}")
        thresholds = {str(k): float(v) for k, v in raw["thresholds"].items()}
        unknown = set(thresholds) - set(LEVELS)
        if unknown or not thresholds:
            raise SiteThresholdsError(f"site thresholds {path}: levels must be among {LEVELS}, got {sorted(thresholds)}")
        if not all(0.0 < v < 1.0 for v in thresholds.values()):
            raise SiteThresholdsError(f"site thresholds {path}: thresholds must be in (0, 1)")
        sample = SiteSampleRecord(**raw["sample"])
        return SiteThresholds(str(raw["recognizer"]), thresholds, sample, str(raw["rule"]), str(raw["written_at"]),
                              {str(k): float(v) for k, v in raw.get("shipped", {}).items()})
    except (KeyError, TypeError, ValueError) as exc:
        raise SiteThresholdsError(f"site thresholds {path}: malformed ({exc})") from None


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def write_site_thresholds(path: Path, site: SiteThresholds) -> None:
    """Write atomically (temporary file in the same folder, then rename)."""
    lines = [
        "# Site calibration written by `idv eval calibrate --write`; read by the node at start.",
        f"schema = {SCHEMA}",
        f"recognizer = {_toml_value(site.recognizer)}",
        f"written_at = {_toml_value(site.written_at)}",
        f"rule = {_toml_value(site.rule)}",
        "",
        "[thresholds]",
        *(f'"{level}" = {_toml_value(value)}' for level, value in site.thresholds.items()),
        "",
        "[shipped]",
        *(f'"{level}" = {_toml_value(value)}' for level, value in site.shipped.items()),
        "",
        "[sample]",
        *(f"{key} = {_toml_value(value)}" for key, value in site.sample.__dict__.items()),
    ]
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=".site-thresholds-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("\n".join(lines) + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    if load_site_thresholds(path) is None:  # pragma: no cover - just written
        raise SiteThresholdsError(f"site thresholds {path}: could not be read back")


@dataclass(frozen=True)
class EffectiveThreshold:
    references: ReferenceThresholds  # per number of fused reference photos
    source: str  # "manifest" | "site" | "recognizer_threshold"
    site: SiteThresholds | None

    @property
    def threshold(self) -> float:
        """The one-photo threshold (the main case: one registered ID photo)."""
        return self.references.single


def effective_threshold(shipped: ReferenceThresholds | float, shipped_source: str, level: str, recognizer: str,
                        site: SiteThresholds | None) -> EffectiveThreshold:
    """The site's threshold for `level` when it has one for this recognizer (one photo; fused
    references keep the shipped increments, see the module doc), else the shipped ones."""
    if not isinstance(shipped, ReferenceThresholds):
        shipped = ReferenceThresholds((float(shipped),))
    if site is None:
        return EffectiveThreshold(shipped, shipped_source, None)
    if site.recognizer != recognizer:
        raise SiteThresholdsError(
            f"site thresholds were calibrated for recognizer {site.recognizer}, but this node loads {recognizer}: "
            "run `idv eval calibrate DIR --write` again with the current models, or remove the file")
    if level not in site.thresholds:
        return EffectiveThreshold(shipped, shipped_source, site)
    return EffectiveThreshold(shipped.shifted(site.thresholds[level]), "site", site)


def shipped_thresholds(manifest: Manifest, models: ModelSettings) -> ReferenceThresholds:
    """The configured level's thresholds per number of reference photos before any site file: the
    manifest's for its recognizer; an operator's recognizer file has one threshold for every m."""
    if models.recognizer_file is not None:
        return ReferenceThresholds((float(models.recognizer_threshold),))
    entry = manifest.entry(manifest.pack(models.pack)["recognizer"])
    try:
        return from_manifest(entry.thresholds, models.security_level)
    except (KeyError, TypeError, ValueError) as exc:
        raise SiteThresholdsError(f"{entry.name}: no usable thresholds for {models.security_level} in "
                                  f"{manifest.path} ({exc})") from None


def resolve_threshold(site_thresholds_file: Path | None, data_dir: Path, level: str,
                      shipped: ReferenceThresholds | float, shipped_source: str,
                      recognizer: str) -> EffectiveThreshold:
    """What the node compares at: the site file's threshold for `level` when present (see module doc)."""
    site = load_site_thresholds(site_thresholds_path(site_thresholds_file, data_dir))
    return effective_threshold(shipped, shipped_source, level, recognizer, site)


def start_record(effective: EffectiveThreshold, level: str) -> dict[str, object]:
    """The audit record written at node start when a site calibration is in force (counts and digest only)."""
    site = effective.site
    assert site is not None
    return {
        "event": "site_thresholds",
        "security_level": level,
        "threshold_source": effective.source,
        "threshold": round(effective.threshold, 4),
        "threshold_by_references": effective.references.shown(),
        "recognizer": site.recognizer,
        "written_at": site.written_at,
        "sample_digest": site.sample.digest,
        "sample_people": site.sample.people,
        "sample_images": site.sample.images,
        "impostor_pairs": site.sample.impostor_pairs,
        "genuine_pairs": site.sample.genuine_pairs,
    }
