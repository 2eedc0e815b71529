"""Active challenge actions on the shared live clips: detection and false-accept rates.

Reads the labelled segments in action_segments.toml, cuts a burst of up to 24
evenly spaced frames from each, and checks with liveness.actions.detect_actions:

* each true action, requested alone, passes (detection rate per action);
* each action labelled absent, requested alone, fails (false-accept rate);
* segments with two actions pass in order and fail reversed;
* still segments fail every single-action challenge.

Also sweeps each action's threshold so the chosen value can be judged.

    .venv/bin/python benchmarks/accuracy/actions_eval.py [--mirror /work/shared/models]
writes benchmarks/results/actions.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
import tomllib
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from idv.models.manifest import load_manifest  # noqa: E402
from idv.models.model_set import open_detector, open_facemesh  # noqa: E402
from idv.models.pull import pull_models  # noqa: E402
from liveness.actions import Action, ActionConfig, FrameSignals, detect_actions  # noqa: E402
from liveness.video_signals import signals_for_video  # noqa: E402

SEGMENTS = Path(__file__).with_name("action_segments.toml")
BURST = 24


def load_segments(path: Path = SEGMENTS) -> list[dict]:
    with path.open("rb") as fh:
        return tomllib.load(fh)["segments"]


def burst_indices(start: int, end: int, size: int = BURST) -> list[int]:
    """Up to `size` evenly spaced frame indices in [start, end]."""
    return sorted(set(np.round(np.linspace(start, end, min(size, end - start + 1))).astype(int).tolist()))


def cut(signals: list[FrameSignals], start: int, end: int) -> list[FrameSignals]:
    return [signals[i] for i in burst_indices(start, min(end, len(signals) - 1))]


def evaluate(segments: list[dict], clip_signals: dict[str, list[FrameSignals]], config: ActionConfig) -> dict:
    hits: dict[str, list[int]] = defaultdict(list)
    false_accepts: dict[str, list[int]] = defaultdict(list)
    order: list[dict] = []
    per_segment = []
    for seg in segments:
        burst = cut(clip_signals[seg["clip"]], seg["start"], seg["end"])
        actions = [Action(a) for a in seg["actions"]]
        row = {"id": seg["id"], "detected": {}, "absent_accepted": {}}
        for action in actions:
            ok = detect_actions(burst, [action], config).passed
            hits[action.value].append(int(ok))
            row["detected"][action.value] = ok
        for action in (Action(a) for a in seg["absent"]):
            ok = detect_actions(burst, [action], config).passed
            false_accepts[action.value].append(int(ok))
            row["absent_accepted"][action.value] = ok
        if len(actions) >= 2:
            forward = detect_actions(burst, actions, config).passed
            backward = detect_actions(burst, actions[::-1], config).passed
            order.append({"id": seg["id"], "in_order_passes": forward, "reversed_fails": not backward})
        per_segment.append(row)

    def rate(values: list[int]) -> dict:
        return {"rate": round(sum(values) / len(values), 3) if values else None, "n": len(values)}

    return {
        "detection": {a.value: rate(hits[a.value]) for a in Action},
        "false_accept": {a.value: rate(false_accepts[a.value]) for a in Action},
        "order": order,
        "segments": per_segment,
    }


SWEEPS = {
    "turn_yaw_delta": (Action.TURN_LEFT, Action.TURN_RIGHT, [0.06, 0.08, 0.10, 0.12, 0.15, 0.18, 0.22]),
    "nod_pitch_delta": (Action.NOD, None, [0.06, 0.08, 0.10, 0.12, 0.15, 0.18]),
    "blink_ratio": (Action.BLINK, None, [0.85, 0.80, 0.75, 0.70, 0.65, 0.60, 0.55]),
    "mouth_open_delta": (Action.OPEN_MOUTH, None, [0.06, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25]),
}


def sweep(segments: list[dict], clip_signals: dict[str, list[FrameSignals]], base: ActionConfig) -> dict:
    out: dict[str, list[dict]] = {}
    for name, (first, second, values) in SWEEPS.items():
        actions = {first.value} | ({second.value} if second else set())
        rows = []
        for value in values:
            result = evaluate(segments, clip_signals, dataclasses.replace(base, **{name: value}))
            det = [result["detection"][a] for a in actions]
            fa = [result["false_accept"][a] for a in actions]
            hit = sum((d["rate"] or 0) * d["n"] for d in det)
            n_det = sum(d["n"] for d in det)
            fal = sum((f["rate"] or 0) * f["n"] for f in fa)
            n_fa = sum(f["n"] for f in fa)
            rows.append({
                "value": value,
                "detection": round(hit / n_det, 3) if n_det else None,
                "false_accept": round(fal / n_fa, 3) if n_fa else None,
            })
        out[name] = rows
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "testdata" / "video")
    parser.add_argument("--mirror", type=Path, default=ROOT.parent / "shared" / "models")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/idv-models-eval"))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "actions.json")
    args = parser.parse_args()

    manifest = load_manifest()
    pull_models(manifest, ["yunet", "facemesh"], args.cache, mirror=args.mirror, allow_network=False)
    detector = open_detector(manifest, "yunet", args.cache)
    facemesh = open_facemesh(manifest, args.cache)

    segments = load_segments()
    clip_signals: dict[str, list[FrameSignals]] = {}
    frames = 0
    started = time.perf_counter()
    for clip in sorted({s["clip"] for s in segments}):
        clip_signals[clip] = signals_for_video(args.videos / clip, detector, facemesh)
        frames += len(clip_signals[clip])
    per_frame_ms = (time.perf_counter() - started) / frames * 1000.0

    config = ActionConfig()
    result = evaluate(segments, clip_signals, config)
    report = {
        "what": "active challenge actions on labelled segments of the shared live clips",
        "segments_file": str(SEGMENTS.relative_to(ROOT)),
        "burst": f"up to {BURST} frames evenly spaced over each segment (native 25-30 fps clips)",
        "thresholds": dataclasses.asdict(config),
        **result,
        "threshold_sweeps": sweep(segments, clip_signals, config),
        "latency_ms_per_frame_decode_yunet_facemesh": round(per_frame_ms, 1),
        "machine": f"{platform.machine()}, {platform.python_version()}",
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name in ("detection", "false_accept"):
        print(name, {a: v["rate"] for a, v in result[name].items()})
    print("order", result["order"])
    print(json.dumps(report["threshold_sweeps"]))


if __name__ == "__main__":
    main()
