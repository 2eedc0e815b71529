"""Site calibration (issue 15): `idv eval calibrate` on real photos, the site thresholds file, and
the node using it. Samples are small folder trees of real East-Asian portraits built in tmp."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from idv.cli import main as cli
from idv.config import Settings
from idv.evaluation.site_sample import SiteSampleError, load_sample
from idv.assemble import build_service
from idv.models.manifest import DEFAULT_MANIFEST, load_manifest
from idv.pipeline import Budget
from idv.reference_thresholds import from_manifest
from idv.service import EnrollCommand, VerifyCommand
from idv.site_thresholds import (
    SiteSampleRecord,
    SiteThresholds,
    SiteThresholdsError,
    load_site_thresholds,
    write_site_thresholds,
)
from idv.verdicts import Purpose, TrueReason
from tests.conftest import ID_SUBJECT_1, nuaa_frames, nuaa_sequences
from tests.test_arcface_pack import build_tiny_arcface


def _link_tree(testdata: Path, root: Path, pairs_of: int = 20, singles: int = 60) -> Path:
    """`pairs_of` celebrities with two portraits each and `singles` ID-style photos, a folder per person."""
    celeb = testdata / "eastasian" / "celeb"
    multi = [d for d in sorted(celeb.glob("*/*")) if len(list(d.glob("*.jpg"))) >= 2][:pairs_of]
    for person in multi:
        (root / person.name).mkdir(parents=True)
        for photo in sorted(person.glob("*.jpg"))[:2]:
            os.symlink(photo, root / person.name / photo.name)
    for photo in sorted((testdata / "eastasian" / "aaf").glob("*.jpg"))[:singles]:
        (root / photo.stem).mkdir(parents=True)
        os.symlink(photo, root / photo.stem / photo.name)
    return root


def _config(path: Path, settings: Settings, **extra: object) -> Path:
    values = {"data_dir": str(settings.store.data_dir), "model_dir": str(settings.models.dir), **extra}
    path.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items()), encoding="utf-8")
    return path


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


def _burst(testdata: Path, subject: str) -> tuple[bytes, ...]:
    sequence = next(iter(nuaa_sequences(testdata, "live", subject).values()))
    return tuple(p.read_bytes() for p in sequence[:15:3])


def test_calibrate_reports_writes_and_the_node_uses_and_audits_it(node_settings: Settings, testdata: Path,
                                                                   tmp_path: Path) -> None:
    tree = _link_tree(testdata, tmp_path / "sample")
    config = _config(tmp_path / "idv.toml", node_settings, security_level="fmr_1e-3")
    code, out = _run("eval", "calibrate", str(tree), "--config", str(config), "--write")
    assert code == 0, out
    assert "80 people, 100 photos" in out and "20 genuine and 4,930 impostor pairs" in out
    assert "fmr_1e-3: current threshold" in out and "CP95" in out and "people-bootstrap95" in out
    assert "fmr_1e-4 needs >= 3/FMR = 30,000 impostor pairs, the sample has 4,930" in out
    site = load_site_thresholds(node_settings.store.data_dir / "site_thresholds.toml")
    assert site is not None and set(site.thresholds) == {"fmr_1e-3"}
    assert site.sample.digest == load_sample(tree).digest and site.sample.people == 80
    assert site.sample.impostor_pairs == 4930 and site.recognizer.startswith("sface_fp32:")
    # Never laxer than the shipped threshold (the rule's max over populations).
    assert site.thresholds["fmr_1e-3"] >= site.shipped["fmr_1e-3"]

    code, shown = _run("config", "show", "--config", str(config))
    assert code == 0 and json.loads(shown)["site_thresholds"]["sample"]["digest"] == site.sample.digest

    code, shown = _run("config", "show", "--config", str(config))
    thresholds = json.loads(shown)["thresholds"]
    assert thresholds["source"] == "site" and thresholds["by_reference_photos"]["1"] == site.thresholds["fmr_1e-3"]

    with build_service(node_settings.updated(security_level="fmr_1e-3")) as assembled:
        assert assembled.threshold == site.thresholds["fmr_1e-3"]
        # Fused references keep the shipped increments over one photo (idv/site_thresholds.py).
        shipped = from_manifest(load_manifest(node_settings.models.manifest or DEFAULT_MANIFEST)
                                .entry("sface_fp32").thresholds, "fmr_1e-3")
        assert assembled.thresholds.by_m == pytest.approx(
            tuple(site.thresholds["fmr_1e-3"] + t - shipped.single for t in shipped.by_m))
        assert thresholds["by_reference_photos"] == assembled.thresholds.shown()
        service = assembled.service
        # The genuine subject still passes at the site threshold.
        service.enroll(EnrollCommand(ID_SUBJECT_1, "张三", (nuaa_frames(testdata, "print", "0001")[0].read_bytes(),)),
                       Budget(30))
        outcome = service.verify(VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, _burst(testdata, "0001")),
                                 Budget(30))
        assert outcome.true_reason is TrueReason.VERIFIED
    records = [json.loads(line) for line in node_settings.store.audit_path.read_text().splitlines()]
    started = [r for r in records if r["event"] == "site_thresholds"]
    assert started and started[0]["sample_digest"] == site.sample.digest
    assert started[0]["threshold_source"] == "site" and started[0]["threshold"] == site.thresholds["fmr_1e-3"]
    assert started[0]["threshold_by_references"]["1"] == site.thresholds["fmr_1e-3"]

    # The default level (fmr_1e-4) needs 30,000 impostor pairs: --write refuses and says so.
    plain = _config(tmp_path / "plain.toml", node_settings)
    code, out = _run("eval", "calibrate", str(tree), "--config", str(plain), "--write")
    assert code != 0 and "not written" in out and "30,000" in out


def test_bad_samples_get_clear_errors(node_settings: Settings, testdata: Path, tmp_path: Path) -> None:
    config = _config(tmp_path / "idv.toml", node_settings)
    portrait = sorted((testdata / "eastasian" / "aaf").glob("*.jpg"))

    one = tmp_path / "one" / "only-person"
    one.mkdir(parents=True)
    os.symlink(portrait[0], one / "a.jpg")
    code, out = _run("eval", "calibrate", str(one.parent), "--config", str(config))
    assert code != 0 and "one person" in out and "3,000" in out

    loose = tmp_path / "loose"
    loose.mkdir()
    os.symlink(portrait[0], loose / "a.jpg")
    code, out = _run("eval", "calibrate", str(loose), "--config", str(config))
    assert code != 0 and "folder per person" in out

    blank = tmp_path / "blank"
    for person in ("p1", "p2", "p3"):
        (blank / person).mkdir(parents=True)
        cv2.imwrite(str(blank / person / "wall.png"), np.full((240, 320, 3), 128, np.uint8))
    code, out = _run("eval", "calibrate", str(blank), "--config", str(config))
    assert code != 0 and "no face was found in any of the 3 photos" in out

    few = _link_tree(testdata, tmp_path / "few", pairs_of=2, singles=8)
    code, out = _run("eval", "calibrate", str(few), "--config", str(config))
    assert code != 0 and "too few to calibrate any level" in out and ">= 3/FMR = 3,000" in out

    empty = tmp_path / "empty"
    (empty / "p1").mkdir(parents=True)
    code, out = _run("eval", "calibrate", str(empty), "--config", str(config))
    assert code != 0 and "no photos found" in out


def test_csv_of_id_photo_and_live_pairs(node_settings: Settings, testdata: Path, tmp_path: Path) -> None:
    rows = ["person,id_photo,live"]
    for subject in ("0001", "0002", "0003"):
        print_frame = nuaa_frames(testdata, "print", subject)[0]
        for live in nuaa_frames(testdata, "live", subject)[:4]:
            rows.append(f"{subject},{print_frame},{live}")
    sheet = tmp_path / "pairs.csv"
    sheet.write_text("\n".join(rows) + "\n", encoding="utf-8")
    sample = load_sample(sheet)
    # A print listed on four rows is one image; 3 ID photos + 12 live photos.
    assert sample.kind == "csv" and sample.people == 3 and len(sample.images) == 15
    config = _config(tmp_path / "idv.toml", node_settings)
    code, out = _run("eval", "calibrate", str(sheet), "--config", str(config))
    # 3 ID photos x 8 other people's live photos = 24 impostor pairs: far too few, and the error says how many.
    assert code != 0 and "24 impostor pairs are too few" in out and "3,000" in out

    (tmp_path / "bad.csv").write_text("reference,probe\na.jpg,b.jpg\n", encoding="utf-8")
    with pytest.raises(SiteSampleError, match="id_photo and live"):
        load_sample(tmp_path / "bad.csv")


def test_operator_arcface_pack_follows_the_same_rule(node_settings: Settings, testdata: Path, tmp_path: Path) -> None:
    model = tmp_path / "operator-models" / "tiny_arcface.onnx"
    model.parent.mkdir()
    digest = build_tiny_arcface(model)
    tree = _link_tree(testdata, tmp_path / "sample")
    config = _config(tmp_path / "idv.toml", node_settings, recognizer_file=str(model), recognizer_sha256=digest,
                     recognizer_threshold=0.95, security_level="fmr_1e-3")
    code, out = _run("eval", "calibrate", str(tree), "--config", str(config), "--write")
    assert code == 0, out
    assert "recognizer arcface:tiny_arcface.onnx:" in out
    site = load_site_thresholds(node_settings.store.data_dir / "site_thresholds.toml")
    assert site is not None and site.recognizer.startswith("arcface:tiny_arcface.onnx:") and site.shipped == {}
    with build_service(node_settings.updated(recognizer_file=model, recognizer_sha256=digest,
                                             recognizer_threshold=0.95, security_level="fmr_1e-3")) as assembled:
        assert assembled.threshold == site.thresholds["fmr_1e-3"]


def test_site_file_for_another_recognizer_stops_the_node(node_settings: Settings) -> None:
    path = node_settings.store.data_dir / "site_thresholds.toml"
    write_site_thresholds(path, SiteThresholds(
        recognizer="arcface:other.onnx:0123456789abcdef", thresholds={"fmr_1e-4": 0.5},
        sample=SiteSampleRecord("sha256:" + "0" * 64, 300, 300, 300, 0, 44850, "folders"),
        rule="test", written_at="2026-11-30T00:00:00+00:00"))
    with pytest.raises(SiteThresholdsError, match="calibrated for recognizer arcface:other.onnx"):
        build_service(node_settings)
    path.write_text("schema = 1\nrecognizer = 3\n", encoding="utf-8")
    with pytest.raises(SiteThresholdsError, match="malformed"):
        build_service(node_settings)
