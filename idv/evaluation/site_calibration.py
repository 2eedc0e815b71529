"""`idv eval calibrate`: rates at the node's current thresholds on an operator's sample, and
per-level thresholds proposed from it by the project's rule.

Rule (the shipped calibration's, idv.evaluation.calibration, with the site as one more
population): per level, the lowest threshold with FMR <= target on the sample's
impostor pairs, only when the sample has >= 3/FMR of them; the proposal is the max
of that and the shipped threshold (a manifest recognizer: the manifest's level;
an operator's ArcFace file has no shipped per-level thresholds, so the site decides
alone); never below a laxer level's; rounded up to 4 decimals.

The models are the node's own (`load_models` with the node's settings: the shipped pack,
or the operator's SCRFD / ArcFace files). Each photo: the largest detected face,
aligned, embedded; a photo without a face is counted and left out. The sample's
images and embeddings stay in memory only; what is written is counts and a digest.
Rates at the *proposed* thresholds are measured on the same sample (in-sample,
optimistic); rates at the *current* thresholds are not tuned on it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from idv.evaluation.calibration import DECIMALS, SECURITY_LEVELS
from idv.evaluation.embedding import PICK_LARGEST, pick_face
from idv.evaluation.intervals import Rate
from idv.evaluation.metrics import MIN_IMPOSTORS_PER_INVERSE_FMR, ceil_to_decimals, threshold_for_fmr
from idv.evaluation.pairs import PairList, across, false_match_rates, false_non_match_rate, within
from idv.evaluation.site_sample import ROLE_ID, ROLE_LIVE, SiteSample, SiteSampleError
from idv.face.embedder import align_face
from idv.site_thresholds import SiteSampleRecord, SiteThresholds

RULE = (
    "per level: max(shipped threshold, lowest threshold with FMR <= target on the site sample's impostor pairs), "
    "the site voting only with >= 3/FMR impostor pairs; never below a laxer level's; rounded up to 4 decimals"
)


@dataclass(frozen=True)
class SiteModels:
    detector: object  # idv.face.detector.FaceDetector
    embedder: object  # idv.face.embedder.Embedder
    recognizer: str  # fingerprint
    current: dict[str, float]  # the thresholds the node uses now, per level (site file included)
    shipped: dict[str, float]  # manifest thresholds (empty for an operator's recognizer)


@dataclass(frozen=True)
class LevelReport:
    level: str
    target_fmr: float
    needed_impostor_pairs: int
    supported: bool
    current: float | None
    fmr_at_current: Rate | None
    fnmr_at_current: Rate | None
    site_threshold: float | None  # from the sample alone (None when not supported)
    proposed: float | None
    fmr_at_proposed: Rate | None  # in-sample
    fnmr_at_proposed: Rate | None
    note: str


@dataclass(frozen=True)
class SiteReport:
    sample: SiteSampleRecord
    recognizer: str
    no_face: tuple[str, ...]
    levels: tuple[LevelReport, ...]

    def proposed(self) -> dict[str, float]:
        return {lv.level: lv.proposed for lv in self.levels if lv.proposed is not None}


def embed_sample(sample: SiteSample, models: SiteModels) -> tuple[np.ndarray, np.ndarray]:
    """(found bool per image, unit embeddings); never writes anything."""
    found = np.zeros(len(sample.images), dtype=bool)
    vectors = np.zeros((len(sample.images), models.embedder.dimension), dtype=np.float32)
    for i, image in enumerate(sample.images):
        pixels = cv2.imread(str(image.path), cv2.IMREAD_COLOR)
        if pixels is None:
            raise SiteSampleError(f"{image.relative}: not a readable image")
        faces = models.detector.detect(pixels)
        if not faces:
            continue
        face = pick_face(faces, pixels.shape, PICK_LARGEST)
        vectors[i] = models.embedder.embed([align_face(pixels, face)])[0]
        found[i] = True
    return found, vectors


def sample_pairs(sample: SiteSample, found: np.ndarray, vectors: np.ndarray) -> tuple[PairList, int]:
    names = sorted({image.person for image in sample.images})
    person = np.array([names.index(image.person) for image in sample.images], dtype=np.int64)
    if sample.kind == "folders":
        return within(np.flatnonzero(found), vectors, person), len(names)
    role = np.array([image.role for image in sample.images])
    ids = np.flatnonzero(found & (role == ROLE_ID))
    lives = np.flatnonzero(found & (role == ROLE_LIVE))
    return across(ids, vectors, person, lives, vectors, person), len(names)


def calibrate(sample: SiteSample, models: SiteModels) -> SiteReport:
    found, vectors = embed_sample(sample, models)
    if not found.any():
        raise SiteSampleError(f"{sample.root}: no face was found in any of the {len(sample.images)} photos")
    pairs, people = sample_pairs(sample, found, vectors)
    impostors, genuine = pairs.impostor, pairs.genuine
    if len(impostors) == 0:
        raise SiteSampleError(f"{sample.root}: no impostor pairs (photos of at least two different people with a "
                              "face found are needed; 3,000 impostor pairs for fmr_1e-3)")
    faced_people = len({sample.images[i].person for i in np.flatnonzero(found)})
    if faced_people < 2:
        raise SiteSampleError(f"{sample.root}: faces were found for one person only; calibration needs several")
    record = SiteSampleRecord(digest=sample.digest, people=sample.people, images=len(sample.images),
                              faces=int(found.sum()), genuine_pairs=len(genuine), impostor_pairs=len(impostors),
                              kind=sample.kind)
    sorted_impostors = np.sort(impostors.scores)
    levels: list[LevelReport] = []
    floor = float("-inf")
    for level, target in SECURITY_LEVELS:
        needed = int(round(MIN_IMPOSTORS_PER_INVERSE_FMR / target))
        supported = len(impostors) >= needed
        current = models.current.get(level)
        fmr_now = false_match_rates(impostors, [current], people)[0] if current is not None else None
        fnmr_now = false_non_match_rate(genuine, current) if current is not None and len(genuine) else None
        site = proposed = None
        fmr_new = fnmr_new = None
        if supported:
            site = threshold_for_fmr(sorted_impostors, target)
            value = max([site, floor] + ([models.shipped[level]] if level in models.shipped else []))
            proposed = ceil_to_decimals(value, DECIMALS)
            floor = proposed
            fmr_new = false_match_rates(impostors, [proposed], people)[0]
            fnmr_new = false_non_match_rate(genuine, proposed) if len(genuine) else None
            note = "proposed = " + ("site" if proposed == ceil_to_decimals(site, DECIMALS) else "shipped/laxer level")
        else:
            note = (f"not proposed: {level} needs >= 3/FMR = {needed:,} impostor pairs, the sample has "
                    f"{len(impostors):,} (add people: n people with one photo each give n(n-1)/2 pairs)")
        levels.append(LevelReport(level, target, needed, supported, current, fmr_now, fnmr_now, site, proposed,
                                  fmr_new, fnmr_new, note))
    if not any(lv.supported for lv in levels):
        raise SiteSampleError(
            f"{sample.root}: {len(impostors):,} impostor pairs are too few to calibrate any level: fmr_1e-3 needs "
            f">= 3/FMR = 3,000 (fmr_1e-4: 30,000; fmr_1e-5: 300,000)")
    no_face = tuple(sample.images[i].relative for i in np.flatnonzero(~found))
    return SiteReport(record, models.recognizer, no_face, tuple(levels))


def site_thresholds_from(report: SiteReport, models: SiteModels) -> SiteThresholds:
    return SiteThresholds(
        recognizer=report.recognizer,
        thresholds=report.proposed(),
        sample=report.sample,
        rule=RULE,
        written_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        shipped=dict(models.shipped),
    )


def report_lines(report: SiteReport) -> list[str]:
    s = report.sample
    lines = [
        f"sample {s.kind}: {s.people} people, {s.images} photos, faces in {s.faces}; "
        f"{s.genuine_pairs:,} genuine and {s.impostor_pairs:,} impostor pairs; digest {s.digest}",
        f"recognizer {report.recognizer}",
    ]
    if report.no_face:
        lines.append(f"no face found in {len(report.no_face)} photo(s), left out: {', '.join(report.no_face[:10])}")

    def fmt(r: Rate | None) -> str:
        if r is None:
            return "n/a"
        text = f"{r.rate:.2e} ({r.errors}/{r.trials:,}) CP95 [{r.low:.1e}, {r.high:.1e}]"
        if r.bootstrap_high is not None:
            text += f" people-bootstrap95 [{r.bootstrap_low:.1e}, {r.bootstrap_high:.1e}]"
        return text

    for lv in report.levels:
        current = f"{lv.current:.4f}" if lv.current is not None else "n/a"
        lines.append(f"{lv.level}: current threshold {current}: FMR {fmt(lv.fmr_at_current)}, "
                     f"FNMR {fmt(lv.fnmr_at_current)}")
        if lv.proposed is not None:
            lines.append(f"  proposed {lv.proposed:.4f} (site alone {lv.site_threshold:.4f}; {lv.note}): in-sample "
                         f"FMR {fmt(lv.fmr_at_proposed)}, FNMR {fmt(lv.fnmr_at_proposed)}")
        else:
            lines.append(f"  {lv.note}")
    return lines


def report_json(report: SiteReport) -> dict:
    return {"sample": asdict(report.sample), "recognizer": report.recognizer, "no_face": list(report.no_face),
            "levels": [asdict(lv) for lv in report.levels], "rule": RULE}


def load_site_models(settings) -> SiteModels:
    """The node's detector and recognizer as the node loads them (idv.models.model_set.load_models),
    with the thresholds it would use."""
    from idv.models.model_set import load_models, manifest_for
    from idv.site_thresholds import load_site_thresholds, site_thresholds_path

    models_settings = settings.models
    manifest = manifest_for(models_settings)
    models = load_models(manifest, models_settings, liveness=False, actions=False)
    custom = models_settings.recognizer_file is not None
    if not custom:
        entry = manifest.entry(manifest.pack(models_settings.pack)["recognizer"])
        shipped = {lv: float(entry.thresholds[lv]) for lv, _ in SECURITY_LEVELS if lv in entry.thresholds}
    else:
        shipped = {}
    current = dict(shipped)
    if custom:
        current[models_settings.security_level] = models_settings.recognizer_threshold
    site = load_site_thresholds(site_thresholds_path(models_settings.site_thresholds_file, settings.store.data_dir))
    if site is not None and site.recognizer == models.embedder.fingerprint:
        current.update(site.thresholds)
    return SiteModels(models.detector, models.embedder, models.embedder.fingerprint, current, shipped)

