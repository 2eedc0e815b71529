"""Near-duplicate images by perceptual hash: a label-noise check that never looks at a face recognizer.

pHash: the image in grey, resized to 32x32, 2-D DCT, the 8x8 lowest frequencies
(DC excluded from the median), one bit per coefficient above their median. Two
files of the same photo (re-encoded, resized, lightly cropped or recoloured)
differ in a few bits; unrelated photos in about 32 of 64.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np

# At most this many differing bits of 64 makes two images the same photo. 8 is the usual
# cut for pHash (about 12% of bits); unrelated portraits sit far above it.
NEAR_DUPLICATE_BITS = 8


def phash(path: Path | str) -> int:
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if grey is None:
        raise OSError(f"cannot read image {path}")
    small = cv2.resize(grey, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = low > np.median(low[1:])
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def file_sha256(path: Path | str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hamming_matrix(hashes: np.ndarray) -> np.ndarray:
    """Pairwise differing bits of 64-bit hashes (uint64 array of N) as an (N, N) uint8 matrix."""
    as_bytes = hashes.astype(">u8").view(np.uint8).reshape(-1, 8)
    bits = np.unpackbits(as_bytes, axis=1).astype(np.float32)  # (N, 64)
    same = bits @ bits.T + (1 - bits) @ (1 - bits).T
    return (64 - same).astype(np.uint8)


def near_duplicate_mask(paths: list[Path] | tuple[Path, ...], max_bits: int = NEAR_DUPLICATE_BITS) -> np.ndarray:
    """(N, N) bool: images i and j are the same photo (identical bytes, or pHash within max_bits)."""
    hashes = np.array([phash(p) for p in paths], dtype=np.uint64)
    near = hamming_matrix(hashes) <= max_bits
    digests = [file_sha256(p) for p in paths]
    _, inverse = np.unique(np.array(digests), return_inverse=True)
    near |= inverse[:, None] == inverse[None, :]
    np.fill_diagonal(near, False)
    return near
