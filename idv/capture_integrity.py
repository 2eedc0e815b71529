"""Capture integrity (issue 14): a frame already presented, or a burst of one repeated still, is no capture.

- Replay: a keyed digest (HMAC-SHA256 of the frame's bytes under a key derived from the node's
  pseudonymisation key: never pixels, unreadable and unlinkable without the key) of every frame
  of every Verify that got past validation and its challenge is remembered in the shared state
  for the challenge lifetime plus a margin. A frame seen before, or twice in one request, fails
  the request. A frame is only useful to an attacker with a live challenge, so remembering it
  longer than a challenge lives protects nothing more.
- Near-duplicates within one burst (a still repeated or re-encoded): liveness.duplicates, run by
  the pipeline on thumbnails it zeroes afterwards.

- Attested terminals: a capture signed by a registered terminal's Ed25519 key
  (idv.security.terminals), checked before any frame is decoded; required per purpose by
  `attestation_required_for`.

All answer LIVENESS_FAILED, the reason a person with bad luck sees; the audit has the true reason.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from idv.state.base import SeenFrameStore
from liveness.duplicates import DuplicateConfig

_DIGEST_KEY_LABEL = b"idv frame digest v1"


@dataclass(frozen=True)
class IntegritySettings:
    """The `[integrity]` settings section."""

    # Refuse frames presented before (production refuses false; tests that send one burst several
    # times turn it off).
    replay_check: bool = True
    # Frame digests are kept this long after the challenge lifetime (late uploads, clock skew).
    replay_margin_seconds: float = 300.0
    # Frames of one burst closer than this (mean absolute grey level of face thumbnails) are one
    # picture repeated: liveness.duplicates.DuplicateConfig, where the measured default lives.
    near_duplicate_max_difference: float = DuplicateConfig.max_difference
    # Purposes (TOML list or comma-separated) whose captures must be signed by a terminal registered
    # with `idv keys add-terminal` (idv.security.terminals); empty: a signature is checked when sent
    # and never required. A missing or invalid signature answers LIVENESS_FAILED.
    attestation_required_for: tuple[str, ...] = ()

    @property
    def attestation_purposes(self) -> frozenset[str]:
        return frozenset(p.strip().upper() for p in self.attestation_required_for)

    def duplicates(self) -> DuplicateConfig:
        return DuplicateConfig(max_difference=self.near_duplicate_max_difference)

    def problems(self) -> list[str]:
        problems: list[str] = []
        if self.replay_margin_seconds < 0:
            problems.append("integrity.replay_margin_seconds must not be negative")
        problems.extend(self.duplicates().problems())
        unknown = sorted(self.attestation_purposes - {"REGISTRATION", "LICENCE_RENEWAL", "CHECK_IN"})
        if unknown:
            problems.append(f"integrity.attestation_required_for names unknown purposes {unknown}")
        return problems


def frame_digest_key(pseudonym_key: bytes) -> bytes:
    """A key of its own for frame digests, derived from the pseudonymisation key (one secret to
    provision; a digest cannot be confused with an ID pseudonym)."""
    return hmac.new(pseudonym_key, _DIGEST_KEY_LABEL, hashlib.sha256).digest()


class ReplayGuard:
    def __init__(self, store: SeenFrameStore, digest_key: bytes, ttl_seconds: float):
        self._store = store
        self._key = digest_key
        self._ttl = ttl_seconds

    def digest(self, frame: bytes | bytearray | memoryview) -> str:
        return hmac.new(self._key, bytes(frame), hashlib.sha256).hexdigest()[:40]

    def replayed(self, frames: Sequence[bytes | bytearray | memoryview]) -> bool:
        """Remember every frame; True if one was seen before (or appears twice in this burst)."""
        digests = [self.digest(frame) for frame in frames]
        repeated_here = len(set(digests)) < len(digests)
        seen_before = self._store.remember(digests, self._ttl)
        return repeated_here or seen_before
