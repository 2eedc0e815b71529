"""Listings of the East-Asian evaluation sets under testdata/eastasian/ (see its README).

* `aaf/PPPPPAyy.jpg`: All-Age-Faces, one file per listed person id; ids 00000-07380
  are women, 07381-13321 men; `yy` is the age. Many photos are ID-photo style. The
  labels are noisy (one public figure can recur under several ids): callers clean
  impostor pairs with `idv.evaluation.label_noise` before trusting an FMR.
* `celeb/<group>/<name>/<name>-N.jpg`: web portraits of Chinese, Japanese and Korean
  public figures, a folder per person (names from file names, may be noisy).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from idv.evaluation.datasets import DatasetError

_AAF_NAME = re.compile(r"^(?P<person>\d{5})A(?P<age>\d{2})\.jpg$")
_AAF_LAST_WOMAN = 7380  # README: 00000-07380 women, 07381-13321 men


@dataclass(frozen=True)
class LabelledImage:
    path: Path
    identity: str  # unique across sets: "aaf:01070", "celeb:korean/moon-jae-in", "lfw:Name"
    group: str  # the demographic group the image belongs to (e.g. "aaf", "celeb")
    sex: str  # "female" | "male" | "" (unknown)


def aaf_images(root: Path) -> tuple[LabelledImage, ...]:
    images = []
    for path in sorted(root.glob("*.jpg")):
        match = _AAF_NAME.match(path.name)
        if not match:
            raise DatasetError(f"{path}: not an All-Age-Faces name (PPPPPAyy.jpg)")
        person = int(match["person"])
        sex = "female" if person <= _AAF_LAST_WOMAN else "male"
        images.append(LabelledImage(path, f"aaf:{match['person']}", "aaf", sex))
    if not images:
        raise DatasetError(f"{root}: no All-Age-Faces images found")
    return tuple(images)


def celeb_images(root: Path) -> tuple[LabelledImage, ...]:
    images = []
    for path in sorted(root.glob("*/*/*.jpg")):
        group, name = path.parent.parent.name, path.parent.name
        images.append(LabelledImage(path, f"celeb:{group}/{name}", "celeb", ""))
    if not images:
        raise DatasetError(f"{root}: no portraits found under <group>/<name>/")
    return tuple(images)
