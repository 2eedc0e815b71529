"""The benchmark's inputs: an enrolled reference and live probe frames, as the JPEG bytes a terminal sends.

NUAA (../shared/testdata/nuaa): 640x480 webcam frames. The enrolled reference is
a frame of the subject's printed ID-style portrait, the probes are live frames of
the same subject - the ID-photo-vs-live case the service exists for. The
reference frame is never used as a probe.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A valid GB 11643 number (check digit correct) and a name for the enrolled subject;
# the same values the gRPC tests use, so a reader can replay a request by hand.
ID_NUMBER = "11010519491231002X"
NAME = "张三"
SUBJECT = "0001"


def shared_dir() -> Path:
    return Path(os.environ.get("IDV_SHARED_DIR", REPO.parent / "shared")).resolve()


def nuaa_dir() -> Path:
    path = shared_dir() / "testdata" / "nuaa"
    if not path.is_dir():
        raise FileNotFoundError(f"NUAA frames not found at {path}; set IDV_SHARED_DIR")
    return path


def _sequences(kind: str, subject: str) -> dict[str, list[Path]]:
    """Frames of each capture sequence (`ID_glasses_pos_session`), in frame order."""
    sequences: dict[str, list[Path]] = {}
    for path in sorted((nuaa_dir() / kind / subject).glob("*.jpg")):
        prefix, _, _ = path.stem.rpartition("_")
        sequences.setdefault(prefix, []).append(path)
    for frames in sequences.values():
        frames.sort(key=lambda p: int(p.stem.rpartition("_")[2]))
    return sequences


@dataclass(frozen=True)
class Probe:
    """One enrolled reference and one burst of live frames of the same person."""

    reference_path: Path
    frame_paths: tuple[Path, ...]

    @property
    def reference(self) -> bytes:
        return self.reference_path.read_bytes()

    def frames(self, count: int) -> list[bytes]:
        if count > len(self.frame_paths):
            raise ValueError(f"the probe has {len(self.frame_paths)} frames, {count} were asked for")
        return [p.read_bytes() for p in self.frame_paths[:count]]


def with_serial(frames: list[bytes] | tuple[bytes, ...], serial: str) -> list[bytes]:
    """The same JPEG frames, made byte-unique by a comment segment (COM, 0xFFFE) after SOI.

    Why: the node remembers a keyed digest of every accepted frame's bytes and fails a request
    that repeats one (issue 14's replay check, on by default). A benchmark that resent one burst
    would measure that refusal, not a verification. The pixels (and so every decision and every
    stage's cost) are unchanged; the check itself stays on and is part of what is measured.
    """
    tag = b"idv-bench " + serial.encode("ascii")
    segment = b"\xff\xfe" + (len(tag) + 2).to_bytes(2, "big") + tag
    out = []
    for frame in frames:
        if frame[:2] != b"\xff\xd8":
            raise ValueError("with_serial handles JPEG frames only")
        out.append(frame[:2] + segment + frame[2:])
    return out


def probe(subject: str = SUBJECT, frames: int = 5, step: int = 3) -> Probe:
    """The first printed frame as reference; every `step`-th frame of the first live sequence as the burst
    (as the gRPC tests do: adjacent frames are near-duplicates, a terminal's burst spans ~0.5 s)."""
    reference = next(iter(_sequences("print", subject).values()))[0]
    sequence = next(iter(_sequences("live", subject).values()))
    burst = tuple(sequence[: frames * step : step])
    return Probe(reference, burst)


def stage_bursts(sequences_per_subject: int = 2, frames: int = 5, step: int = 3) -> list[tuple[Path, ...]]:
    """Real bursts (as `probe` cuts them) from the first sequences of every subject, so stage timings
    see varied faces and lighting and the liveness cues see genuine multi-frame motion."""
    bursts: list[tuple[Path, ...]] = []
    for subject_dir in sorted((nuaa_dir() / "live").iterdir()):
        sequences = list(_sequences("live", subject_dir.name).values())[:sequences_per_subject]
        bursts.extend(tuple(seq[: frames * step : step]) for seq in sequences if len(seq) >= frames * step)
    return bursts
