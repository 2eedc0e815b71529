"""Frame decoding: header checks before decoding, format allow-list, odd but valid images."""

from __future__ import annotations

import struct
import time
import zlib

import cv2
import numpy as np
import pytest

from idv.errors import InvalidRequest
from idv.imaging import ImageLimits, decode_frame, read_header

LIMITS = ImageLimits()


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge image (the body is a compressed run of zeros)."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    row = b"\x00" + b"\x00" * (width * 3)
    compressor = zlib.compressobj(9)
    data = b"".join(compressor.compress(row) for _ in range(min(height, 2000))) + compressor.flush()
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _reason(data: bytes, limits: ImageLimits = LIMITS) -> str:
    with pytest.raises(InvalidRequest) as failure:
        decode_frame(data, limits)
    return failure.value.reason


def test_png_bomb_is_rejected_from_the_header_quickly() -> None:
    bomb = _png_claiming(12000, 12000)
    assert len(bomb) < 512 * 1024
    start = time.perf_counter()
    assert _reason(bomb) == "IMAGE_TOO_LARGE"
    assert time.perf_counter() - start < 0.5


def test_fake_jpeg_header_claiming_60000_pixels_is_rejected() -> None:
    ok, encoded = cv2.imencode(".jpg", np.zeros((100, 100, 3), np.uint8))
    data = bytearray(encoded.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", 60000, 60000)
    assert _reason(bytes(data)) == "IMAGE_TOO_LARGE"


@pytest.mark.parametrize("ext", [".bmp", ".tiff", ".webp"])
def test_formats_outside_the_allow_list_are_rejected(ext: str) -> None:
    ok, encoded = cv2.imencode(ext, np.zeros((100, 100, 3), np.uint8))
    assert ok
    assert _reason(encoded.tobytes()) == "UNSUPPORTED_FORMAT"


@pytest.mark.parametrize("data", [b"GIF89a" + b"\x00" * 100, b"<svg xmlns='http://www.w3.org/2000/svg'/>", b"\x00" * 64])
def test_other_bytes_are_unsupported(data: bytes) -> None:
    assert _reason(data) == "UNSUPPORTED_FORMAT"


def test_empty_and_oversized_frames() -> None:
    assert _reason(b"") == "UNDECODABLE_IMAGE"
    assert _reason(b"\xff\xd8\xff" + b"\x00" * (600 * 1024)) == "FRAME_TOO_LARGE"


def test_truncated_and_corrupt_images_are_undecodable() -> None:
    ok, encoded = cv2.imencode(".png", np.full((200, 200, 3), 127, np.uint8))
    data = encoded.tobytes()
    assert _reason(data[:40]) == "UNDECODABLE_IMAGE"
    corrupt = bytearray(data)
    corrupt[60:80] = b"\xff" * 20
    assert _reason(bytes(corrupt)) == "UNDECODABLE_IMAGE"
    assert _reason(b"\xff\xd8\xff\xe0garbage") == "UNDECODABLE_IMAGE"


def test_tiny_images_are_refused_with_a_reason() -> None:
    ok, encoded = cv2.imencode(".png", np.zeros((1, 1, 3), np.uint8))
    assert _reason(encoded.tobytes()) == "IMAGE_TOO_SMALL"
    ok, encoded = cv2.imencode(".png", np.zeros((1, 1000, 3), np.uint8))
    assert _reason(encoded.tobytes()) == "IMAGE_TOO_SMALL"


@pytest.mark.parametrize(
    "image, ext",
    [
        (np.full((120, 160), 90, np.uint8), ".png"),  # greyscale
        (np.full((120, 160, 3), 40000, np.uint16), ".png"),  # 16-bit
        (np.full((120, 160, 4), 200, np.uint8), ".png"),  # alpha
        (np.full((120, 160, 3), 100, np.uint8), ".jpg"),
    ],
)
def test_odd_but_valid_images_decode_to_bgr_uint8(image: np.ndarray, ext: str) -> None:
    ok, encoded = cv2.imencode(ext, image)
    decoded = decode_frame(encoded.tobytes(), LIMITS)
    assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
    assert decoded.shape[:2] == (120, 160)


def test_progressive_jpeg_header_is_read() -> None:
    ok, encoded = cv2.imencode(".jpg", np.zeros((300, 400, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    header = read_header(encoded.tobytes())
    assert (header.format, header.width, header.height) == ("jpeg", 400, 300)


def _progressive(shape=(1080, 1920)) -> bytes:
    rng = np.random.default_rng(7)
    image = cv2.resize(rng.integers(0, 255, (shape[0] // 8, shape[1] // 8, 3)).astype(np.uint8), shape[::-1])
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 60, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes()


def _with_extra_scans(data: bytes, extra: int) -> bytes:
    """The last scan header of `data` repeated `extra` times before EOI (empty entropy data each)."""
    last = data.rindex(b"\xff\xda")
    (length,) = struct.unpack(">H", data[last + 2 : last + 4])
    return data[:-2] + data[last : last + 2 + length] * extra + b"\xff\xd9"


def test_a_cameras_progressive_jpeg_is_accepted_and_decoded() -> None:
    data = _progressive()
    assert 1 < data.count(b"\xff\xda") <= LIMITS.max_scans  # libjpeg's progressive script: 10 scans
    assert decode_frame(data, LIMITS).shape[:2] == (1080, 1920)


def test_progressive_jpeg_scan_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 16: ~0.25 ms of decoder time per scan at 1920x1080; 40,000 scans fit in 512 KiB."""
    from tests.security.h2_attacks import scan_bomb

    bomb = scan_bomb()
    assert len(bomb) <= LIMITS.max_bytes
    decoded: list[int] = []
    monkeypatch.setattr(cv2, "imdecode", lambda *a: decoded.append(1))
    started = time.perf_counter()
    assert _reason(bomb) == "TOO_MANY_SCANS"
    assert time.perf_counter() - started < 0.5  # one regex pass over the file, not a decode
    assert not decoded
    # The boundary: max_scans scans pass the walk, one more does not.
    normal = _progressive((240, 320))
    scans = normal.count(b"\xff\xda")
    at_limit = _with_extra_scans(normal, LIMITS.max_scans - scans)
    assert read_header(at_limit).width == 320
    assert _reason(_with_extra_scans(normal, LIMITS.max_scans - scans + 1)) == "TOO_MANY_SCANS"


def test_scan_markers_inside_an_exif_thumbnail_or_after_stray_bytes_are_handled() -> None:
    normal = _progressive((240, 320))
    # An APP1 segment carrying a thumbnail with 40 scans of its own: its markers are payload, not scans.
    thumbnail = _with_extra_scans(_progressive((64, 64)), 40)[:60000]
    app1 = b"\xff\xe1" + struct.pack(">H", len(thumbnail) + 2) + thumbnail
    with_thumbnail = normal[:2] + app1 + normal[2:]
    assert read_header(with_thumbnail).width == 320
    # Stray bytes between segments do not hide later scans from the count (the decoder resyncs too).
    extra = _with_extra_scans(normal, LIMITS.max_scans)
    first_scan = extra.index(b"\xff\xda")
    hidden = extra[:first_scan] + b"\x00\x17" + extra[first_scan:]
    with pytest.raises(InvalidRequest) as refused:
        read_header(hidden)
    assert refused.value.reason == "TOO_MANY_SCANS"
