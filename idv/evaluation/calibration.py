"""Choose the service's per-security-level thresholds and record them in the model manifest.

Rule (also written next to the numbers in the manifest):

1. For each security level (target FMR) and each calibration score set, take the
   lowest threshold whose FMR on that set's impostors is <= target
   (`metrics.threshold_for_fmr`, PASS iff cosine >= threshold).
2. Only sets with at least 3/FMR impostor comparisons vote for a level
   (`ScoreSet.supports`); the set names that could not vote are recorded.
3. Take the highest (strictest) supported threshold: the service must meet the
   target on every population it was measured on, East-Asian ID-vs-live included.
4. A stricter level never gets a lower threshold than a laxer one.
5. Round up to 4 decimals (never laxer than the exact value).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from idv.evaluation.metrics import ScoreSet, ceil_to_decimals, threshold_for_fmr

SECURITY_LEVELS: tuple[tuple[str, float], ...] = (("fmr_1e-3", 1e-3), ("fmr_1e-4", 1e-4), ("fmr_1e-5", 1e-5))
DECIMALS = 4
RULE = (
    "per level: the highest threshold meeting the target FMR on any calibration set with "
    ">= 3/FMR impostor comparisons (LFW all-vs-all; NUAA ID-print vs live, every burst size); "
    "never below a laxer level's; rounded up to 4 decimals; PASS iff cosine >= threshold"
)


class CalibrationError(RuntimeError):
    """No calibration data supports a requested level, or the manifest cannot be updated safely."""


@dataclass(frozen=True)
class Candidate:
    source: str
    threshold: float
    n_impostor: int
    supported: bool


@dataclass(frozen=True)
class LevelThreshold:
    level: str
    target_fmr: float
    threshold: float  # what the service uses: rounded up, monotone across levels
    exact: float  # the strictest supported candidate, before rounding and monotonicity
    decided_by: str
    candidates: tuple[Candidate, ...]


def choose_thresholds(score_sets: dict[str, ScoreSet],
                      lower_bounds: dict[str, tuple[float, str]] | None = None) -> tuple[LevelThreshold, ...]:
    """The rule above over `score_sets`. `lower_bounds` (level -> (threshold, why)): a level never
    gets less (fused references: never laxer than fewer photos'); a level none of the sets
    supports takes its bound."""
    chosen: list[LevelThreshold] = []
    floor = float("-inf")
    for level, target in SECURITY_LEVELS:
        candidates = tuple(
            Candidate(name, threshold_for_fmr(s.impostor, target), s.n_impostor, s.supports(target))
            for name, s in score_sets.items()
        )
        supported = [c for c in candidates if c.supported]
        bound = (lower_bounds or {}).get(level)
        if not supported and bound is None:
            raise CalibrationError(f"{level}: no calibration set has the {3 / target:.0f} impostor comparisons it needs")
        if supported:
            strictest = max(supported, key=lambda c: c.threshold)
            decided_by, value, exact = strictest.source, strictest.threshold, strictest.threshold
        else:
            decided_by, value, exact = "", float("-inf"), float("-inf")
        if bound is not None and bound[0] > value:
            value, exact, decided_by = bound[0], bound[0], bound[1]
        if value < floor:
            value, decided_by = floor, f"{chosen[-1].decided_by} (kept from {chosen[-1].level})"
        floor = value
        chosen.append(
            LevelThreshold(
                level=level,
                target_fmr=target,
                threshold=ceil_to_decimals(value, DECIMALS),
                exact=exact,
                decided_by=decided_by,
                candidates=candidates,
            )
        )
    return tuple(chosen)


def choose_thresholds_by_references(
    sets_by_m: dict[int, dict[str, ScoreSet]],
) -> dict[int, tuple[LevelThreshold, ...]]:
    """Per number m of fused reference photos (1, 2, ...: the last one stands for every larger m),
    the rule over the sets measured with m references, each level never below m - 1's threshold:
    fusing raises impostor scores in every population measured, and an m whose sets cannot
    support a level (too few impostor pairs) must not fall back to a laxer population's value."""
    chosen: dict[int, tuple[LevelThreshold, ...]] = {}
    for m in sorted(sets_by_m):
        fewer = max((k for k in chosen if k < m), default=None)
        bounds = {lv.level: (lv.threshold, f"m={fewer}'s threshold") for lv in chosen[fewer]} if fewer else None
        chosen[m] = choose_thresholds(sets_by_m[m], bounds)
    return chosen


# --- manifest update -------------------------------------------------------------------


def _table_header(name: str) -> re.Pattern[str]:
    dotted = r"\s*\.\s*".join(re.escape(part) for part in name.split("."))
    return re.compile(rf"^\s*\[\s*{dotted}\s*\]\s*(#.*)?$")


_ANY_HEADER = re.compile(r"^\s*\[")


def _render(table: str, values: dict[str, float | str], comment: str) -> list[str]:
    lines = [f"[{table}]\n"] + [f"# {text}\n" for text in comment.splitlines()]
    for key, value in values.items():
        # json.dumps writes a TOML basic string for plain text; floats as fixed decimals.
        rendered = f"{value:.{DECIMALS}f}" if isinstance(value, float) else json.dumps(value, ensure_ascii=True)
        lines.append(f"{json.dumps(key)} = {rendered}\n")
    return lines


def render_thresholds_table(
    text: str, model: str, values: dict[str, float | str], comment: str = ""
) -> str:
    """`text` (a manifest) with `[models.<model>.thresholds]` replaced or added; nothing else changes.

    The table is written as one block without blank lines (header, comment lines,
    keys); an existing block ends at the first blank line or table header. A new
    block goes right after the last key line of `[models.<model>]`, before any
    comment that introduces the next table.
    """
    table = f"models.{model}.thresholds"
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    block = _render(table, values, comment)
    existing = [i for i, line in enumerate(lines) if _table_header(table).match(line)]
    if len(existing) > 1:
        raise CalibrationError(f"[{table}] appears {len(existing)} times")
    if existing:
        start = end = existing[0]
        end += 1
        while end < len(lines) and lines[end].strip() and not _ANY_HEADER.match(lines[end]):
            end += 1
        new_lines = lines[:start] + block + lines[end:]
    else:
        headers = [i for i, line in enumerate(lines) if _table_header(f"models.{model}").match(line)]
        if len(headers) != 1:
            raise CalibrationError(f"[models.{model}] appears {len(headers)} times in the manifest")
        section_end = next(
            (i for i in range(headers[0] + 1, len(lines)) if _ANY_HEADER.match(lines[i])), len(lines)
        )
        last_key = max(
            i for i in range(headers[0], section_end) if lines[i].strip() and not lines[i].lstrip().startswith("#")
        )
        new_lines = lines[: last_key + 1] + ["\n"] + block + lines[last_key + 1 :]
    new_text = "".join(new_lines)
    _check_only_thresholds_changed(text, new_text, model, values)
    return new_text


def _check_only_thresholds_changed(old: str, new: str, model: str, values: dict[str, float | str]) -> None:
    before, after = tomllib.loads(old), tomllib.loads(new)
    written = after["models"][model].pop("thresholds", None)
    before["models"][model].pop("thresholds", None)
    if before != after:
        raise CalibrationError("updating the thresholds table would change other manifest content; refusing")
    expected = {k: round(v, DECIMALS) if isinstance(v, float) else v for k, v in values.items()}
    if written != expected:
        raise CalibrationError(f"thresholds table reads back as {written}, expected {expected}")


def write_manifest_thresholds(path: Path, model: str, values: dict[str, float | str], comment: str = "") -> None:
    """Edit the manifest in place: read it now, change only the thresholds table, replace atomically."""
    text = path.read_text(encoding="utf-8")
    new_text = render_thresholds_table(text, model, values, comment)
    if new_text == text:
        return
    handle, temporary = tempfile.mkstemp(prefix=".manifest-", suffix=".toml", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(new_text)
        os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
