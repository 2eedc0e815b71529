"""benchmarks/accuracy/paired_decisions.py: every burst through two pipelines, decisions compared pair by pair.

A few of attacks_eval's own presentations (a recorded-video replay, passive and challenged, and the
person's bona fide passive burst) on real models and frames: the pooled and the sequential pipeline
(tests/test_burst_parallel.py) must agree on every pair, and the bench must see the reference's
answers; a candidate whose quality gate refuses every frame must differ on every pair.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

from idv.config import load_settings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def paired():
    spec = importlib.util.spec_from_file_location("paired_decisions",
                                                  REPO / "benchmarks" / "accuracy" / "paired_decisions.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["paired_decisions"] = module
    spec.loader.exec_module(module)
    return module


def _run(paired, testdata: Path, model_dir: Path, model_set, tmp_path: Path, reference: dict, candidate: dict):
    import attacks_eval  # importable once paired_decisions put benchmarks/accuracy on the path

    base = {**attacks_eval.bench_overrides(), "model_dir": model_dir,
            "model_manifest": os.environ.get("IDV_MODEL_MANIFEST")}
    sides = [load_settings(environ={}, overrides={**base, **extra, "data_dir": tmp_path / name})
             for name, extra in (("reference", reference), ("candidate", candidate))]
    with paired.paired_bench(*sides, seed=14, models=model_set) as bench:
        fps, frames = attacks_eval.read_video(testdata / "video" / "live_d12.mp4")
        id_number = bench.enroll("live_d12", frames[0])
        assert id_number is not None
        # One passive and one challenged (24-frame) replay of the clip, exactly as attacks_eval sends them.
        attacks_eval.run_video_attacks(bench, "recorded_video_replay", "live_d12", id_number, fps, frames[1:], 1, 0)
        bench.record("bona_fide", "live", "passive_only", "live_d12",
                     bench.passive(id_number, attacks_eval.played(frames, fps, 1.0, attacks_eval.PASSIVE_FRAMES)))
    return bench.rows, paired.compare(bench.rows, bench.service.enrolments)


def test_pooled_and_sequential_pipelines_agree_on_every_pair(paired, testdata, model_dir, model_set, tmp_path) -> None:
    rows, result = _run(paired, testdata, model_dir, model_set, tmp_path,
                        {"serving__burst_parallel": True}, {"serving__burst_parallel": False})
    assert [r["policy"] for r in rows] == ["passive_only", "default", "passive_only"]
    assert result["pairs"] == 3 and all("candidate_reason" in r for r in rows)
    assert result["differences"] == 0 and result["agree"], result["differing"]
    # The bench saw the reference's answers, so its table is the reference side's.
    assert all(r["true_reason"] == r["reference_reason"] for r in rows)
    assert result["reference_table"] == result["candidate_table"]
    # The person's own burst verified on both sides: the candidate compared against intact templates
    # (the reference zeroes a single-photo reference it was handed).
    assert rows[-1]["reference_reason"] == rows[-1]["candidate_reason"] == "VERIFIED"
    assert result["by_policy"]["default"]["recorded_video_replay"] == {"pairs": 1, "differ": 0, "not_evaluated": 0}


def test_a_candidate_that_refuses_every_frame_differs_on_every_pair(paired, testdata, model_dir, model_set,
                                                                     tmp_path) -> None:
    rows, result = _run(paired, testdata, model_dir, model_set, tmp_path, {}, {"quality__min_sharpness": 1e6})
    assert result["pairs"] == result["differences"] == 3 and not result["agree"]
    assert {r["candidate_reason"] for r in rows} == {"LOW_QUALITY"}
    assert "LOW_QUALITY" not in {r["reference_reason"] for r in rows}
    assert {d["species"] for d in result["differing"]} == {"recorded_video_replay", "live"}
    assert result["candidate_table"]["passive_only"]["bpcer"]["rejected"] == 1
