"""A security level's threshold per number of fused reference photos (issue 15).

The node compares a probe with the renormalised mean of the identity's m enrolled
templates (idv/face/reference_fusion.py). Fusing m photos raises impostor similarity
(a mean template sits closer to every face than one photo does; measured in
benchmarks/results/demographics.md for m = 2 and 3), so one threshold for all m is
either too lax for fused references or too strict for the common case, one registered
ID photo. The manifest therefore holds, per level, "<level>" for m = 1 and
"<level>@m<k>" for k = 2..K; the last one holds for every m >= K (the largest m
calibrated). The store keeps one template row per enrolled photo, so m is the row
count; an m the node cannot know gets the largest m's threshold, the strictest.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass


def level_key(level: str, m: int) -> str:
    """The manifest key of `level`'s threshold for references fused from m photos."""
    if m < 1:
        raise ValueError(f"a reference is fused from m >= 1 photos, got {m}")
    return level if m == 1 else f"{level}@m{m}"


@dataclass(frozen=True)
class ReferenceThresholds:
    """One level's thresholds: by_m[0] for one photo, by_m[i] for i+1 photos, the last for more."""

    by_m: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.by_m:
            raise ValueError("a level needs at least the one-photo threshold")

    def for_references(self, m: int | None) -> float:
        """The threshold for a reference fused from m templates; None (not known): the strictest."""
        if m is None or m < 1:
            return self.strictest
        return self.by_m[min(m, len(self.by_m)) - 1]

    @property
    def single(self) -> float:
        """The one-photo threshold (the main case: one registered ID photo)."""
        return self.by_m[0]

    @property
    def strictest(self) -> float:
        return max(self.by_m)

    def shown(self) -> dict[str, float]:
        """{"1": t1, "2": t2, "3+": t3}: for `idv config show`, logs and the audit record."""
        last = len(self.by_m)
        return {(f"{m}+" if m == last and last > 1 else str(m)): round(t, 4) for m, t in enumerate(self.by_m, 1)}

    def shifted(self, single: float) -> ReferenceThresholds:
        """These thresholds with the one-photo one replaced by `single` and the same increments for
        fused references (a site calibration measures single photos; see idv/site_thresholds.py)."""
        base = self.by_m[0]
        return ReferenceThresholds(tuple(single + max(t - base, 0.0) for t in self.by_m))


def from_manifest(thresholds: Mapping[str, object], level: str) -> ReferenceThresholds:
    """`level`'s thresholds from a manifest's `[models.<recognizer>.thresholds]` table: "<level>",
    then "<level>@m2", "<level>@m3", ... while present. KeyError when the level is missing,
    ValueError when a value is not a number in (0, 1) or a fused one is below the one-photo one."""
    values = [float(thresholds[level])]  # type: ignore[arg-type]
    m = 2
    while level_key(level, m) in thresholds:
        values.append(float(thresholds[level_key(level, m)]))  # type: ignore[arg-type]
        m += 1
    if not all(0.0 < v < 1.0 for v in values):
        raise ValueError(f"{level}: thresholds must be in (0, 1), got {values}")
    # The calibration rule keeps them non-decreasing in m: a fused reference is never held to a
    # laxer threshold than one photo. A table that breaks it was edited by hand.
    if any(b < a for a, b in zip(values, values[1:])):
        raise ValueError(f"{level}: thresholds must not decrease with the number of references, got {values}")
    return ReferenceThresholds(tuple(values))
