"""How the service is put together (idv.assemble) and configured (idv.config), without any server."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

from idv.assemble import build_service
from idv.config import FLAT_ALIASES, SECTIONS, ConfigError, Settings, load_settings, masked
from idv.errors import AlreadyEnrolled, DuplicateFace, IdvError
from idv.models.model_set import load_models, manifest_for
from idv.models.runtime import ModelLoadError
from idv.pipeline import Budget
from idv.service import EnrollCommand, VerifyCommand
from idv.verdicts import Purpose, TrueReason
from tests.conftest import ID_SUBJECT_1, ID_UNKNOWN, REPO, nuaa_frames, nuaa_sequences


def _imported_by(module: str) -> set[str]:
    code = f"import sys, {module}; print('\\n'.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO, check=True)
    return set(out.stdout.split())


def test_the_service_is_assembled_without_grpc_and_without_the_offline_tooling() -> None:
    loaded = _imported_by("idv.assemble")
    assert "idv.service" in loaded and "idv.pipeline" in loaded
    forbidden = [m for m in loaded if m.split(".")[0] in ("grpc", "benchmarks")
                 or m.startswith(("idv.evaluation", "idv.rpc", "idv.node", "idv.cli"))]
    assert forbidden == [], forbidden


def test_every_section_field_is_reachable_from_toml_environment_and_flat_aliases(tmp_path: Path) -> None:
    config = tmp_path / "idv.toml"
    # Flat names of the first version at the top, then sections.
    config.write_text('max_frame_bytes = 300000\nchallenge_required_for = ["registration", "check_in"]\n'
                      'challenge_passive_only_for = ["licence_renewal"]\n'
                      '[serving]\nport = 50999\n[throttle]\nfailure_cap = 77\n')
    settings = load_settings(config, environ={"IDV_LIMITS__MAX_FRAMES": "6", "IDV_FAILURE_CAP": "70",
                                              "IDV_THROTTLE__FAILURE_CAP": "80", "IDV_LIVENESS": "false"},
                             overrides={"port": 50998})
    assert settings.serving.port == 50998  # an override beats the file
    assert settings.throttle.failure_cap == 80  # IDV_SECTION__FIELD beats the flat IDV_NAME and the file
    assert settings.limits.max_frames == 6 and settings.image.max_bytes == 300000
    assert settings.challenges.required_purposes == {Purpose.REGISTRATION, Purpose.CHECK_IN}
    assert settings.liveness.enabled is False
    for alias, (section, name) in FLAT_ALIASES.items():  # every alias names a real field
        assert name in {f.name for f in fields(SECTIONS[section])}, alias
    with pytest.raises(ConfigError, match="unknown setting 'serving__nonsense'"):
        load_settings(environ={}, overrides={"serving__nonsense": 1})
    with pytest.raises(ConfigError, match=r"failure_cap \(throttle.failure_cap\): 'many' is not a valid int"):
        load_settings(environ={"IDV_FAILURE_CAP": "many"})
    with pytest.raises(ConfigError, match="throttle.failure_cap must be at least lockout_after_failures"):
        load_settings(environ={}, overrides={"failure_cap": 2, "lockout_after_failures": 3})


def test_config_show_prints_sections_with_secrets_masked() -> None:
    settings = Settings().updated(store="postgresql://idv:s3cret@db.internal/idv",
                                  redis_url="redis://:hunter2@cache.internal:6379/0")
    shown = masked(settings)
    assert list(shown) == list(SECTIONS)
    text = json.dumps(shown)
    assert "s3cret" not in text and "hunter2" not in text and "db.internal" in text and "cache.internal" in text


def test_load_models_checks_warms_and_fingerprints_every_model(model_set, model_dir: Path, tmp_path: Path) -> None:
    assert set(model_set.fingerprints) == {"detector", "recognizer", "minifasnet_v2", "minifasnet_v1se", "facemesh"}
    assert all(":" in fp and len(fp.rsplit(":", 1)[1]) == 16 for fp in model_set.fingerprints.values())
    # An altered MiniFASNet (not only the detector and recognizer) stops the load.
    altered = tmp_path / "models"
    shutil.copytree(model_dir, altered)
    settings = load_settings(environ={}, overrides={"model_dir": altered})
    manifest = manifest_for(settings.models)
    target = altered / manifest.entry("minifasnet_v1se").file
    target.write_bytes(target.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelLoadError, match="altered"):
        load_models(manifest, settings.models)
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    assert digest != manifest.entry("minifasnet_v1se").sha256


def test_the_manifest_ships_inside_the_package() -> None:
    from idv.models.manifest import DEFAULT_MANIFEST

    assert DEFAULT_MANIFEST.is_file() and DEFAULT_MANIFEST.parent == REPO / "idv" / "models"
    assert (REPO / "idv" / "py.typed").is_file()


def test_a_built_service_enrols_and_verifies_one_way(node_settings, assemble, testdata) -> None:
    """Enrol, then genuine PASS, wrong name, unknown ID and a live impostor: answers alike, truth in the audit."""
    assembled = assemble(node_settings.updated(lockout_after_failures=50))
    service = assembled.service
    reference = nuaa_frames(testdata, "print", "0001")[0].read_bytes()
    enrolled = service.enroll(EnrollCommand(ID_SUBJECT_1, "张三", (reference,)), Budget(30))
    assert enrolled.template_count == 1 and enrolled.id_key == service.id_key(ID_SUBJECT_1)
    with pytest.raises(AlreadyEnrolled):
        service.enroll(EnrollCommand(ID_SUBJECT_1, "张三", (reference,)), Budget(30))
    genuine = tuple(p.read_bytes() for p in next(iter(nuaa_sequences(testdata, "live", "0001").values()))[:15:3])
    impostor = tuple(p.read_bytes() for p in next(iter(nuaa_sequences(testdata, "live", "0002").values()))[:15:3])
    answers = {
        "genuine": service.verify(VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, genuine), Budget(30)),
        "wrong name": service.verify(VerifyCommand(ID_SUBJECT_1, "李四", Purpose.CHECK_IN, genuine), Budget(30)),
        "unknown id": service.verify(VerifyCommand(ID_UNKNOWN, "张三", Purpose.CHECK_IN, genuine), Budget(30)),
        "impostor": service.verify(VerifyCommand(ID_SUBJECT_1, "张三", Purpose.CHECK_IN, impostor), Budget(30)),
    }
    assert answers["genuine"].true_reason is TrueReason.VERIFIED
    assert answers["wrong name"].true_reason is TrueReason.NAME_MISMATCH
    assert answers["unknown id"].true_reason is TrueReason.NO_REFERENCE
    assert answers["impostor"].true_reason is TrueReason.FACE_MISMATCH
    assert len({answers[k].reason for k in ("wrong name", "unknown id", "impostor")}) == 1  # one caller reason
    assert "lookup" in answers["genuine"].timings_ms and "embed" in answers["genuine"].timings_ms


def test_a_duplicate_face_is_an_idv_error_with_its_own_reason(node_settings, assemble, testdata) -> None:
    service = assemble(node_settings).service
    service.enroll(EnrollCommand(ID_SUBJECT_1, "张三", (nuaa_frames(testdata, "print", "0001")[0].read_bytes(),)),
                   Budget(30))
    with pytest.raises(DuplicateFace) as refused:
        service.enroll(EnrollCommand(ID_UNKNOWN, "李四", (nuaa_frames(testdata, "print", "0001")[5].read_bytes(),)),
                       Budget(30))
    assert isinstance(refused.value, IdvError) and refused.value.reason == "DUPLICATE_FACE"
    assert refused.value.duplicate_of == service.id_key(ID_SUBJECT_1)
    assert ID_SUBJECT_1 not in refused.value.message


def test_build_service_closes_what_it_opened_when_a_part_fails(node_settings, model_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "models"
    shutil.copytree(model_dir, broken)
    manifest = manifest_for(node_settings.models)
    (broken / manifest.entry("facemesh").file).write_bytes(b"not a model")
    with pytest.raises(ModelLoadError):
        build_service(node_settings.updated(model_dir=broken))
    # Nothing was left open or half-written: no store file, no audit log.
    assert not node_settings.store.sqlite_path.exists() and not node_settings.store.audit_path.exists()
