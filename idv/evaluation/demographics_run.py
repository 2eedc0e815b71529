"""East-Asian calibration and demographic differentials (issue 15), in one command.

    idv eval demographics --mirror ../shared/models [--write-manifest]

Groups (FMR per group at each level's threshold, NIST FRTE demographics style):
  lfw                 LFW all-vs-all (mostly non-Asian celebrities)
  celeb               East-Asian web portraits (testdata/eastasian/celeb), all-vs-all
  celeb_cross_nationality
                      the same, pairs of different nationality only: East-Asian impostors whose labels
                      cannot be wrong (a Chinese and a Japanese public figure are two people)
  aaf, aaf_women, aaf_men
                      All-Age-Faces, many ID-photo style, all-vs-all (women-women, men-men)
  aaf_id_vs_nuaa_live ID-style photos (aaf) as references, NUAA live webcam frames as probes
  nuaa_id_vs_live_kK  NUAA: the subject's printed ID-style portrait vs live bursts of K frames
  *_fused_mM          several references (M photos of one person) fused to their mean, as the
                      node compares them, against single-image probes
and FNMR per genuine set (lfw, celeb, nuaa, fused).

Split: every person (identity label) is assigned by a hash of its label to the
CALIBRATION or the REPORT half; thresholds are chosen on calibration pairs only and
every published rate is measured on report pairs. Genuine scores never enter the
threshold rule.

Label noise (idv.evaluation.label_noise): East-Asian impostor pairs that are the same
photo (pHash / identical bytes) or that an independent recognizer (dlib ResNet)
confirms as one person are removed; every rate is published raw and cleaned; the
thresholds are chosen on cleaned calibration pairs.

Threshold rule, per number m of fused reference photos (idv/reference_thresholds.py):
idv.evaluation.calibration.choose_thresholds_by_references over the cleaned calibration
sets listed in VOTING_BY_M (for each m, max over the populations measured with m
references of each population's threshold at the level, sets with >= 3/FMR impostor
pairs only, monotone across levels, never below m - 1's, rounded up to 4 decimals).
m = 1 is every single-photo population; m = 2 and m = 3 (which the node uses for every
m >= 3) the fused LFW and East-Asian references. Each group's rates are reported at the
threshold the node uses for that group's m. Intervals: Clopper-Pearson 95% for every rate,
and a subject bootstrap (people resampled, 200 draws) for FMR.

Embeddings are cached outside the repository (--cache-dir, default /tmp/idv-calib-cache),
keyed by image list, acquisition policy and model digests.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from idv.evaluation import second_recognizer
from idv.evaluation.calibration import (
    SECURITY_LEVELS,
    choose_thresholds,
    choose_thresholds_by_references,
    write_manifest_thresholds,
)
from idv.evaluation.datasets import lfw_images, nuaa_frames
from idv.evaluation.eastasian import LabelledImage, aaf_images, celeb_images
from idv.evaluation.embedding import PICK_CENTRE, PICK_LARGEST, AcquisitionPolicy, ModelSelection, embed_images
from idv.evaluation.image_hashing import near_duplicate_mask
from idv.evaluation.intervals import Rate
from idv.evaluation.label_noise import SameImageEvidence, clean, dlib_confirm_distance
from idv.evaluation.metrics import ScoreSet
from idv.evaluation.pairs import PairList, across, false_match_rates, false_non_match_rate, within
from idv.evaluation.protocols import REFERENCE_SESSION, live_windows, select_references
from idv.face.embedder import l2_normalise
from idv.models.manifest import DEFAULT_MANIFEST, load_manifest
from idv.models.pull import pull_models
from idv.reference_thresholds import from_manifest, level_key

REPO = Path(__file__).resolve().parents[2]
CALIBRATION, REPORT = "calibration", "report"
FUSED_M = (2, 3)
NUAA_K = (1, 5, 8)
# Per number m of fused reference photos, the sets whose calibration-half impostors vote for m's
# thresholds: for one photo, the populations idv serves, the ID-photo-vs-live case and LFW (so
# nothing gets worse there); for m photos, the references fused from m photos. The largest m
# stands for every larger m (the node has no calibration beyond it).
VOTING_BY_M: dict[int, tuple[str, ...]] = {
    1: ("lfw", "celeb", "celeb_cross_nationality", "aaf", "aaf_women", "aaf_men", "aaf_id_vs_nuaa_live",
        *(f"nuaa_id_vs_live_k{k}" for k in NUAA_K)),
    **{m: tuple(f"{base}_fused_m{m}" for base in ("lfw", "celeb")) for m in FUSED_M},
}
POPULATION = "east-asian"
RULE = (
    "per level and per number m of fused reference photos: max over the populations measured with m references "
    "(m=1: LFW; East-Asian web portraits, all and of different nationality; All-Age-Faces ID-style, all/women/men; "
    "ID-style photo vs live webcam; NUAA ID-print vs live bursts 1/5/8. m=2, m=3: LFW and East-Asian references "
    "fused from m photos; m=3's thresholds serve every m >= 3) of the lowest threshold with FMR <= target on that "
    "population's CALIBRATION-half impostor pairs (identities split by hash; East-Asian pairs cleaned of same-photo "
    "and dlib-confirmed same-person pairs), populations with >= 3/FMR pairs only; never below a laxer level's, "
    "never below m-1's; rounded up to 4 decimals; PASS iff cosine(probe, mean of the m reference templates "
    "renormalised) >= the threshold for m"
)


def references_of(group: str) -> int:
    """How many reference photos a group's references are fused from (1 unless '_fused_m<m>')."""
    head, sep, tail = group.rpartition("_fused_m")
    return int(tail) if sep and head else 1


def split_of(identity: str) -> str:
    return CALIBRATION if hashlib.sha256(f"issue15:{identity}".encode()).digest()[0] % 2 == 0 else REPORT


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "testdata")
    parser.add_argument("--model-dir", type=Path, default=None)
    parser.add_argument("--mirror", type=Path, default=os.environ.get("IDV_MODEL_MIRROR"))
    parser.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--cache-dir", type=Path, default=Path("/tmp/idv-calib-cache"),
                        help="embedding cache (biometric data: keep it outside the repository)")
    parser.add_argument("--no-second-recognizer", action="store_true",
                        help="clean labels by image hashing only (without dlib; fewer same-person pairs found)")
    parser.add_argument("--write-manifest", action="store_true",
                        help="write the chosen thresholds into the manifest's [models.<recognizer>.thresholds]")
    return parser.parse_args(argv)


@dataclass(frozen=True, eq=False)
class Source:
    """One embedded image table with its people."""

    vectors: np.ndarray
    acquired: np.ndarray
    person: np.ndarray  # global person index per row
    split: np.ndarray  # per row: CALIBRATION | REPORT


@dataclass(frozen=True, eq=False)
class Group:
    name: str
    pairs: PairList
    kept: np.ndarray  # bool per pair after label-noise cleaning (all True when not cleaned)
    cleaned_by: str
    removed: dict


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


class _People:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def __call__(self, identity: str) -> int:
        return self.index.setdefault(identity, len(self.index))


def _fused(source: Source, rows_by_person: dict[int, list[int]], m: int) -> tuple[dict, np.ndarray]:
    """References of m photos per person: their renormalised mean ("mean"), as the node fuses them."""
    refs, vectors = {}, []
    for person, rows in rows_by_person.items():
        if len(rows) >= m:
            refs[person] = rows[:m]
            vectors.append(l2_normalise(source.vectors[rows[:m]].astype(np.float64).mean(axis=0, keepdims=True))[0])
    return refs, np.asarray(vectors)


def _fused_pairs(source: Source, rows: np.ndarray, m: int, evidence: SameImageEvidence | None,
                 near_rows: np.ndarray | None) -> tuple[PairList, np.ndarray, PairList]:
    """Fused m-photo references vs every other acquired image of the split (genuine: the person's
    remaining photos). Returns (mean-fused pairs, kept mask, max-over-m pairs for comparison)."""
    by_person: dict[int, list[int]] = {}
    for r in rows:
        by_person.setdefault(int(source.person[r]), []).append(int(r))
    refs, fused = _fused(source, by_person, m)
    if not refs:
        empty = PairList(*(np.empty(0, dtype=np.int64),) * 4, np.empty(0), np.empty(0, dtype=bool))
        return empty, np.empty(0, dtype=bool), empty
    ref_people = np.array(list(refs))
    ref_rows = [refs[p] for p in ref_people]
    lefts, rights, scores, maxes, keeps = [], [], [], [], []
    vectors = source.vectors.astype(np.float64)
    for k, person in enumerate(ref_people):
        used = set(ref_rows[k])
        probes = np.array([r for r in rows if r not in used], dtype=np.int64)
        lefts.append(np.full(probes.size, ref_rows[k][0]))
        rights.append(probes)
        scores.append(vectors[probes] @ fused[k])
        maxes.append((vectors[probes] @ vectors[ref_rows[k]].T).max(axis=1))
        same = source.person[probes] == person
        if evidence is not None and near_rows is not None:
            duplicate = np.zeros(probes.size, dtype=bool)
            dlib_same = np.zeros(probes.size, dtype=bool)
            for ref in ref_rows[k]:
                duplicate |= evidence.near_duplicate[near_rows[ref], near_rows[probes]]
                dlib_same |= evidence.dlib_distance[near_rows[ref], near_rows[probes]] < evidence.dlib_same_below
            # As label_noise.clean: impostors that are one photo or dlib-confirmed; genuine same-photo pairs.
            keeps.append(~((~same & (duplicate | dlib_same)) | (same & duplicate)))
        else:
            keeps.append(np.ones(probes.size, dtype=bool))
    left, right = np.concatenate(lefts), np.concatenate(rights)
    lp, rp = source.person[left], source.person[right]
    mean_pairs = PairList(left, right, lp, rp, np.concatenate(scores), lp == rp)
    max_pairs = PairList(left, right, lp, rp, np.concatenate(maxes), lp == rp)
    return mean_pairs, np.concatenate(keeps), max_pairs


def _rate_json(r: Rate) -> dict:
    return {k: v for k, v in asdict(r).items() if v is not None}


def main(argv: list[str] | None = None, echo: Callable[[str], None] | None = None) -> int:
    args = parse_args(argv)
    say = echo or (lambda line: None)
    started = time.perf_counter()
    manifest = load_manifest(args.manifest)
    pack = manifest.pack("permissive")
    detector, recognizer = pack["detector"], pack["recognizer"]
    if args.model_dir is None:
        from idv.config import Settings

        args.model_dir = Settings().models.dir
    if args.mirror:
        pull_models(manifest, [detector, recognizer], args.model_dir, mirror=Path(args.mirror), allow_network=False)
    models = ModelSelection(args.manifest, args.model_dir, detector=detector, recognizer=recognizer)
    # The thresholds the manifest held when this ran, per m (a table without per-m keys: one for every m).
    shipped = {level: from_manifest(manifest.entry(recognizer).thresholds, level) for level, _ in SECURITY_LEVELS}
    before_by_m = {m: {level: shipped[level].for_references(m) for level, _ in SECURITY_LEVELS} for m in VOTING_BY_M}
    before = before_by_m[1]
    data, cache = args.data_dir, args.cache_dir
    people = _People()

    # --- embeddings -------------------------------------------------------------------------
    say("embedding LFW, East-Asian sets and NUAA (cached in %s)" % cache)
    lfw = lfw_images(data / "lfw")
    lfw_table = embed_images([data / "lfw" / i.relpath for i in lfw], AcquisitionPolicy(PICK_CENTRE, True),
                             models, workers=args.workers, cache_dir=cache)
    east: tuple[LabelledImage, ...] = aaf_images(data / "eastasian" / "aaf") + celeb_images(data / "eastasian" / "celeb")
    east_paths = [i.path for i in east]
    east_table = embed_images(east_paths, AcquisitionPolicy(PICK_LARGEST, True), models,
                              workers=args.workers, cache_dir=cache)
    prints = tuple(f for f in nuaa_frames(data / "nuaa", "print") if f.session == REFERENCE_SESSION)
    lives = nuaa_frames(data / "nuaa", "live")
    print_table = embed_images([f.path for f in prints], AcquisitionPolicy(PICK_LARGEST), models,
                               workers=args.workers, cache_dir=cache)
    live_table = embed_images([f.path for f in lives], AcquisitionPolicy(PICK_LARGEST), models,
                              workers=args.workers, cache_dir=cache)

    def source(table, identities: list[str]) -> Source:
        person = np.array([people(i) for i in identities], dtype=np.int64)
        split = np.array([split_of(i) for i in identities])
        return Source(table.fused(False), table.acquired, person, split)

    lfw_src = source(lfw_table, [f"lfw:{i.name}" for i in lfw])
    east_src = source(east_table, [i.identity for i in east])
    live_src = source(live_table, [f"nuaa:{f.subject}" for f in lives])

    # --- label-noise evidence for the East-Asian images (never reads an SFace score) -------------
    say("label noise: perceptual hashes and the dlib recognizer")
    tail_check: dict = {}
    if args.no_second_recognizer:
        dlib_below = 0.0
        east_found = np.zeros(len(east), dtype=bool)
        distance = np.full((len(east), len(east)), np.inf, dtype=np.float32)
    else:
        east_found, east_dlib = second_recognizer.describe(east_paths, models, cache, workers=args.workers)
        distance = second_recognizer.distances(east_dlib.astype(np.float32)).astype(np.float32)
        distance[~east_found, :] = np.inf
        distance[:, ~east_found] = np.inf
        # dlib's confirm distance is set on East-Asian impostor pairs whose labels cannot be wrong:
        # portraits of people of different nationality (celeb/chinese vs japanese vs korean).
        nationality = np.array([i.identity.split(":")[1].split("/")[0] if i.group == "celeb" else "" for i in east])
        rows = np.flatnonzero((nationality != "") & east_found)
        iu = np.triu_indices(rows.size, k=1)
        cross = (nationality[rows][:, None] != nationality[rows][None, :])[iu]
        cross_distance = distance[np.ix_(rows, rows)][iu][cross].astype(np.float64)
        dlib_below = dlib_confirm_distance(cross_distance, np.zeros(cross_distance.size, dtype=bool))
        # The removals that would bias a threshold are true impostors in SFace's tail: count, on these
        # clean pairs, how many of those at or above the old fmr_1e-3 threshold dlib would remove.
        vectors = east_src.vectors[rows].astype(np.float64)
        cross_score = (vectors @ vectors.T)[iu][cross]
        tail = cross_score >= before["fmr_1e-3"]
        tail_check = {"clean_pairs": int(cross.sum()), "tail_threshold": before["fmr_1e-3"],
                      "tail_pairs": int(tail.sum()), "tail_pairs_dlib_would_remove": int((tail & (cross_distance <
                                                                                                 dlib_below)).sum())}
    evidence = SameImageEvidence(near_duplicate_mask(east_paths), east_found, distance, dlib_below)
    identity_rows = np.arange(len(east))

    # --- groups per split ----------------------------------------------------------------------
    is_aaf = np.array([i.group == "aaf" for i in east])
    nationality_of = np.array([i.identity.split(":")[1].split("/")[0] if i.group == "celeb" else "" for i in east])
    sex = np.array([i.sex for i in east])
    references = select_references(prints, print_table)
    groups: dict[str, dict[str, Group]] = {CALIBRATION: {}, REPORT: {}}
    fused_max: dict[str, dict[str, PairList]] = {CALIBRATION: {}, REPORT: {}}
    for half in (CALIBRATION, REPORT):
        g = groups[half]

        def add(name: str, pairs: PairList, cleaned: bool) -> None:
            if cleaned:
                c = clean(pairs, evidence)
                g[name] = Group(name, pairs, c.kept, "pHash/identical bytes + dlib",
                                {"impostor_same_photo": c.removed_duplicate, "impostor_dlib_same_person": c.removed_dlib,
                                 "genuine_same_photo": c.genuine_duplicate})
            else:
                g[name] = Group(name, pairs, np.ones(len(pairs), dtype=bool), "not cleaned (labels kept)", {})

        lfw_rows = np.flatnonzero(lfw_src.acquired & (lfw_src.split == half))
        add("lfw", within(lfw_rows, lfw_src.vectors, lfw_src.person), cleaned=False)
        east_rows = east_src.acquired & (east_src.split == half)
        celeb_rows = np.flatnonzero(east_rows & ~is_aaf)
        aaf_rows = np.flatnonzero(east_rows & is_aaf)
        add("celeb", within(celeb_rows, east_src.vectors, east_src.person), cleaned=True)
        celeb_pairs = within(celeb_rows, east_src.vectors, east_src.person)
        add("celeb_cross_nationality", celeb_pairs.where(
            nationality_of[celeb_pairs.left] != nationality_of[celeb_pairs.right]), cleaned=False)
        add("aaf", within(aaf_rows, east_src.vectors, east_src.person), cleaned=True)
        add("aaf_women", within(aaf_rows[sex[aaf_rows] == "female"], east_src.vectors, east_src.person), cleaned=True)
        add("aaf_men", within(aaf_rows[sex[aaf_rows] == "male"], east_src.vectors, east_src.person), cleaned=True)
        live_rows = np.flatnonzero(live_src.acquired & (live_src.split == half))
        add("aaf_id_vs_nuaa_live", across(aaf_rows, east_src.vectors, east_src.person,
                                          live_rows, live_src.vectors, live_src.person), cleaned=False)
        for k in NUAA_K:
            windows = live_windows(lives, live_table, k, False)
            w_person = np.array([people(f"nuaa:{s}") for s in windows.subjects])
            w_split = np.array([split_of(f"nuaa:{s}") for s in windows.subjects])
            probe_rows = np.flatnonzero(windows.acquired & (w_split == half))
            ref_subjects = [s for s, c in references.items() if c.index >= 0 and split_of(f"nuaa:{s}") == half]
            ref_vectors = np.asarray([print_table.embeddings[references[s].index] for s in ref_subjects])
            ref_person = np.array([people(f"nuaa:{s}") for s in ref_subjects], dtype=np.int64)
            if ref_subjects and probe_rows.size:
                pairs = across(np.arange(len(ref_subjects)), ref_vectors, ref_person,
                               probe_rows, windows.embeddings, w_person)
                add(f"nuaa_id_vs_live_k{k}", pairs, cleaned=False)
        for m in FUSED_M:
            mean_pairs, _, max_pairs = _fused_pairs(lfw_src, lfw_rows, m, None, None)
            add(f"lfw_fused_m{m}", mean_pairs, cleaned=False)
            fused_max[half][f"lfw_max_m{m}"] = max_pairs
            mean_pairs, kept, max_pairs = _fused_pairs(east_src, celeb_rows, m, evidence, identity_rows)
            g[f"celeb_fused_m{m}"] = Group(f"celeb_fused_m{m}", mean_pairs, kept, "pHash/identical bytes + dlib",
                                           {"pairs_removed": int((~kept).sum())})
            fused_max[half][f"celeb_max_m{m}"] = max_pairs.where(kept)

    # --- thresholds ----------------------------------------------------------------------------
    def score_set(group: Group, cleaned: bool) -> ScoreSet:
        pairs = group.pairs.where(group.kept) if cleaned else group.pairs
        return pairs.score_set()

    def voting_sets(cleaned: bool) -> dict[int, dict[str, ScoreSet]]:
        sets = {m: {n: score_set(groups[CALIBRATION][n], cleaned) for n in names if n in groups[CALIBRATION]}
                for m, names in VOTING_BY_M.items()}
        return {m: {n: s for n, s in by_name.items() if s.n_impostor} for m, by_name in sets.items()}

    calibration_sets = voting_sets(True)
    levels_by_m = choose_thresholds_by_references(calibration_sets)
    after_by_m = {m: {lv.level: lv.threshold for lv in levels} for m, levels in levels_by_m.items()}
    levels = levels_by_m[1]
    after = after_by_m[1]
    lfw_only = {lv.level: lv.threshold for lv in choose_thresholds({"lfw": calibration_sets[1]["lfw"]})}
    raw_by_m = {m: {lv.level: lv.threshold for lv in levels}
                for m, levels in choose_thresholds_by_references(voting_sets(False)).items()}

    # --- report half -----------------------------------------------------------------------------
    say("rates on the report half (subject bootstrap)")
    n_people = len(people.index)
    report: dict[str, dict] = {}
    for name, group in groups[REPORT].items():
        # Each group at the thresholds the node uses for its references' m ("before": the manifest's
        # when this ran, for the same m).
        m = min(references_of(name), max(VOTING_BY_M))
        columns = {"after": after_by_m[m], "before": before_by_m[m], "lfw_only": lfw_only}
        ordered = [(col, level) for col in columns for level, _ in SECURITY_LEVELS]
        thresholds = [columns[col][level] for col, level in ordered]
        entry: dict = {"references_fused": m, "thresholds": {col: columns[col] for col in ("after", "before")},
                       "cleaned_by": group.cleaned_by, "removed": group.removed}
        for variant, pairs in (("raw", group.pairs), ("cleaned", group.pairs.where(group.kept))):
            imp, gen = pairs.impostor, pairs.genuine
            block: dict = {"impostor_pairs": len(imp), "genuine_pairs": len(gen),
                           "impostor_people": int(np.unique(np.concatenate([imp.left_person, imp.right_person])).size)}
            if len(imp):
                fmrs = false_match_rates(imp, thresholds, n_people)
                block["fmr"] = {f"{col}:{level}": _rate_json(r) for (col, level), r in zip(ordered, fmrs)}
            if len(gen):
                block["fnmr"] = {f"{col}:{level}": _rate_json(false_non_match_rate(gen, t))
                                 for (col, level), t in zip(ordered, thresholds)}
            entry[variant] = block
        report[name] = entry
    multi_reference = {}
    for name, pairs in fused_max[REPORT].items():
        imp = pairs.impostor
        m = min(references_of(name.replace("_max_m", "_fused_m")), max(VOTING_BY_M))
        if len(imp):
            multi_reference[name] = {
                f"after:{lv}": _rate_json(r)
                for (lv, _), r in zip(SECURITY_LEVELS, false_match_rates(imp, list(after_by_m[m].values()), n_people))
            }

    def detail(levels) -> dict:
        return {lv.level: {"threshold": lv.threshold, "exact": lv.exact, "decided_by": lv.decided_by,
                           "candidates": [asdict(c) for c in lv.candidates]} for lv in levels}

    calibration_detail = detail(levels)
    result = {
        "git_commit": _git("rev-parse", "HEAD"),
        "command": "idv eval demographics --mirror ../shared/models --write-manifest",
        "recognizer": recognizer,
        "population": POPULATION,
        "rule": RULE,
        "split": "identity label hashed (sha256('issue15:'+label), first byte even: calibration); "
                 "thresholds from calibration pairs only, every rate below on report pairs",
        "intervals": "low/high: Clopper-Pearson 95%; bootstrap_low/high (FMR): 200 subject-bootstrap draws, 95%",
        "label_noise": {
            "method": "impostor pairs removed when the images are the same photo (pHash <= 8/64 bits or identical "
                      "bytes) or the dlib ResNet recognizer (independent of SFace) puts them closer than its "
                      "FMR-1e-4 distance on East-Asian pairs of different nationality (clean labels); genuine pairs that are the same photo twice removed; applied to "
                      "East-Asian sets (celeb, aaf, celeb fused); LFW and NUAA labels kept",
            "second_recognizer": "none (--no-second-recognizer)" if args.no_second_recognizer
            else second_recognizer.fingerprint(),
            "dlib_confirm_distance": dlib_below,
            "tail_check": tail_check,
            "dlib_faces_found": int(east_found.sum()),
            "east_asian_images": len(east),
        },
        # "after"/"before"/"after_if_uncleaned": one reference photo (m = 1); "*_by_references": per m,
        # the last m for every larger one.
        "thresholds": {"before": before, "after": after, "lfw_only": lfw_only, "after_if_uncleaned": raw_by_m[1],
                       "after_by_references": {str(m): t for m, t in after_by_m.items()},
                       "before_by_references": {str(m): t for m, t in before_by_m.items()},
                       "after_if_uncleaned_by_references": {str(m): t for m, t in raw_by_m.items()}},
        "calibration": calibration_detail,
        "calibration_by_references": {str(m): detail(levels) for m, levels in levels_by_m.items()},
        "report": report,
        "multi_reference_max_over_m_at_after": multi_reference,
        "fta": {"lfw": int((~lfw_table.acquired).sum()), "east_asian": int((~east_table.acquired).sum()),
                "nuaa_live": int((~live_table.acquired).sum())},
        "seconds": round(time.perf_counter() - started, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "demographics.json").write_text(json.dumps(result, indent=2) + "\n")
    from idv.evaluation.demographics_report import write_plot, write_table

    write_table(result, args.out / "demographics.md")
    write_plot(result, args.out / "demographics.png")
    for m, levels in levels_by_m.items():
        for lv in levels:
            say(f"{lv.level}, {m}{'+' if m == max(levels_by_m) else ''} reference photo(s): before "
                f"{before_by_m[m][lv.level]:.4f} -> after {lv.threshold:.4f} (decided by {lv.decided_by})")
    if args.write_manifest:
        # "<level>": one reference photo; "<level>@m<k>": a reference fused from k (the largest k: k or more).
        values: dict[str, float | str] = {level_key(level, m): t for m, by_level in after_by_m.items()
                                          for level, t in by_level.items()}
        values.update({"population": POPULATION, "source": "benchmarks/results/demographics.json",
                       "fusion": "plain", "references": "mean",
                       "references_note": f"'<level>' holds for one reference photo, '<level>@m<k>' for a reference "
                                          f"fused from k photos; m{max(VOTING_BY_M)} for {max(VOTING_BY_M)} or more; "
                                          "the node picks by the identity's template count (idv/reference_thresholds.py)",
                       "rule": RULE})
        write_manifest_thresholds(
            args.manifest, recognizer, values,
            "Written by `idv eval demographics --write-manifest` (idv/evaluation/demographics_run.py); do not edit "
            "by hand.\nDefault population: East-Asian (LFW-only thresholds let East-Asian impostors through above "
            "the nominal FMR; see benchmarks/results/demographics.md).")
        say(f"thresholds written to {args.manifest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(echo=print))
