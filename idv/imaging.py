"""Frame decoding with limits checked from the header, before any pixel is decoded.

Only JPEG and PNG are accepted (sniffed from the magic bytes, never from a name
or a claimed type). Width and height are read from the header: a 137 KiB PNG can
claim 12000x12000 pixels (412 MiB once decoded), so a frame whose header claims
more than the pixel limit is refused without calling the decoder.

The decoder's time is bounded the same way. A progressive JPEG is decoded scan by
scan and every scan walks the whole coefficient buffer, so a 512 KiB file with tens
of thousands of tiny scans costs seconds of CPU (issue 16). The header walk counts
the start-of-scan markers and refuses more than a camera writes (libjpeg's
progressive script has 10): with pixels, bytes and scans capped, the worst legal
frame's decode time is measured in benchmarks/README.md ("Decode cost").
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

import cv2
import numpy as np

from idv.errors import InvalidRequest

_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC = b"\xff\xd8\xff"
# JPEG start-of-frame markers that carry the image size (SOF0..SOF15 minus DHT/JPG/DAC).
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_JPEG_SOS = 0xDA
# The end of entropy-coded data: a 0xFF that is neither a stuffed 0x00 nor a restart marker.
# The decoder resynchronises on the same pattern after stray bytes, so the walk does too.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7]")


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 512 * 1024
    max_width: int = 1920
    max_height: int = 1920
    max_pixels: int = 1920 * 1080
    min_side: int = 64
    max_scans: int = 16  # start-of-scan markers in one JPEG (see the module docstring)

    def problems(self) -> list[str]:
        if min(self.max_bytes, self.max_width, self.max_height, self.max_pixels, self.min_side, self.max_scans) < 1:
            return ["image limits (max_bytes, max_width, max_height, max_pixels, min_side, max_scans) must be at least 1"]
        return []


@dataclass(frozen=True)
class ImageHeader:
    format: str  # "jpeg" | "png"
    width: int
    height: int


def _png_header(data: bytes) -> ImageHeader:
    # The IHDR chunk must come first: length(4) "IHDR" width(4) height(4).
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InvalidRequest("PNG frame has no IHDR header", "UNDECODABLE_IMAGE")
    width, height = struct.unpack(">II", data[16:24])
    return ImageHeader("png", width, height)


def _jpeg_header(data: bytes, max_scans: int) -> ImageHeader:
    """The frame header's size, after walking every marker segment to the end of the image.

    Scans are counted up to `max_scans` + 1 and no further: the walk's own cost is bounded
    by a regex search over at most the frame's bytes.
    """
    pos = 2
    end = len(data)
    header: ImageHeader | None = None
    scans = 0
    while pos + 4 <= end:
        if data[pos] != 0xFF:
            if header is None:
                raise InvalidRequest("JPEG frame has a corrupt marker segment", "UNDECODABLE_IMAGE")
            found = _NEXT_MARKER.search(data, pos)  # stray bytes: skip to the next marker like the decoder
            if found is None:
                break
            pos = found.start()
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker == 0xD9:  # end of image
            break
        if marker == _JPEG_SOS and header is None:
            break  # a scan before any frame header
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            raise InvalidRequest("JPEG frame has a corrupt marker segment", "UNDECODABLE_IMAGE")
        if marker in _JPEG_SOF and header is None:
            if pos + 9 > end:
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            header = ImageHeader("jpeg", width, height)
        if marker == _JPEG_SOS:
            scans += 1
            if scans > max_scans:
                raise InvalidRequest(f"JPEG frame has more than {max_scans} scans", "TOO_MANY_SCANS")
            found = _NEXT_MARKER.search(data, pos + 2 + length)
            if found is None:
                break
            pos = found.start()
            continue
        pos += 2 + length
    if header is None:
        raise InvalidRequest("JPEG frame has no frame header", "UNDECODABLE_IMAGE")
    return header


def read_header(data: bytes, max_scans: int = ImageLimits.max_scans) -> ImageHeader:
    if data.startswith(_PNG_MAGIC):
        return _png_header(data)
    if data.startswith(_JPEG_MAGIC):
        return _jpeg_header(data, max_scans)
    raise InvalidRequest("frame is not a JPEG or PNG image", "UNSUPPORTED_FORMAT")


def check_header(data: bytes, limits: ImageLimits, index: int) -> ImageHeader:
    meta = {"frame_index": str(index)}
    if len(data) == 0:
        raise InvalidRequest(f"frame {index} is empty", "UNDECODABLE_IMAGE", meta)
    if len(data) > limits.max_bytes:
        raise InvalidRequest(
            f"frame {index} is {len(data)} bytes; at most {limits.max_bytes} are accepted", "FRAME_TOO_LARGE", meta
        )
    try:
        header = read_header(data, limits.max_scans)
    except InvalidRequest as refused:
        raise InvalidRequest(refused.message, refused.reason, meta) from None
    if (
        header.width > limits.max_width
        or header.height > limits.max_height
        or header.width * header.height > limits.max_pixels
    ):
        raise InvalidRequest(
            f"frame {index} is {header.width}x{header.height} pixels; at most {limits.max_width}x{limits.max_height} "
            f"and {limits.max_pixels} pixels are accepted",
            "IMAGE_TOO_LARGE",
            meta,
        )
    if min(header.width, header.height) < limits.min_side:
        raise InvalidRequest(
            f"frame {index} is {header.width}x{header.height} pixels; at least {limits.min_side} per side is needed",
            "IMAGE_TOO_SMALL",
            meta,
        )
    return header


def decode_frame(data: bytes, limits: ImageLimits, index: int = 0) -> np.ndarray:
    """BGR uint8 HxWx3 from JPEG/PNG bytes, or InvalidRequest with a specific reason."""
    header = check_header(data, limits, index)
    buffer = np.frombuffer(data, dtype=np.uint8)
    try:
        # IMREAD_COLOR converts greyscale, 16-bit and alpha images to 8-bit BGR;
        # EXIF orientation is applied (a terminal may send rotated JPEGs).
        image = cv2.imdecode(buffer, cv2.IMREAD_COLOR)
    except cv2.error:
        image = None
    if image is None or image.ndim != 3 or image.shape[2] != 3:
        raise InvalidRequest(f"frame {index} could not be decoded as {header.format.upper()}", "UNDECODABLE_IMAGE",
                             {"frame_index": str(index)})
    height, width = image.shape[:2]
    # EXIF rotation may swap the sides; the pixel count is what matters.
    if width * height > limits.max_pixels:
        raise InvalidRequest(f"frame {index} decodes larger than its header claims", "IMAGE_TOO_LARGE",
                             {"frame_index": str(index)})
    return image
