"""The check-in code as a QR code, rendered by the node (segno: pure Python, no CDN, no Pillow).

PNG, black on white with the standard four-module quiet zone, error correction M: a desk
scanner or a phone camera reads it off a phone screen; the page shows it as a data: image.
"""

from __future__ import annotations

import base64
import io

import segno


def qr_png(text: str, scale: int = 8) -> bytes:
    qr = segno.make_qr(text, error="m")
    out = io.BytesIO()
    qr.save(out, kind="png", scale=scale, border=4, dark="#000000", light="#ffffff")
    return out.getvalue()


def qr_png_data_uri(text: str, scale: int = 8) -> str:
    return "data:image/png;base64," + base64.b64encode(qr_png(text, scale)).decode("ascii")
