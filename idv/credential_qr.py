"""The check-in code as a QR code, rendered by the node (segno: pure Python, no CDN, no Pillow).

PNG, black on white with the standard four-module quiet zone, error correction M: a desk
scanner or a phone camera reads it off a phone screen; the page shows it as a data: image.
"""

from __future__ import annotations

import base64
import io

from pathlib import Path

import segno


class QrNotFound(ValueError):
    """No readable QR code in the image; the message names the file."""


def qr_png(text: str, scale: int = 8) -> bytes:
    qr = segno.make_qr(text, error="m")
    out = io.BytesIO()
    qr.save(out, kind="png", scale=scale, border=4, dark="#000000", light="#ffffff")
    return out.getvalue()


def qr_png_data_uri(text: str, scale: int = 8) -> str:
    return "data:image/png;base64," + base64.b64encode(qr_png(text, scale)).decode("ascii")


def decode_qr_image(path: Path) -> str:
    """The text of the QR code in an image (a photo or screenshot of the page), via OpenCV's detector."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.fromfile(str(path), dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise QrNotFound(f"{path} is not an image OpenCV can read")
    text, points, _ = cv2.QRCodeDetector().detectAndDecode(image)
    if not text:
        raise QrNotFound(f"no readable QR code in {path}")
    return text
