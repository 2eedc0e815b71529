"""An operator's labelled sample for site calibration: a folder per person, or a CSV of ID-photo/live pairs.

Folders: `DIR/<person>/<photo>` (jpg, jpeg, png; one or more photos per person).
Every pair of photos of one person is genuine, every pair across people an impostor.

CSV: a header with `id_photo` and `live` (and optionally `person`), one row per
(ID photo, live photo) of the same person, paths relative to the CSV's folder. A
row's ID photo against every other person's live photo is an impostor pair; rows
without `person` are each a person of their own.

The sample's digest is the SHA-256 of its listing (one line per image: relative
path, the file's SHA-256, person, role; sorted), so a record of a calibration
names exactly the data it was made from without keeping a copy of it.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

from idv.evaluation.image_hashing import file_sha256

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
ROLE_ANY, ROLE_ID, ROLE_LIVE = "photo", "id_photo", "live"


class SiteSampleError(ValueError):
    """The sample cannot be used for calibration; the message says what to change."""


@dataclass(frozen=True)
class SampleImage:
    path: Path
    relative: str
    person: str
    role: str  # photo (folders) | id_photo | live (CSV)


@dataclass(frozen=True)
class SiteSample:
    root: Path
    kind: str  # folders | csv
    images: tuple[SampleImage, ...]
    digest: str

    @property
    def people(self) -> int:
        return len({image.person for image in self.images})


def _digest(images: list[SampleImage]) -> str:
    lines = sorted(f"{i.relative}\t{file_sha256(i.path)}\t{i.person}\t{i.role}\n" for i in images)
    return "sha256:" + hashlib.sha256("".join(lines).encode("utf-8")).hexdigest()


def _from_folders(root: Path) -> SiteSample:
    loose = [p.name for p in root.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    if loose:
        raise SiteSampleError(f"{root}: photos must be in a folder per person (found {loose[0]} at the top level)")
    images = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
            images.append(SampleImage(path, f"{folder.name}/{path.name}", folder.name, ROLE_ANY))
    if not images:
        raise SiteSampleError(f"{root}: no photos found (expected {root}/<person>/<photo>.jpg|.png)")
    return SiteSample(root, "folders", tuple(images), _digest(images))


def _from_csv(path: Path) -> SiteSample:
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = list(csv.DictReader(fh))
            header = set(rows[0].keys()) if rows else set()
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise SiteSampleError(f"{path}: cannot read the CSV ({exc})") from None
    if not {"id_photo", "live"} <= header:
        raise SiteSampleError(f"{path}: the CSV needs a header with columns id_photo and live (optional: person)")
    listed: dict[tuple[str, Path], SampleImage] = {}  # a photo listed on several rows counts once
    for number, row in enumerate(rows, start=2):
        person = (row.get("person") or "").strip() or f"row{number}"
        for role in (ROLE_ID, ROLE_LIVE):
            value = (row.get(role) or "").strip()
            if not value:
                raise SiteSampleError(f"{path}:{number}: empty {role}")
            file = (path.parent / value).resolve()
            if not file.is_file():
                raise SiteSampleError(f"{path}:{number}: {role} file {value} does not exist")
            known = listed.setdefault((role, file), SampleImage(file, value, person, role))
            if known.person != person:
                raise SiteSampleError(f"{path}:{number}: {value} is listed for two people ({known.person}, {person})")
    images = list(listed.values())
    if not images:
        raise SiteSampleError(f"{path}: the CSV has no rows")
    return SiteSample(path.parent, "csv", tuple(images), _digest(images))


def load_sample(path: Path) -> SiteSample:
    path = Path(path)
    if path.is_dir():
        sample = _from_folders(path)
    elif path.is_file() and path.suffix.lower() == ".csv":
        sample = _from_csv(path)
    else:
        raise SiteSampleError(f"{path}: give a folder (one sub-folder of photos per person) or a .csv file")
    if sample.people < 2:
        raise SiteSampleError(
            f"{path}: the sample has one person; calibration needs impostor pairs, i.e. photos of "
            "several different people (>= 3/FMR impostor pairs per level: 3,000 for fmr_1e-3)")
    return sample
