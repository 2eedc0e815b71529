"""Shared fixtures: the shared data, the pulled models, a real node on a free port."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from idv.config import Settings, load_settings
from idv.models.manifest import load_manifest
from idv.models.pull import pull_models

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IDV_SHARED_DIR", REPO.parent / "shared")).resolve()

# A fixed, valid ID number (GB 11643 check digit correct) for the enrolled test subject.
ID_SUBJECT_1 = "11010519491231002X"
ID_SUBJECT_2 = "440305198805171234"
ID_UNKNOWN = "110101199003074477"


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not (SHARED / "testdata").is_dir():
        pytest.fail(f"shared test data not found at {SHARED}; set IDV_SHARED_DIR")
    return SHARED


@pytest.fixture(scope="session")
def testdata(shared_dir: Path) -> Path:
    return shared_dir / "testdata"


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory, shared_dir: Path) -> Path:
    """Every model of the manifest, in the cache `idv models pull` fills (IDV_MODEL_DIR or the user cache).

    Already-pulled files are only re-verified; missing ones come from IDV_MODEL_MIRROR or ../shared/models.
    """
    manifest = load_manifest()
    target = load_settings().models.dir
    mirror = Path(os.environ.get("IDV_MODEL_MIRROR", shared_dir / "models"))
    served = [name for name, e in manifest.models.items() if e.role != "source"]
    pull_models(manifest, served, target, mirror=mirror, allow_network=False)
    return target


def nuaa_frames(testdata: Path, kind: str, subject: str) -> list[Path]:
    return sorted((testdata / "nuaa" / kind / subject).glob("*.jpg"))


def nuaa_sequences(testdata: Path, kind: str, subject: str) -> dict[str, list[Path]]:
    """Frames of each capture sequence (`ID_glasses_pos_session`), in frame order."""
    sequences: dict[str, list[Path]] = {}
    for path in nuaa_frames(testdata, kind, subject):
        prefix, _, frame = path.stem.rpartition("_")
        sequences.setdefault(prefix, []).append(path)
    for key in sequences:
        sequences[key].sort(key=lambda p: int(p.stem.rpartition("_")[2]))
    return sequences


@pytest.fixture(scope="session")
def model_set(model_dir: Path):
    """The served models, loaded once for the session by the same code the node uses."""
    from idv.models.model_set import load_models, manifest_for

    settings = load_settings(environ={}, overrides={"model_dir": model_dir,
                                                    "model_manifest": os.environ.get("IDV_MODEL_MANIFEST")})
    # Two FaceMesh interpreters whatever the runner's cores: the pooled challenge path is exercised.
    return load_models(manifest_for(settings.models), settings.models, parallel_calls=2)


@pytest.fixture()
def assemble(model_set):
    """Build services (idv.assemble.build_service) on the session's models, without any server;
    each is closed after the test."""
    from idv.assemble import build_service

    built = []

    def build(settings: Settings):
        assembled = build_service(settings, model_set)
        built.append(assembled)
        return assembled

    yield build
    for assembled in built:
        assembled.close()


@pytest.fixture()
def node_settings(tmp_path: Path, model_dir: Path) -> Settings:
    return load_settings(
        environ={},
        overrides={"port": 0, "data_dir": tmp_path / "data", "model_dir": model_dir, "grace_seconds": 1.0, "metrics_port": -1,
                   "model_manifest": os.environ.get("IDV_MODEL_MANIFEST"),
                   # Explicitly weaker than the default (issue 14: every purpose needs a challenge):
                   # the many tests of the passive path (recognition, quality, privacy, hostile input)
                   # send CHECK_IN bursts without a challenge. REGISTRATION and LICENCE_RENEWAL keep
                   # the default; tests/test_challenges.py checks the default policy itself.
                   "challenge_passive_only_for": "check_in",
                   # Many tests send one burst several times (wrong name, unknown ID, another challenge):
                   # the replay check (issue 14, on by default, refused off in production) would answer
                   # them all LIVENESS_FAILED. tests/test_capture_integrity.py runs with it on.
                   "integrity__replay_check": False},
    )


def start_node(settings: Settings):
    from idv.node import build_node

    node = build_node(settings)
    node.load()
    return node


def refused_start(settings: Settings) -> Exception:
    """Start a node that must refuse to serve; returns why, and frees its port."""
    from idv.node import build_node

    node = build_node(settings)
    try:
        node.load()
    except Exception as refusal:  # noqa: BLE001  (the caller asserts what it was)
        return refusal
    finally:
        node.stop(0)
    raise AssertionError("the node started although it should have refused")


@pytest.fixture()
def node(node_settings: Settings) -> Iterator[object]:
    running = start_node(node_settings)
    yield running
    running.stop(0)


@pytest.fixture()
def client(node) -> Iterator[object]:
    from idv.client import IdvClient

    with IdvClient(f"127.0.0.1:{node.port}", timeout=30, retries=0) as c:
        yield c
