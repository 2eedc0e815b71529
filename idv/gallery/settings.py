"""The `[gallery]` settings section: 1:N screening of enrolments and verifications."""

from __future__ import annotations

from dataclasses import dataclass

from idv.gallery.index import GalleryConfig


@dataclass(frozen=True)
class GallerySettings:
    # An enrolment whose face matches another identity at or above duplicate_threshold
    # (0: the recognizer's calibrated fmr_1e-5 threshold) is refused (ALREADY_EXISTS,
    # DUPLICATE_FACE), or stored and flagged for review; off: no gallery for enrolment.
    duplicate_policy: str = "refuse"  # refuse | flag | off
    duplicate_threshold: float = 0.0
    # Verify fails IMPERSONATION_SUSPECTED when the live face, although matching the
    # claimed identity, matches another enrolled identity at or above duplicate_threshold
    # and by at least impersonation_margin more than the claimed one.
    impersonation_check: bool = False
    impersonation_margin: float = 0.1
    # Exact search up to this many templates; above, an IVF index (nprobe lists searched).
    # Exact is the default up to 1M: an approximate index misses near-threshold duplicates
    # (recall measured in benchmarks/results/scale.json, see docs/scaling.md).
    exact_max: int = GalleryConfig.exact_max
    nprobe: int = GalleryConfig.nprobe
    # Other replicas' enrolments reach this replica's gallery within this period.
    refresh_seconds: float = 2.0

    @property
    def enabled(self) -> bool:
        return self.duplicate_policy != "off" or self.impersonation_check

    def index_config(self, dimension: int) -> GalleryConfig:
        return GalleryConfig(dimension, exact_max=self.exact_max, nprobe=self.nprobe)

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.duplicate_policy not in ("refuse", "flag", "off"):
            problems.append(f"gallery.duplicate_policy must be refuse, flag or off, not {self.duplicate_policy!r}")
        if not (0 <= self.duplicate_threshold < 1):
            problems.append("gallery.duplicate_threshold must be in [0, 1) (0: the manifest's fmr_1e-5 threshold)")
        if not (0 <= self.impersonation_margin < 1):
            problems.append("gallery.impersonation_margin must be in [0, 1)")
        if self.exact_max < 1 or self.nprobe < 1 or self.refresh_seconds <= 0:
            problems.append("gallery.exact_max and gallery.nprobe must be at least 1, gallery.refresh_seconds positive")
        return problems
