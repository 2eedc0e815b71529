"""The MiniFASNet ONNX graphs built by the project reproduce the upstream implementation."""

from __future__ import annotations

import hashlib
import pickle
from pathlib import Path

import cv2
import numpy as np
import pytest

from idv.models.manifest import load_manifest
from liveness.minifasnet import convert_minifasnet_v1se, convert_minifasnet_v2
from liveness.patches import V1SE_PATCH, V2_PATCH, crop_patch, patch_box
from liveness.weights import WeightFormatError, load_state_dict

MODEL_NAMES = ("minifasnet_v2", "minifasnet_v1se")
SAMPLES = ("group_six_faces", "pad_sample_F1", "pad_sample_F2", "pad_sample_T1", "tight_crop_portrait")


@pytest.fixture(scope="module")
def vectors(shared: Path) -> dict[str, np.ndarray]:
    with np.load(shared / "models" / "minifasnet_test_vectors.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_reference_softmax_is_reproduced(models, vectors, name: str) -> None:
    session = models[name].session
    keys = sorted(k for k in vectors if k.endswith(f".{name}.input_bgr_uint8"))
    assert len(keys) == 8  # 5 images + 3 noise patches
    batch = np.stack([vectors[k] for k in keys]).transpose(0, 3, 1, 2).astype(np.float32)
    got = session.run(None, {"input": batch})[0]
    expected = np.stack([vectors[k.replace("input_bgr_uint8", "softmax")] for k in keys])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)


@pytest.mark.parametrize("sample", SAMPLES)
def test_patches_reproduce_the_reference_crops(shared, vectors, sample: str) -> None:
    image_path = next((shared / "testdata" / "images").glob(f"{sample}.*"))
    image = cv2.imread(str(image_path))
    box = tuple(float(v) for v in vectors[f"{sample}.bbox_xywh"])
    for spec, name in ((V2_PATCH, "minifasnet_v2"), (V1SE_PATCH, "minifasnet_v1se")):
        np.testing.assert_array_equal(crop_patch(image, box, spec), vectors[f"{sample}.{name}.input_bgr_uint8"])


def test_patch_box_is_clamped_and_shifted_inside_the_image() -> None:
    # A box sticking out at the top-left: the grown box is shifted back, never cut.
    left, top, right, bottom = patch_box((100, 100), (-5.0, -5.0, 20.0, 20.0), 2.7)
    assert (left, top) == (0, 0) and right == 54 and bottom == 54
    # Scale limited by the image: a box 60 px tall in a 100 px image grows to 99 at most.
    assert patch_box((200, 100), (50.0, 20.0, 60.0, 60.0), 4.0)[3] - patch_box((200, 100), (50.0, 20.0, 60.0, 60.0), 4.0)[1] == 99


def test_pth_and_npz_build_byte_identical_pinned_graphs(shared: Path, tmp_path: Path) -> None:
    from idv.models.convert import CONVERTERS

    manifest = load_manifest()
    for name, pth, npz in (
        ("minifasnet_v2", "2.7_80x80_MiniFASNetV2.pth", "minifasnet_v2_80x80.npz"),
        ("minifasnet_v1se", "4_0_0_80x80_MiniFASNetV1SE.pth", "minifasnet_v1se_80x80.npz"),
    ):
        convert = CONVERTERS[manifest.entry(name).converter]  # what `idv models pull` runs
        digests = set()
        for source in (pth, npz):
            target = tmp_path / f"{name}-{source}.onnx"
            convert(shared / "models" / source, target)
            digests.add(hashlib.sha256(target.read_bytes()).hexdigest())
        assert digests == {manifest.entry(name).sha256}


def test_converter_refuses_the_other_variant(shared: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="other MiniFASNet variant"):
        convert_minifasnet_v2(shared / "models" / "minifasnet_v1se_80x80.npz", tmp_path / "x.onnx")


def test_weight_reader_refuses_arbitrary_pickle_code(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):  # noqa: ANN204
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with path.open("wb") as fh:
        pickle.dump(0x1950A86A20F9469CFC6C, fh, protocol=2)
        pickle.dump(1001, fh, protocol=2)
        pickle.dump({}, fh, protocol=2)
        pickle.dump(Exploit(), fh, protocol=2)
    with pytest.raises(WeightFormatError, match="refusing pickle global"):
        load_state_dict(path)
