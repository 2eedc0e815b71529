"""The verification core: request values in, a verdict out. No gRPC in here.

    validate (counts, ID number, name, purpose, frame headers)
    -> look up the reference (keyed hash of the ID)
    -> decode -> detect on a downscaled copy (exactly one face) -> align -> quality gate
    -> k best frames: landmarks re-detected at the full-size detector's scale, embedded in one call
    -> liveness -> fuse the k embeddings -> compare at the manifest's threshold
    -> verdict; every decoded buffer is zeroed before returning

An unknown ID and a name that does not match are not answered early: the
burst is processed and compared against a random decoy template, so the answer
and its timing match those of a face mismatch (nothing to learn from either).
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np

from idv.errors import AlreadyEnrolled, Cancelled, DeadlineExceeded, InvalidRequest, NotServing
from idv.face.burst import BurstPolicy, pick_frames
from idv.face.detector import FaceDetector
from idv.face.embedder import Embedder, align_face
from idv.face.quality import QualityLimits, assess
from idv.face.types import FaceDetection
from idv.identity import IdentityError, normalise_name, parse_id_number
from idv.imaging import ImageHeader, ImageLimits, check_header, decode_frame
from idv.references import ReferenceVault
from idv.verdicts import CALLER_REASON, Purpose, Reason, TrueReason, Verdict

log = logging.getLogger(__name__)


class Budget:
    """The time a request may still use, and whether its caller is still there; checked between
    stages (gRPC never interrupts a handler, so a cancelled call would otherwise run to the end)."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic,
                 cancelled: Callable[[], bool] = lambda: False):
        self._clock = clock
        self._deadline = clock() + seconds
        self._cancelled = cancelled

    def remaining(self) -> float:
        return self._deadline - self._clock()

    def check(self, stage: str) -> None:
        if self._cancelled():
            raise Cancelled(f"the caller cancelled before the {stage} stage")
        if self.remaining() <= 0:
            raise DeadlineExceeded(f"deadline exceeded before the {stage} stage")


@dataclass(frozen=True)
class VerifyCommand:
    id_number: str
    name: str
    purpose: Purpose | None
    frames: tuple[bytes, ...]
    challenge_id: str = ""
    caller: str = "anonymous"


@dataclass(frozen=True)
class EnrollCommand:
    id_number: str
    name: str
    reference_images: tuple[bytes, ...]
    replace: bool = False
    caller: str = "anonymous"


@dataclass(frozen=True)
class VerifyOutcome:
    request_id: str
    verdict: Verdict
    reason: Reason
    true_reason: TrueReason  # audit only
    id_key: str  # keyed hash of the ID, audit only ("" when the ID was invalid)
    timings_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class EnrollOutcome:
    request_id: str
    template_count: int
    flagged_for_review: bool = False
    duplicate_of: str = ""  # keyed hash of the identity the face also matched; audit only
    id_key: str = ""  # keyed hash of the enrolled ID; audit only


@dataclass(frozen=True, eq=False)
class FaceObservation:
    """One frame's face after detection, alignment and the quality gate (buffers owned by the request)."""

    frame_bgr: np.ndarray
    face: FaceDetection
    aligned_bgr: np.ndarray
    # Only the burst's k embedded frames have one (idv/face/burst.py); None elsewhere.
    embedding: np.ndarray | None
    usable: bool  # passed the quality gate: only usable frames are embedded and compared
    sharpness: float = 0.0  # the quality gate's measure: ranks the frames worth embedding


@dataclass(frozen=True)
class ValidatedVerify:
    canonical_id: str
    name: str
    id_key: str
    purpose: Purpose
    frames: tuple[bytes, ...]
    headers: tuple[ImageHeader, ...] = ()  # parsed once by validate, reused by the decoder


class LivenessGate(Protocol):
    def is_live(self, observations: Sequence[FaceObservation]) -> bool: ...


class Screening(Protocol):
    """1:N checks against the enrolled gallery (idv.gallery.Screening)."""

    def before_enroll(self, id_key: str, templates: np.ndarray) -> str:
        """Raise to refuse a duplicate face; return the other identity's key to flag it ('' if none)."""
        ...

    def after_enroll(self, id_key: str, templates: np.ndarray) -> None: ...

    def impersonated(self, id_key: str, probe: np.ndarray, claimed_score: float) -> bool: ...


class ActionCheck(Protocol):
    def performed(self, frames: Sequence[np.ndarray], faces: Sequence[FaceDetection],
                  actions: Sequence[str]) -> bool: ...


@dataclass(frozen=True)
class PipelineLimits:
    # Liveness cannot judge a single frame: shorter bursts are refused before decoding.
    min_frames: int = 1
    max_frames: int = 8
    max_frames_with_challenge: int = 24
    max_reference_images: int = 8
    bystander_ratio: float = 0.5
    image: ImageLimits = ImageLimits()
    quality: QualityLimits = QualityLimits()
    burst: BurstPolicy = BurstPolicy()


class _StageTimer:
    def __init__(self) -> None:
        self.timings: dict[str, float] = {}

    def merge(self, timings: dict[str, float]) -> None:
        """Add another timer's stages (per-frame work summed: CPU time spent, not wall time)."""
        for name, ms in timings.items():
            self.timings[name] = self.timings.get(name, 0.0) + ms

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = self.timings.get(name, 0.0) + (time.perf_counter() - start) * 1000.0


@dataclass(eq=False)
class _PreparedFrame:
    """One frame's result from the frame pool: an observation, a verdict-level failure or an error."""

    index: int
    owned: list[np.ndarray]
    timings: dict[str, float]
    observation: FaceObservation | None = None
    failure: TrueReason | None = None
    error: BaseException | None = None


class _FrameFailure(Exception):
    def __init__(self, reason: TrueReason):
        super().__init__(reason.value)
        self.reason = reason


def _done(fn: Callable, *args: object) -> Future:
    """`fn(*args)` run now, as a finished future (the same collection code with or without a pool)."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except BaseException as error:  # noqa: BLE001 (handed to the collector)
        future.set_exception(error)
    return future


def _zero(arrays: Sequence[np.ndarray]) -> None:
    """Overwrite request-owned pixel and embedding buffers so nothing of the probe outlives the call."""
    for array in arrays:
        if array.flags.writeable:
            array.fill(0)


class VerificationPipeline:
    def __init__(
        self,
        detector: FaceDetector,
        embedder: Embedder,
        vault: ReferenceVault,
        threshold: float,
        limits: PipelineLimits,
        liveness: LivenessGate | None = None,
        actions: ActionCheck | None = None,
        screening: Screening | None = None,
        frame_pool: Executor | None = None,
    ):
        self._detector = detector
        self._embedder = embedder
        self._vault = vault
        self._threshold = threshold
        self._limits = limits
        self._liveness = liveness
        self._actions = actions
        self._screening = screening
        self._frame_pool = frame_pool

    @property
    def vault(self) -> ReferenceVault:
        return self._vault

    @property
    def fingerprints(self) -> dict[str, str]:
        return {"detector": self._detector.fingerprint, "recognizer": self._embedder.fingerprint}

    # ------------------------------------------------------------------ checks
    def _check_frames(self, frames: Sequence[bytes], maximum: int, what: str, minimum: int = 1) -> list[ImageHeader]:
        if len(frames) < minimum:
            raise InvalidRequest(f"{len(frames)} {what} were sent; send {minimum} to {maximum} of one live capture",
                                 "FRAME_COUNT")
        if len(frames) > maximum:
            raise InvalidRequest(f"{len(frames)} {what} were sent; at most {maximum} are accepted", "FRAME_COUNT")
        return [check_header(data, self._limits.image, index) for index, data in enumerate(frames)]

    @staticmethod
    def _identity(id_number: str, name: str) -> tuple[str, str]:
        try:
            return parse_id_number(id_number).value, normalise_name(name)
        except IdentityError as exc:
            raise InvalidRequest(exc.message, exc.reason) from None

    # ------------------------------------------------------------------ stages
    def _prepare_frame(self, index: int, data: bytes, budget: Budget,
                       header: ImageHeader | None = None) -> _PreparedFrame:
        """Decode, detect, align and quality-check one frame (runs on the frame pool)."""
        timer = _StageTimer()
        owned: list[np.ndarray] = []
        try:
            budget.check("decode")
            with timer.stage("decode"):
                image = decode_frame(data, self._limits.image, index, header)
            owned.append(image)
            budget.check("detect")
            with timer.stage("detect"):
                faces = self._detector.detect(image)
            subject, others = self._subject(faces)
            if subject is None or others:
                failure = TrueReason.NO_FACE if subject is None else TrueReason.MULTIPLE_FACES
                return _PreparedFrame(index, owned, timer.timings, failure=failure)
            with timer.stage("align"):
                aligned = align_face(image, subject)
            owned.append(aligned)
            with timer.stage("quality"):
                report = assess(subject, aligned, self._limits.quality)
            observation = FaceObservation(image, subject, aligned, None, report.passed, report.sharpness)
            return _PreparedFrame(index, owned, timer.timings, observation=observation)
        except BaseException as error:  # hand the buffers back for zeroing, then re-raise in the request thread
            return _PreparedFrame(index, owned, timer.timings, error=error)

    def _observe(
        self, frames: Sequence[bytes], timer: _StageTimer, budget: Budget, owned: list[np.ndarray],
        headers: Sequence[ImageHeader] = (),
    ) -> list[FaceObservation]:
        """Every frame decoded and checked (in parallel on the shared frame pool); then the burst's
        k best usable frames embedded in one model call.

        One request then uses every core when the node is quiet; under load the pool is the
        node's compute queue, so throughput is what it was with one thread per request.
        """
        parsed = list(headers) if len(headers) == len(frames) else [None] * len(frames)
        if self._frame_pool is None:
            prepared = [self._prepare_frame(i, data, budget, parsed[i]) for i, data in enumerate(frames)]
        else:
            futures = [self._frame_pool.submit(self._prepare_frame, i, data, budget, parsed[i])
                       for i, data in enumerate(frames)]
            prepared = [future.result() for future in futures]
        for frame in prepared:  # every buffer is the request's to zero, whatever happened
            owned.extend(frame.owned)
            timer.merge(frame.timings)
        for frame in prepared:  # in frame order: the first problem is the answer
            if frame.error is not None:
                raise frame.error
            if frame.failure is not None:
                raise _FrameFailure(frame.failure)
        observations = [frame.observation for frame in prepared if frame.observation is not None]
        # A burst may hold a few motion-blurred frames (people move); most must be usable.
        usable = sum(1 for o in observations if o.usable)
        if usable * 2 < len(observations) or usable == 0:
            raise _FrameFailure(TrueReason.LOW_QUALITY)
        budget.check("embed")
        return self._embed_best(observations, timer, owned)

    def _embed_best(self, observations: list[FaceObservation], timer: _StageTimer,
                    owned: list[np.ndarray]) -> list[FaceObservation]:
        """The k best usable frames, spread over the burst, embedded in one call (the rest keep None)."""
        policy = self._limits.burst
        usable = [i for i, o in enumerate(observations) if o.usable]
        chosen = [usable[j] for j in pick_frames(usable, [observations[i].sharpness for i in usable],
                                                   policy.embed_frames)]

        def refine_and_align(obs: FaceObservation) -> tuple[FaceDetection, np.ndarray]:
            face = self._detector.refine(obs.frame_bgr, obs.face) if policy.refine_landmarks else obs.face
            return face, (obs.aligned_bgr if face is obs.face else align_face(obs.frame_bgr, face))

        with timer.stage("refine"):
            if self._frame_pool is None:
                pending = [_done(refine_and_align, observations[i]) for i in chosen]
            else:  # the k refinements in parallel, like the frames
                pending = [self._frame_pool.submit(refine_and_align, observations[i]) for i in chosen]
            refined: dict[int, tuple[FaceDetection, np.ndarray]] = {}
            failure: BaseException | None = None
            for i, future in zip(chosen, pending):  # collect every crop (to zero it) before raising
                try:
                    refined[i] = future.result()
                except BaseException as error:  # noqa: BLE001 (re-raised below)
                    failure = failure or error
        for i, (_, aligned) in refined.items():
            if aligned is not observations[i].aligned_bgr:
                owned.append(aligned)
        if failure is not None:
            raise failure
        crops = [refined[i][1] for i in chosen]
        with timer.stage("embed"):
            embeddings = self._embedder.embed(crops)
        owned.append(embeddings)
        result = list(observations)
        for row, i in enumerate(chosen):
            face, aligned = refined[i]
            result[i] = dataclasses.replace(observations[i], face=face, aligned_bgr=aligned, embedding=embeddings[row])
        return result

    def _subject(self, faces: Sequence[FaceDetection]) -> tuple[FaceDetection | None, list[FaceDetection]]:
        """The largest face, and the other faces big enough to be a second participant.

        Check-in terminals stand in lobbies: a bystander far behind the subject
        (measured on NUAA: background faces are 0.15-0.4 of the subject's size) must
        not fail the check; a second face of comparable size (at least
        `bystander_ratio` of the subject's) makes it ambiguous who is verified.
        """
        if not faces:
            return None, []
        subject = max(faces, key=lambda f: min(f.width, f.height))
        size = min(subject.width, subject.height)
        others = [f for f in faces if f is not subject
                  and min(f.width, f.height) >= self._limits.bystander_ratio * size]
        return subject, others

    def _fused(self, observations: Sequence[FaceObservation]) -> np.ndarray:
        mean = np.mean([obs.embedding for obs in observations if obs.embedding is not None], axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    # ------------------------------------------------------------------ verify
    def validate(self, command: VerifyCommand) -> ValidatedVerify:
        """Cheap checks before any pixel is decoded: counts, headers, ID number, name, purpose."""
        if command.purpose is None:
            raise InvalidRequest("purpose is required (REGISTRATION, LICENCE_RENEWAL or CHECK_IN)",
                                 "MISSING_PURPOSE")
        maximum = self._limits.max_frames_with_challenge if command.challenge_id else self._limits.max_frames
        headers = self._check_frames(command.frames, maximum, "frames", self._limits.min_frames)
        canonical_id, name = self._identity(command.id_number, command.name)
        return ValidatedVerify(canonical_id, name, self._vault.id_key(canonical_id), command.purpose, command.frames,
                               tuple(headers))

    def evaluate(
        self, request: ValidatedVerify, budget: Budget, actions: tuple[str, ...] | None = None
    ) -> VerifyOutcome:
        """Decode, detect, check liveness (and the challenge's actions), compare: a verdict."""
        request_id = str(uuid.uuid4())
        timer = _StageTimer()
        budget.check("reference lookup")
        with timer.stage("lookup"):
            record = self._vault.lookup(request.canonical_id)
        identity_problem: TrueReason | None = None
        if record is None:
            identity_problem = TrueReason.NO_REFERENCE
        elif not self._vault.name_matches(record, request.name):
            identity_problem = TrueReason.NAME_MISMATCH

        owned: list[np.ndarray] = []
        try:
            try:
                observations = self._observe(request.frames, timer, budget, owned, request.headers)
            except _FrameFailure as failure:
                return self._outcome(request_id, failure.reason, request.id_key, timer)
            if self._liveness is not None:
                budget.check("liveness")
                with timer.stage("liveness"):
                    live = self._liveness.is_live(observations)
                if not live:
                    return self._outcome(request_id, TrueReason.LIVENESS_FAILED, request.id_key, timer)
            if actions is not None:
                if self._actions is None:
                    raise NotServing("active challenges need the FaceMesh model, which this node has not loaded")
                budget.check("challenge")
                with timer.stage("challenge"):
                    performed = self._actions.performed([o.frame_bgr for o in observations],
                                                        [o.face for o in observations], actions)
                if not performed:
                    return self._outcome(request_id, TrueReason.CHALLENGE_FAILED, request.id_key, timer)
            budget.check("compare")
            with timer.stage("compare"):
                probe = self._fused(observations)
                owned.append(probe)
                if identity_problem is None and record is not None:
                    reference = self._vault.decrypt(record, self._embedder.fingerprint, self._embedder.dimension)
                    templates = reference.templates
                else:
                    # Decoy: same work, same answer as a face mismatch.
                    decoy = np.random.default_rng(secrets.randbits(64)).standard_normal(
                        (1, self._embedder.dimension)).astype(np.float32)
                    templates = decoy / np.linalg.norm(decoy)
                owned.append(templates)
                claimed_score = float(np.max(templates @ probe))
                matched = claimed_score >= self._threshold
            if identity_problem is not None:
                return self._outcome(request_id, identity_problem, request.id_key, timer)
            # Screened only when the claim would pass: a failed claim answers NOT_VERIFIED whatever
            # else the face matches, so the answer never tells whether a face is enrolled elsewhere.
            if matched and self._screening is not None:
                budget.check("screening")
                with timer.stage("screen"):
                    impersonated = self._screening.impersonated(request.id_key, probe, claimed_score)
                if impersonated:
                    return self._outcome(request_id, TrueReason.IMPERSONATION_SUSPECTED, request.id_key, timer)
            true_reason = TrueReason.VERIFIED if matched else TrueReason.FACE_MISMATCH
            return self._outcome(request_id, true_reason, request.id_key, timer)
        finally:
            _zero(owned)

    def verify(self, command: VerifyCommand, budget: Budget) -> VerifyOutcome:
        """Validate and evaluate without throttling or challenges (tools and benchmarks)."""
        return self.evaluate(self.validate(command), budget)

    @staticmethod
    def _outcome(request_id: str, true_reason: TrueReason, id_key: str, timer: _StageTimer) -> VerifyOutcome:
        reason = CALLER_REASON[true_reason]
        verdict = Verdict.PASS if true_reason is TrueReason.VERIFIED else Verdict.FAIL
        return VerifyOutcome(request_id, verdict, reason, true_reason, id_key, dict(timer.timings))

    # ------------------------------------------------------------------ enroll
    def enroll(self, command: EnrollCommand, budget: Budget) -> EnrollOutcome:
        request_id = str(uuid.uuid4())
        headers = self._check_frames(command.reference_images, self._limits.max_reference_images, "reference images")
        canonical_id, name = self._identity(command.id_number, command.name)
        owned: list[np.ndarray] = []
        try:
            aligned_crops = []
            for index, data in enumerate(command.reference_images):
                budget.check("decode")
                image = decode_frame(data, self._limits.image, index, headers[index])
                owned.append(image)
                subject, others = self._subject(self._detector.detect(image))
                meta = {"image_index": str(index)}
                if subject is None:
                    raise InvalidRequest(f"reference image {index} shows no face", "REFERENCE_NO_FACE", meta)
                if others:
                    raise InvalidRequest(f"reference image {index} shows {len(others) + 1} faces; exactly one is needed",
                                         "REFERENCE_MULTIPLE_FACES", meta)
                subject = self._detector.refine(image, subject)  # landmarks at full resolution
                aligned = align_face(image, subject)
                owned.append(aligned)
                report = assess(subject, aligned, self._limits.quality)
                if not report.passed:
                    raise InvalidRequest(f"reference image {index} is of too low quality ({report.failure})",
                                         "REFERENCE_LOW_QUALITY", meta)
                aligned_crops.append(aligned)
            budget.check("embed")
            templates = self._embedder.embed(aligned_crops)
            owned.append(templates)
            id_key = self._vault.id_key(canonical_id)
            duplicate_of = ""
            if self._screening is not None:
                budget.check("screening")
                duplicate_of = self._screening.before_enroll(id_key, templates)
            stored = self._vault.enroll(canonical_id, name, templates, self._embedder.fingerprint, command.replace)
            if not stored:
                raise AlreadyEnrolled("this identity is already enrolled; set replace to overwrite its reference")
            if self._screening is not None:
                self._screening.after_enroll(id_key, templates)
            return EnrollOutcome(request_id, len(aligned_crops), bool(duplicate_of), duplicate_of, id_key)
        finally:
            _zero(owned)
