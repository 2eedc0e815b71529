"""Loaders for the evaluation sets in ../shared/testdata (read in place, never copied).

* LFW: `pairs.txt` in the official View-2 format, and the image list for all-vs-all.
* NUAA Photograph Imposter Database: frame names `ID_glasses_pos_session_frame.jpg`
  under `live/<subject>/` and `print/<subject>/`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


class DatasetError(ValueError):
    """A dataset file or folder does not have the expected layout."""


@dataclass(frozen=True)
class LfwImage:
    name: str  # the person, as the folder is named
    index: int  # 1-based, as in pairs.txt

    @property
    def relpath(self) -> str:
        return f"{self.name}/{self.name}_{self.index:04d}.jpg"


@dataclass(frozen=True)
class LfwPair:
    fold: int  # 0-based
    left: LfwImage
    right: LfwImage
    same: bool


@dataclass(frozen=True)
class LfwPairs:
    folds: int
    per_fold: int  # same-person pairs per fold (and as many different-person pairs)
    pairs: tuple[LfwPair, ...]

    def images(self) -> tuple[LfwImage, ...]:
        """Every image the pairs use, once, sorted by relative path."""
        unique = {image for pair in self.pairs for image in (pair.left, pair.right)}
        return tuple(sorted(unique, key=lambda image: image.relpath))


def _index(token: str, path: Path, line_no: int) -> int:
    try:
        value = int(token)
    except ValueError:
        raise DatasetError(f"{path}:{line_no}: {token!r} is not an image number") from None
    if value < 1:
        raise DatasetError(f"{path}:{line_no}: image numbers start at 1, got {value}")
    return value


def parse_pairs_file(path: Path) -> LfwPairs:
    """Parse an LFW `pairs.txt`: header `folds n`, then per fold n lines `name i j`
    (same person) followed by n lines `name1 i name2 j` (different people)."""
    lines = [line.split() for line in path.read_text(encoding="utf-8").splitlines()]
    numbered = [(no, fields) for no, fields in enumerate(lines, start=1) if fields]
    if not numbered:
        raise DatasetError(f"{path}: empty pairs file")
    header_no, header = numbered[0]
    if len(header) != 2 or not all(token.isdigit() for token in header):
        raise DatasetError(f"{path}:{header_no}: header must be '<folds> <pairs per fold>', got {' '.join(header)!r}")
    folds, per_fold = int(header[0]), int(header[1])
    body = numbered[1:]
    expected = folds * 2 * per_fold
    if len(body) != expected:
        raise DatasetError(f"{path}: header promises {expected} pair lines, found {len(body)}")
    pairs: list[LfwPair] = []
    for position, (line_no, fields) in enumerate(body):
        fold, within = divmod(position, 2 * per_fold)
        same = within < per_fold
        if same:
            if len(fields) != 3:
                raise DatasetError(f"{path}:{line_no}: a same-person line has 3 fields (name i j), got {len(fields)}")
            name = fields[0]
            left = LfwImage(name, _index(fields[1], path, line_no))
            right = LfwImage(name, _index(fields[2], path, line_no))
        else:
            if len(fields) != 4:
                raise DatasetError(
                    f"{path}:{line_no}: a different-person line has 4 fields (name1 i name2 j), got {len(fields)}"
                )
            left = LfwImage(fields[0], _index(fields[1], path, line_no))
            right = LfwImage(fields[2], _index(fields[3], path, line_no))
            if left.name == right.name:
                raise DatasetError(f"{path}:{line_no}: a different-person line names {left.name} twice")
        pairs.append(LfwPair(fold=fold, left=left, right=right, same=same))
    return LfwPairs(folds=folds, per_fold=per_fold, pairs=tuple(pairs))


_LFW_NAME = re.compile(r"^(?P<name>.+)_(?P<index>\d{4})\.jpg$")


def lfw_images(root: Path) -> tuple[LfwImage, ...]:
    """Every image under an LFW folder (`<name>/<name>_NNNN.jpg`), sorted by relative path."""
    images = []
    for path in root.glob("*/*.jpg"):
        match = _LFW_NAME.match(path.name)
        if not match or match["name"] != path.parent.name:
            raise DatasetError(f"{path}: not an LFW image name")
        images.append(LfwImage(match["name"], int(match["index"])))
    if not images:
        raise DatasetError(f"{root}: no LFW images found")
    return tuple(sorted(images, key=lambda image: image.relpath))


_NUAA_NAME = re.compile(r"^(\d{4})_(\d{2})_(\d{2})_(\d{2})_(\d+)\.jpg$")


@dataclass(frozen=True)
class NuaaFrame:
    path: Path
    kind: str  # live | print
    subject: str  # "0001"
    glasses: str
    position: str  # 00 for the session-01 print recordings; see the data README
    session: str  # "01" | "02"
    frame: int

    @property
    def sequence(self) -> str:
        """Frames of one recording share this key (`ID_glasses_pos_session`)."""
        return f"{self.subject}_{self.glasses}_{self.position}_{self.session}"


def nuaa_frames(root: Path, kind: str) -> tuple[NuaaFrame, ...]:
    """All frames of one kind (`live` or `print`) under a NUAA folder, by sequence then frame number."""
    if kind not in ("live", "print"):
        raise DatasetError(f"NUAA kind must be live or print, not {kind!r}")
    frames = []
    for path in (root / kind).glob("*/*.jpg"):
        match = _NUAA_NAME.match(path.name)
        if not match:
            raise DatasetError(f"{path}: not a NUAA frame name (ID_glasses_pos_session_frame.jpg)")
        subject, glasses, position, session, frame = match.groups()
        if subject != path.parent.name:
            raise DatasetError(f"{path}: subject {subject} filed under {path.parent.name}")
        frames.append(NuaaFrame(path, kind, subject, glasses, position, session, int(frame)))
    if not frames:
        raise DatasetError(f"{root / kind}: no NUAA frames found")
    return tuple(sorted(frames, key=lambda f: (f.sequence, f.frame)))


def group_sequences(frames: tuple[NuaaFrame, ...]) -> dict[str, tuple[int, ...]]:
    """Sequence key -> indices into `frames`, in frame order."""
    groups: dict[str, list[tuple[int, int]]] = defaultdict(list)
    for position, frame in enumerate(frames):
        groups[frame.sequence].append((frame.frame, position))
    return {key: tuple(i for _, i in sorted(members)) for key, members in sorted(groups.items())}
