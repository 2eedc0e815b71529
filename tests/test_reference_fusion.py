"""Several reference photos are compared as one fused template (issue 15)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from idv.cli import main as cli
from idv.evaluation.calibration import write_manifest_thresholds
from idv.face.reference_fusion import fuse_references
from idv.models.manifest import DEFAULT_MANIFEST, load_manifest
from idv.reference_thresholds import from_manifest, level_key
from idv.pipeline import Budget
from idv.service import EnrollCommand, VerifyCommand
from idv.verdicts import Purpose, TrueReason
from tests.conftest import ID_SUBJECT_1, ID_SUBJECT_2, nuaa_frames, nuaa_sequences, start_node

NAME = "张三"


def test_one_template_is_compared_as_is_and_several_as_their_renormalised_mean() -> None:
    one = np.array([[0.6, 0.8]], dtype=np.float32)
    assert fuse_references(one) is one
    two = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    fused = fuse_references(two)
    assert fused.shape == (1, 2) and np.allclose(fused, [[2**-0.5, 2**-0.5]])
    assert np.isclose(np.linalg.norm(fused), 1.0)
    with pytest.raises(ValueError):
        fuse_references(np.zeros((0, 128), dtype=np.float32))


def test_a_score_against_m_references_is_one_comparison_not_the_best_of_m() -> None:
    # An impostor probe close to one of three unrelated references: max-over-m would pass it at
    # 0.99; the fused template gives it one chance, scored against the mean (about 0.7).
    rng = np.random.default_rng(15)
    references = rng.standard_normal((3, 128)).astype(np.float32)
    references /= np.linalg.norm(references, axis=1, keepdims=True)
    probe = references[0] * 0.9 + 0.1 * references[1]
    probe /= np.linalg.norm(probe)
    best_of_m = float(np.max(references @ probe))
    fused = float((fuse_references(references) @ probe)[0])
    assert best_of_m > 0.9 and fused < best_of_m - 0.2


def test_genuine_subject_passes_with_three_enrolled_photos(node_settings, assemble, testdata) -> None:
    service = assemble(node_settings).service
    prints = nuaa_frames(testdata, "print", "0001")
    references = tuple(p.read_bytes() for p in (prints[0], prints[len(prints) // 2], prints[-1]))
    service.enroll(EnrollCommand(ID_SUBJECT_1, "张三", references), Budget(30))
    sequence = next(iter(nuaa_sequences(testdata, "live", "0001").values()))
    burst = tuple(p.read_bytes() for p in sequence[:15:3])
    outcome = service.verify(VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, burst), Budget(30))
    assert outcome.true_reason is TrueReason.VERIFIED


# --- the threshold per number of reference photos (idv/reference_thresholds.py) ----------------


def test_manifest_thresholds_per_number_of_reference_photos() -> None:
    table = {"fmr_1e-4": 0.49, "fmr_1e-4@m2": 0.495, "fmr_1e-4@m3": 0.50, "fmr_1e-3": 0.40, "rule": "text"}
    t = from_manifest(table, "fmr_1e-4")
    assert [t.for_references(m) for m in (1, 2, 3, 4, 8)] == [0.49, 0.495, 0.50, 0.50, 0.50]
    assert t.for_references(None) == t.strictest == 0.50  # unknown m: the safe side
    assert t.shown() == {"1": 0.49, "2": 0.495, "3+": 0.50}
    assert from_manifest(table, "fmr_1e-3").by_m == (0.40,)  # no per-m keys: one threshold for every m
    assert from_manifest(table, "fmr_1e-3").shown() == {"1": 0.40}
    # A site threshold for one photo keeps the shipped increments for fused references.
    assert t.shifted(0.52).by_m == pytest.approx((0.52, 0.525, 0.53))
    with pytest.raises(ValueError):
        from_manifest({"fmr_1e-4": 0.5, "fmr_1e-4@m2": 0.4}, "fmr_1e-4")  # a fused reference laxer than one photo
    with pytest.raises(KeyError):
        from_manifest(table, "fmr_1e-5")
    assert level_key("fmr_1e-4", 1) == "fmr_1e-4" and level_key("fmr_1e-4", 3) == "fmr_1e-4@m3"


def test_shipped_manifest_has_a_threshold_per_level_and_number_of_photos() -> None:
    entry = load_manifest().entry("sface_fp32")
    for level in ("fmr_1e-3", "fmr_1e-4", "fmr_1e-5"):
        t = from_manifest(entry.thresholds, level)
        assert len(t.by_m) == 3 and t.by_m == tuple(sorted(t.by_m))


def _manifest_with(path: Path, single: float, fused: float) -> Path:
    """The served manifest with every level's threshold set to `single` for one photo and `fused`
    for fused references (nothing else changes: write_manifest_thresholds checks it)."""
    path.write_text(Path(os.environ.get("IDV_MODEL_MANIFEST") or DEFAULT_MANIFEST).read_text())
    values: dict[str, float | str] = {}
    for level in ("fmr_1e-3", "fmr_1e-4", "fmr_1e-5"):
        values.update({level: single, f"{level}@m2": fused, f"{level}@m3": fused})
    write_manifest_thresholds(path, "sface_fp32", values, "test: one photo vs fused references")
    return path


def test_node_compares_one_photo_at_the_one_photo_threshold_and_three_at_the_fused_one(
        node_settings, testdata: Path, tmp_path: Path) -> None:
    """Over real gRPC with real photos: a one-photo threshold any genuine burst clears and a fused
    threshold none can. Who passes shows which threshold each comparison used; the photo counts
    are then swapped between the same two people, and so are the verdicts."""
    from idv.client import IdvClient

    manifest = _manifest_with(tmp_path / "manifest.toml", single=0.30, fused=0.99)
    node = start_node(node_settings.updated(model_manifest=manifest))
    try:
        with IdvClient(f"127.0.0.1:{node.port}", timeout=30, retries=0) as client:
            prints_1, prints_4 = nuaa_frames(testdata, "print", "0001"), nuaa_frames(testdata, "print", "0004")

            def three(prints: list[Path]) -> list[bytes]:
                return [p.read_bytes() for p in (prints[0], prints[len(prints) // 2], prints[-1])]

            def verdict(id_number: str, subject: str) -> tuple[str, str]:
                sequence = next(iter(nuaa_sequences(testdata, "live", subject).values()))
                result = client.verify(id_number, NAME, [p.read_bytes() for p in sequence[:15:3]])
                return result.verdict, result.reason

            assert client.enroll(ID_SUBJECT_1, NAME, [prints_1[0].read_bytes()]).template_count == 1
            assert client.enroll(ID_SUBJECT_2, NAME, three(prints_4)).template_count == 3
            assert verdict(ID_SUBJECT_1, "0001") == ("PASS", "VERIFIED")
            assert verdict(ID_SUBJECT_2, "0004") == ("FAIL", "NOT_VERIFIED")

            assert client.enroll(ID_SUBJECT_1, NAME, three(prints_1), replace=True).template_count == 3
            assert client.enroll(ID_SUBJECT_2, NAME, [prints_4[0].read_bytes()], replace=True).template_count == 1
            assert verdict(ID_SUBJECT_1, "0001") == ("FAIL", "NOT_VERIFIED")
            assert verdict(ID_SUBJECT_2, "0004") == ("PASS", "VERIFIED")
    finally:
        node.stop(0)


def test_service_and_config_show_use_the_shipped_thresholds_per_number_of_photos(
        node_settings, assemble, tmp_path: Path) -> None:
    shipped = from_manifest(load_manifest(Path(os.environ.get("IDV_MODEL_MANIFEST") or DEFAULT_MANIFEST))
                            .entry("sface_fp32").thresholds, node_settings.models.security_level)
    assembled = assemble(node_settings)
    assert assembled.thresholds == shipped and assembled.threshold == shipped.single
    config = tmp_path / "idv.toml"
    values = {"data_dir": str(node_settings.store.data_dir), "model_dir": str(node_settings.models.dir)}
    if os.environ.get("IDV_MODEL_MANIFEST"):
        values["model_manifest"] = os.environ["IDV_MODEL_MANIFEST"]
    config.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()), encoding="utf-8")
    result = CliRunner().invoke(cli, ["config", "show", "--config", str(config)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)["thresholds"]
    assert shown["security_level"] == "fmr_1e-4" and shown["source"] == "manifest"
    assert shown["by_reference_photos"] == shipped.shown() and set(shown["by_reference_photos"]) == {"1", "2", "3+"}
