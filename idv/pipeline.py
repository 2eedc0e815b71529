"""The verification core: frames and a reference in, a decision out. No gRPC, no policy.

    check_burst (frame count, headers)                       before anything is decoded
    evaluate:  decode -> detect (one subject) -> align -> quality gate -> embed
               -> liveness -> the challenge's actions -> fuse frames
               -> compare with the reference at the calibrated threshold -> 1:N screen
               -> a Decision; every buffer of the request is zeroed before returning
    templates: the same stages for the reference images of an enrolment

The core knows nothing of callers, ID numbers, names, challenges or throttling: the service
(idv.service) validates the request, derives the keyed ID, looks up and decrypts the
reference and redeems the challenge, then hands the core only what it decides on. When the
service has no usable reference (unknown ID, wrong name) it passes none, and the burst is
compared with a random decoy template, so the work and the answer match a face mismatch.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, Future, wait
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np

from idv.errors import Cancelled, DeadlineExceeded, InvalidRequest, NotServing
from idv.face.burst import BurstPolicy, pick_frames
from idv.face.detector import FaceDetector
from idv.face.embedder import Embedder, align_face
from idv.face.reference_fusion import fuse_references
from idv.face.quality import QualityLimits, assess
from idv.face.types import FaceDetection
from idv.imaging import ImageHeader, ImageLimits, check_header, decode_frame
from idv.reference_thresholds import ReferenceThresholds
from idv.verdicts import TrueReason
from liveness.duplicates import DuplicateConfig, burst_thumbnails, has_near_duplicates
from liveness.light import LightConfig, LightEvidence, LightStep, analyse, frame_chroma, sequence_duration_ms
from liveness.tasks import run_on

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


@dataclass(frozen=True, eq=False)
class ClaimedReference:
    """What the service hands the core to compare with: the claimed identity's templates."""

    id_key: str  # keyed hash of the claimed ID: 1:N screening excludes this identity
    templates: np.ndarray | None  # (K, D) unit vectors; None: no usable reference, compare with a decoy


@dataclass(frozen=True)
class Decision:
    """The core's answer for one burst: what it found (the service maps it to a caller reason)."""

    true_reason: TrueReason
    timings_ms: dict[str, float] = field(default_factory=dict)
    # Audit only, never to a caller: e.g. the light challenge's correlation and strength.
    evidence: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class LightJudgement:
    """`judge_light`'s answer: VERIFIED when the light check passes, else why not (CAPTURE_TIMING,
    NO_FACE, MULTIPLE_FACES, LOW_QUALITY before the analysis; CHALLENGE_FAILED by it)."""

    true_reason: TrueReason
    evidence: LightEvidence | None  # None when the analysis did not run

    @property
    def passed(self) -> bool:
        return self.true_reason is TrueReason.VERIFIED


@dataclass(frozen=True)
class LightRequest:
    """Issue 14: the light sequence the screen flashed, and each frame's capture time (ms from its start)."""

    sequence: tuple[LightStep, ...]
    timestamps_ms: tuple[float, ...]


def light_timing_plausible(request: LightRequest, frame_count: int, max_interval_ms: float = 600.0) -> bool:
    """One time per frame, strictly increasing, no gap longer than `max_interval_ms`, and covering
    the sequence: an unlit frame before it starts and a frame after it ends."""
    times = request.timestamps_ms
    if len(times) != frame_count or frame_count < 3:
        return False
    steps = [b - a for a, b in zip(times, times[1:])]
    return (all(0 < step <= max_interval_ms for step in steps) and times[0] < 0
            and times[-1] >= sequence_duration_ms(request.sequence))


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


@dataclass(frozen=True, eq=False)
class CheckedBurst:
    """Frames that passed `check_burst`, with the headers it parsed (each frame is parsed once)."""

    frames: tuple[bytes, ...]
    headers: tuple[ImageHeader, ...]


class PendingLiveness(Protocol):
    def wait(self) -> None:
        """Until every task the check started has ended."""
        ...

    def finish(self, observations: Sequence[FaceObservation]) -> bool:
        """Live? `observations`: the same frames, the chosen ones now with their embeddings."""
        ...


class LivenessGate(Protocol):
    def frames_judged(self, frames: int, embedded: Sequence[int]) -> list[int]:
        """Which frames of a burst of `frames` the cues read (the `embedded` ones among them)."""
        ...

    def begin(self, observations: Sequence[FaceObservation], embedded: Sequence[int],
              owned: list[np.ndarray]) -> PendingLiveness:
        """Start the cues that need no embedding (`embedded`: the frames that will have one)."""
        ...


class Screening(Protocol):
    """1:N checks against the enrolled gallery (idv.gallery.Screening)."""

    def before_enroll(self, id_key: str, templates: np.ndarray) -> str:
        """Raise to refuse a duplicate face; return the other identity's key to flag it ('' if none)."""
        ...

    def after_enroll(self, id_key: str, templates: np.ndarray) -> None: ...

    def impersonated(self, id_key: str, probe: np.ndarray, claimed_score: float) -> bool: ...


class PendingActionCheck(Protocol):
    def stop(self) -> None:
        """Drop the tasks not started yet and wait for the rest."""
        ...

    def finish(self) -> bool:
        """Were the actions performed, in order?"""
        ...


class ActionCheck(Protocol):
    def begin(self, frames: Sequence[np.ndarray], faces: Sequence[FaceDetection], actions: Sequence[str],
              owned: list[np.ndarray], executor: Executor | None) -> PendingActionCheck:
        """Start the per-frame landmark work (on `executor` when given)."""
        ...


@dataclass(frozen=True)
class PipelineLimits:
    """The `[limits]` settings section."""

    max_frames: int = 8
    # A challenge's actions take longer to perform than a passive burst lasts.
    max_frames_with_challenge: int = 24
    max_reference_images: int = 8
    # A second face at least this fraction of the subject's size fails MULTIPLE_FACES; smaller
    # ones are bystanders.
    bystander_ratio: float = 0.5

    def problems(self) -> list[str]:
        problems = [f"limits.{name} must be at least 1" for name in
                    ("max_frames", "max_frames_with_challenge", "max_reference_images") if getattr(self, name) < 1]
        if self.max_frames > self.max_frames_with_challenge:
            problems.append("limits.max_frames must not exceed max_frames_with_challenge")
        if not (0 < self.bystander_ratio <= 1):
            problems.append("limits.bystander_ratio must be in (0, 1]")
        return problems


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


@dataclass(eq=False)
class _EmbeddedFrame:
    """One chosen frame's result from the frame pool: its refined face, crop and embedding, or an error."""

    owned: list[np.ndarray]
    timings: dict[str, float]
    face: FaceDetection | None = None
    aligned: np.ndarray | None = None
    embedding: np.ndarray | None = None
    error: BaseException | None = None


class _FrameFailure(Exception):
    def __init__(self, reason: TrueReason):
        super().__init__(reason.value)
        self.reason = reason


class _EarlyEmbeddings:
    """Embeddings started before a burst's last frame is detected, for frames certain to be chosen
    if every frame turns out usable.

    `pick_frames` cuts the usable frames into k runs and takes each run's sharpest. While every
    frame seen so far is usable, a run whose frames have all been seen has a known winner, unless
    a later frame turns out unusable (the runs then shift): its refinement and embedding start
    at once. They are the very calls the pipeline would make later (the same crop, one per model
    call), so a frame chosen in the end reuses them bit for bit; one not chosen is waited for and
    its buffers zeroed with the request's (`settle`)."""

    def __init__(self, pipeline: VerificationPipeline, frames: int, timer: _StageTimer, owned: list[np.ndarray]):
        self._pipeline = pipeline
        self._runs = [[int(i) for i in run] for run in np.array_split(np.arange(frames), pipeline._burst.embed_frames)
                      if len(run)]
        self._timer = timer
        self._owned = owned
        self._started: dict[int, tuple[_EmbeddedFrame, Future]] = {}
        self._used: set[int] = set()
        self._open = True

    def offer(self, prepared: Sequence[_PreparedFrame]) -> None:
        """The burst's frames prepared so far, in order."""
        if not self._open:
            return
        if any(f.observation is None or not f.observation.usable for f in prepared):
            self._open = False  # a failure or an unusable frame: the choice is no longer known early
            return
        for run in self._runs:
            if run[-1] >= len(prepared) or any(i in self._started for i in run):
                continue
            best = run[int(np.argmax([prepared[i].observation.sharpness for i in run]))]  # as pick_frames
            observation = prepared[best].observation
            assert observation is not None
            # On the request thread: cheap, as every detector's refine is today (the landmarks
            # are already the full-size run's); a costly refine would belong on the pool.
            refined = self._pipeline._refine_one(observation)
            self._owned.extend(refined.owned)
            self._timer.merge(refined.timings)
            if refined.error is not None:  # left for the pipeline's own refinement to raise
                self._open = False
                return
            assert refined.aligned is not None
            try:
                task = self._pipeline._run(self._pipeline._embed_one, refined.aligned)
            except RuntimeError:  # the pool is shutting down: the pipeline's own submit will say so
                self._open = False
                return
            self._started[best] = (refined, task)

    def refined(self, chosen: Sequence[int]) -> dict[int, _EmbeddedFrame]:
        """The chosen frames refined early (their buffers are already the request's)."""
        found = {i: self._started[i][0] for i in chosen if i in self._started}
        return {i: dataclasses.replace(frame, owned=[], timings={}) for i, frame in found.items()}

    def embeddings(self, chosen: Sequence[int]) -> dict[int, Future]:
        """The chosen frames' embedding tasks started early; the pipeline settles these."""
        found = {i: self._started[i][1] for i in chosen if i in self._started}
        self._used.update(found)
        return found

    def settle(self) -> None:
        """Drop the unused early tasks not started yet, wait for the rest, and hand every task's
        buffers to the request, to be zeroed (used ones too: the request may leave before it
        collected them; zeroing twice is harmless)."""
        for index, (_, task) in self._started.items():
            if index not in self._used:
                task.cancel()
        _collect([task for _, task in self._started.values()], self._owned)


def _collect(tasks: Sequence[Future], owned: list[np.ndarray]) -> None:
    """Wait for `tasks` (each returning an _EmbeddedFrame) and add their buffers to `owned`, so a
    request that leaves before it collected them still zeroes what they made."""
    wait(tasks)
    for task in tasks:
        if not task.cancelled() and task.exception() is None:
            owned.extend(task.result().owned)


def select_subject(faces: Sequence[FaceDetection], bystander_ratio: float) -> tuple[FaceDetection | None, list[FaceDetection]]:
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
    others = [f for f in faces if f is not subject and min(f.width, f.height) >= bystander_ratio * size]
    return subject, others


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
        threshold: ReferenceThresholds | float,
        limits: PipelineLimits,
        image: ImageLimits,
        quality: QualityLimits,
        burst: BurstPolicy,
        liveness: LivenessGate | None = None,
        actions: ActionCheck | None = None,
        screening: Screening | None = None,
        frame_pool: Executor | None = None,
        duplicates: DuplicateConfig | None = None,
        light: LightConfig = LightConfig(),
    ):
        self._detector = detector
        self._embedder = embedder
        # Per number of fused reference photos (idv/reference_thresholds.py); a float: one for every m.
        self._thresholds = threshold if isinstance(threshold, ReferenceThresholds) \
            else ReferenceThresholds((float(threshold),))
        self._limits = limits
        self._image = image
        self._quality = quality
        self._burst = burst
        self._liveness = liveness
        self._actions = actions
        self._screening = screening
        self._frame_pool = frame_pool
        self._duplicates = duplicates  # issue 14: near-duplicate frames within a burst
        self._light = light  # issue 14: the light challenge's thresholds
        # Liveness cannot judge a single frame: shorter bursts are refused before decoding.
        self._min_frames = liveness.min_frames if liveness is not None else 1

    @property
    def recognizer_fingerprint(self) -> str:
        """Templates are tagged with it: a reference made by another model is never compared."""
        return self._embedder.fingerprint

    @property
    def dimension(self) -> int:
        return self._embedder.dimension

    # ------------------------------------------------------------------ checks
    def _check_frames(self, frames: Sequence[bytes], maximum: int, what: str, minimum: int = 1) -> list[ImageHeader]:
        if len(frames) < minimum:
            raise InvalidRequest(f"{len(frames)} {what} were sent; send {minimum} to {maximum} of one live capture",
                                 "FRAME_COUNT")
        if len(frames) > maximum:
            raise InvalidRequest(f"{len(frames)} {what} were sent; at most {maximum} are accepted", "FRAME_COUNT")
        return [check_header(data, self._image, index) for index, data in enumerate(frames)]

    def check_burst(self, frames: Sequence[bytes], with_challenge: bool) -> CheckedBurst:
        """Frame count and every frame's header, before any pixel is decoded."""
        maximum = self._limits.max_frames_with_challenge if with_challenge else self._limits.max_frames
        return CheckedBurst(tuple(frames), tuple(self._check_frames(frames, maximum, "frames", self._min_frames)))

    def check_references(self, images: Sequence[bytes]) -> CheckedBurst:
        return CheckedBurst(tuple(images),
                            tuple(self._check_frames(images, self._limits.max_reference_images, "reference images")))

    # ------------------------------------------------------------------ stages
    def _prepare_frame(self, index: int, data: bytes, budget: Budget,
                       header: ImageHeader | None = None, coarse: bool = False) -> _PreparedFrame:
        """Decode, detect, align and quality-check one frame (runs on the frame pool). `coarse`:
        detected on a shrunk copy (FaceDetector.detect_coarse), for a frame only tracked."""
        timer = _StageTimer()
        owned: list[np.ndarray] = []
        try:
            budget.check("decode")
            with timer.stage("decode"):
                image = decode_frame(data, self._image, index, header)
            owned.append(image)
            return self._face_of(index, image, budget, timer, owned, coarse)
        except BaseException as error:  # hand the buffers back for zeroing, then re-raise in the request thread
            return _PreparedFrame(index, owned, timer.timings, error=error)

    def _face_of(self, index: int, image: np.ndarray, budget: Budget, timer: _StageTimer, owned: list[np.ndarray],
                 coarse: bool) -> _PreparedFrame:
        """Detect, align and quality-check one decoded frame (`owned` already holds `image`)."""
        budget.check("detect")
        with timer.stage("detect"):
            faces = self._detector.detect_coarse(image) if coarse else self._detector.detect(image)
        subject, others = select_subject(faces, self._limits.bystander_ratio)
        if subject is None or others:
            failure = TrueReason.NO_FACE if subject is None else TrueReason.MULTIPLE_FACES
            return _PreparedFrame(index, owned, timer.timings, failure=failure)
        with timer.stage("align"):
            aligned = align_face(image, subject)
        owned.append(aligned)
        with timer.stage("quality"):
            report = assess(subject, aligned, self._quality)
        observation = FaceObservation(image, subject, aligned, None, report.passed, report.sharpness)
        return _PreparedFrame(index, owned, timer.timings, observation=observation)

    def _exact(self, observations: list[FaceObservation], indices: Sequence[int], timer: _StageTimer,
               budget: Budget, owned: list[np.ndarray]) -> list[FaceObservation]:
        """The observations with the `indices` frames (detected coarse) detected again at full size,
        one task each; raises _FrameFailure as `_detect_burst` would for such a frame."""

        def exact_one(index: int) -> _PreparedFrame:
            task_timer = _StageTimer()
            made: list[np.ndarray] = []
            try:
                return self._face_of(index, observations[index].frame_bgr, budget, task_timer, made, coarse=False)
            except BaseException as error:  # noqa: BLE001 (re-raised in the request thread)
                return _PreparedFrame(index, made, task_timer.timings, error=error)

        done = [future.result() for future in [self._run(exact_one, i) for i in indices]]
        result = list(observations)
        for frame in done:
            owned.extend(frame.owned)
            timer.merge(frame.timings)
        for frame in done:  # in burst order: the first problem is the answer
            if frame.error is not None:
                raise frame.error
            if frame.failure is not None:
                raise _FrameFailure(frame.failure)
            assert frame.observation is not None
            result[frame.index] = frame.observation
        return result

    def _coarse_burst(self, frame_count: int, light: LightRequest | None) -> bool:
        """Whether this burst's frames are detected coarse first (BurstPolicy.coarse_detection_above).
        Not with a light challenge: its analysis reads every frame's face, calibrated at full size."""
        above = self._burst.coarse_detection_above
        return bool(above) and frame_count > above and light is None

    def _exact_where_needed(self, observations: list[FaceObservation], chosen: list[int], timer: _StageTimer,
                            budget: Budget, owned: list[np.ndarray]) -> tuple[list[FaceObservation], list[int]]:
        """A coarse burst's frames the recognizer or the liveness cues read, at full size: the chosen
        ones (chosen on the coarse crops' sharpness) and those liveness judges. Should a chosen frame fail the quality gate at full size
        (its coarse crop passed), the whole burst is detected at full size and chosen again, as
        the full-size path would have chosen."""
        judged = self._liveness.frames_judged(len(observations), chosen) if self._liveness is not None else []
        needed = sorted(set(chosen) | set(judged))
        observations = self._exact(observations, needed, timer, budget, owned)
        if all(observations[i].usable for i in chosen):
            return observations, chosen
        rest = [i for i in range(len(observations)) if i not in needed]
        observations = self._exact(observations, rest, timer, budget, owned)
        usable = sum(1 for o in observations if o.usable)
        if usable * 2 < len(observations) or usable == 0:
            raise _FrameFailure(TrueReason.LOW_QUALITY)
        return observations, self._choose(observations)

    def _observe(
        self, frames: Sequence[bytes], timer: _StageTimer, budget: Budget, owned: list[np.ndarray],
        headers: Sequence[ImageHeader] = (),
    ) -> list[FaceObservation]:
        """Every frame decoded and checked, then the burst's k best usable frames embedded."""
        observations = self._detect_burst(frames, timer, budget, owned, headers)
        budget.check("embed")
        chosen = self._choose(observations)
        observations = self._refine(observations, chosen, timer, owned)
        return self._embedded(observations, chosen, self._start_embedding(observations, chosen), timer, owned)

    def _run(self, fn: Callable, *args: object) -> Future:
        """`fn(*args)` as a task on the frame pool, or run now (no pool) as a finished future."""
        return run_on(self._frame_pool, fn, *args)

    def _detect_burst(
        self, frames: Sequence[bytes], timer: _StageTimer, budget: Budget, owned: list[np.ndarray],
        headers: Sequence[ImageHeader] = (), coarse: bool = False, early: _EarlyEmbeddings | None = None,
    ) -> list[FaceObservation]:
        """Every frame decoded, detected, aligned and quality-checked: one task per frame on the
        frame pool. Raises _FrameFailure for a frame without one subject or a mostly unusable burst.
        `early`: offered the frames as they come in, in order, to start embeddings before the last.

        One request then uses every core when the node is quiet; under load the pool is the
        node's compute queue and the request threads only wait on it, so no more threads
        compute than the pool has (docs/operations.md, "Threads").
        """
        parsed = list(headers) if len(headers) == len(frames) else [None] * len(frames)
        futures = [self._run(self._prepare_frame, i, data, budget, parsed[i], coarse) for i, data in enumerate(frames)]
        prepared: list[_PreparedFrame] = []
        for future in futures:
            prepared.append(future.result())
            if early is not None:
                early.offer(prepared)
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
        return observations

    def _choose(self, observations: Sequence[FaceObservation]) -> list[int]:
        """The k best usable frames, spread over the burst (idv/face/burst.py), in burst order."""
        usable = [i for i, o in enumerate(observations) if o.usable]
        return [usable[j] for j in pick_frames(usable, [observations[i].sharpness for i in usable],
                                               self._burst.embed_frames)]

    def _refine_one(self, obs: FaceObservation) -> _EmbeddedFrame:
        """One chosen frame's landmarks re-detected at full resolution and its face re-aligned."""
        task_timer = _StageTimer()
        try:
            with task_timer.stage("refine"):
                face = self._detector.refine(obs.frame_bgr, obs.face) if self._burst.refine_landmarks else obs.face
                aligned = obs.aligned_bgr if face is obs.face else align_face(obs.frame_bgr, face)
            made = [aligned] if aligned is not obs.aligned_bgr else []
            return _EmbeddedFrame(made, task_timer.timings, face, aligned)
        except BaseException as error:  # hand the buffers back for zeroing, then re-raise in the request thread
            return _EmbeddedFrame([], task_timer.timings, error=error)

    def _embed_one(self, aligned: np.ndarray) -> _EmbeddedFrame:
        """One crop's embedding. One crop per model call whether or not there is a pool: the same
        calls in any order give the same vectors, so the pooled and the in-thread paths decide alike
        (batching bought nothing on the CPU: 16.1 vs 16.5 ms a crop in latency.json stages)."""
        task_timer = _StageTimer()
        try:
            with task_timer.stage("embed"):
                embedding = self._embedder.embed([aligned])
            return _EmbeddedFrame([embedding], task_timer.timings, embedding=embedding[0])
        except BaseException as error:  # noqa: BLE001 (re-raised in the request thread)
            return _EmbeddedFrame([], task_timer.timings, error=error)

    def _refine(self, observations: list[FaceObservation], chosen: Sequence[int], timer: _StageTimer,
                owned: list[np.ndarray], early: _EarlyEmbeddings | None = None) -> list[FaceObservation]:
        """The chosen frames' landmarks re-detected at full resolution and their faces re-aligned
        (one task each; a frame embedded early was refined then); liveness reads these faces, so
        this comes before it and the embedding."""
        ahead = early.refined(chosen) if early is not None else {}
        fresh = [i for i in chosen if i not in ahead]
        running = {i: self._run(self._refine_one, observations[i]) for i in fresh}
        done = [future.result() for future in running.values()]
        self._settle(done, timer, owned)
        refined = dict(zip(running, done)) | ahead
        result = list(observations)
        for i in chosen:
            frame = refined[i]
            assert frame.face is not None and frame.aligned is not None
            result[i] = dataclasses.replace(observations[i], face=frame.face, aligned_bgr=frame.aligned)
        return result

    def _start_embedding(self, observations: Sequence[FaceObservation], chosen: Sequence[int],
                         early: _EarlyEmbeddings | None = None) -> list[Future]:
        """One task per chosen frame, each embedding its one crop (or the task started early for it)."""
        ahead = early.embeddings(chosen) if early is not None else {}
        return [ahead[i] if i in ahead else self._run(self._embed_one, observations[i].aligned_bgr) for i in chosen]

    def _embedded(self, observations: list[FaceObservation], chosen: Sequence[int], pending: Sequence[Future],
                  timer: _StageTimer, owned: list[np.ndarray]) -> list[FaceObservation]:
        """The observations with the chosen frames' embeddings (the rest keep None)."""
        done = [future.result() for future in pending]
        self._settle(done, timer, owned)
        result = list(observations)
        for i, frame in zip(chosen, done):
            result[i] = dataclasses.replace(observations[i], embedding=frame.embedding)
        return result

    @staticmethod
    def _settle(done: Sequence[_EmbeddedFrame], timer: _StageTimer, owned: list[np.ndarray]) -> None:
        """Every task's buffers to the request (to zero), its timings merged; then its first error raised."""
        for frame in done:
            owned.extend(frame.owned)
            timer.merge(frame.timings)
        for frame in done:  # in burst order
            if frame.error is not None:
                raise frame.error

    def _fused(self, observations: Sequence[FaceObservation]) -> np.ndarray:
        mean = np.mean([obs.embedding for obs in observations if obs.embedding is not None], axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    # ------------------------------------------------------------------ verify
    def evaluate(self, burst: CheckedBurst, claimed: ClaimedReference, actions: tuple[str, ...] | None,
                 budget: Budget, light: LightRequest | None = None) -> Decision:
        """Decode, detect, check liveness (and the challenge's actions), compare: a decision.

        `burst` comes from `check_burst`; `actions` is None when no challenge applies.
        """
        timer = _StageTimer()
        owned: list[np.ndarray] = []
        evidence: dict[str, float] = {}
        # Tasks of this request still running on the frame pool: each has ended before `owned`
        # is zeroed, whatever path leaves this method.
        running: list[Callable[[], object]] = []
        if light is not None and not light_timing_plausible(light, len(burst.frames)):
            return Decision(TrueReason.CAPTURE_TIMING)
        try:
            coarse = self._coarse_burst(len(burst.frames), light)
            # With a pool, the embeddings of frames that will surely be chosen start while later
            # frames are still being detected (a lone request's last detection otherwise leaves
            # a core idle); never on coarse faces, which are replaced before embedding.
            early = None
            if self._frame_pool is not None and not coarse:
                early = _EarlyEmbeddings(self, len(burst.frames), timer, owned)
                running.append(early.settle)
            try:
                observations = self._detect_burst(burst.frames, timer, budget, owned, burst.headers, coarse, early)
                chosen = self._choose(observations)
                if coarse:
                    observations, chosen = self._exact_where_needed(observations, chosen, timer, budget, owned)
            except _FrameFailure as failure:
                return Decision(failure.reason, dict(timer.timings))
            budget.check("embed")
            observations = self._refine(observations, chosen, timer, owned, early)
            # The k embeddings run on the pool while the request checks near-duplicates and the
            # liveness cues that read pixels start beside them (they need the faces, not the
            # embeddings); the identity cue and the decision wait for both.
            embedding = self._start_embedding(observations, chosen, early)
            running.append(lambda: _collect(embedding, owned))
            if self._duplicates is not None and len(observations) > 1:
                with timer.stage("duplicates"):
                    thumbnails = burst_thumbnails([o.frame_bgr for o in observations],
                                                  [o.face.box_xywh for o in observations], self._duplicates)
                    owned.extend(thumbnails)
                    repeated = has_near_duplicates(thumbnails, self._duplicates)
                if repeated:
                    self._embedded(observations, chosen, embedding, timer, owned)  # its errors first, as before
                    return Decision(TrueReason.NEAR_DUPLICATE_FRAMES, dict(timer.timings))
            pending = None
            if self._liveness is not None:
                budget.check("liveness")
                with timer.stage("liveness"):
                    pending = self._liveness.begin(observations, chosen, owned)
                running.append(pending.wait)
            # A challenge's FaceMesh work needs only the frames and their faces: it joins the
            # pool's queue behind the embeddings and liveness cues, and is dropped unstarted if
            # the burst fails before its actions are judged.
            performing = None
            if actions is not None and self._actions is not None:
                budget.check("challenge")
                with timer.stage("challenge"):
                    performing = self._actions.begin([o.frame_bgr for o in observations],
                                                     [o.face for o in observations], actions, owned,
                                                     self._frame_pool)
                running.append(performing.stop)
            observations = self._embedded(observations, chosen, embedding, timer, owned)
            if pending is not None:
                with timer.stage("liveness"):
                    live = pending.finish(observations)
                if not live:
                    return Decision(TrueReason.LIVENESS_FAILED, dict(timer.timings))
            if actions is not None:
                if performing is None:
                    raise NotServing("active challenges need the FaceMesh model, which this node has not loaded")
                with timer.stage("challenge"):
                    performed = performing.finish()
                if not performed:
                    return Decision(TrueReason.CHALLENGE_FAILED, dict(timer.timings))
            if light is not None:
                budget.check("light")
                with timer.stage("light"):
                    found = self._light_evidence(observations, light, owned)
                evidence = {"light_correlation": found.correlation, "light_amplitude": found.amplitude,
                            "light_latency_ms": found.latency_ms}
                if not found.passed:
                    return Decision(TrueReason.CHALLENGE_FAILED, dict(timer.timings), evidence)
            budget.check("compare")
            with timer.stage("compare"):
                probe = self._fused(observations)
                owned.append(probe)
                if claimed.templates is not None:
                    # m reference photos are compared as one fused template (their renormalised
                    # mean; max over m would multiply the false-match chances by up to m), at the
                    # level's threshold calibrated for m fused photos: fusing raises impostor scores.
                    threshold = self._thresholds.for_references(claimed.templates.shape[0])
                    templates = fuse_references(claimed.templates)
                    owned.append(templates)
                else:
                    # Decoy: same work, same answer as a face mismatch.
                    decoy = np.random.default_rng(secrets.randbits(64)).standard_normal(
                        (1, self._embedder.dimension)).astype(np.float32)
                    templates = decoy / np.linalg.norm(decoy)
                    owned.append(templates)
                    threshold = self._thresholds.single
                claimed_score = float(np.max(templates @ probe))
                matched = claimed.templates is not None and claimed_score >= threshold
            # Screened only when the claim would pass: a failed claim answers NOT_VERIFIED whatever
            # else the face matches, so the answer never tells whether a face is enrolled elsewhere.
            if matched and self._screening is not None:
                budget.check("screening")
                with timer.stage("screen"):
                    impersonated = self._screening.impersonated(claimed.id_key, probe, claimed_score)
                if impersonated:
                    return Decision(TrueReason.IMPERSONATION_SUSPECTED, dict(timer.timings), evidence)
            return Decision(TrueReason.VERIFIED if matched else TrueReason.FACE_MISMATCH, dict(timer.timings),
                            evidence)
        finally:
            for settle in running:
                settle()
            _zero(owned)

    def _light_evidence(self, observations: Sequence[FaceObservation], light: LightRequest,
                        owned: list[np.ndarray]) -> LightEvidence:
        try:
            chroma = np.array([frame_chroma(o.frame_bgr, o.face.box_xywh, o.face.landmarks) for o in observations])
        except ValueError:  # a face too small to measure its skin: no evidence of the flashes
            chroma = np.zeros((0, 2))
        owned.append(chroma)
        return analyse(chroma, light.timestamps_ms, light.sequence, self._light)

    def judge_light(self, frames: Sequence[bytes], light: LightRequest, budget: Budget) -> LightJudgement:
        """The light check alone, as `evaluate` runs it (timing, frame headers, decode, detect, quality
        gate, then the light analysis): for `idv eval light` on operator recordings. No comparison."""
        owned: list[np.ndarray] = []
        if not light_timing_plausible(light, len(frames)):
            return LightJudgement(TrueReason.CAPTURE_TIMING, None)
        try:
            burst = self.check_burst(frames, with_challenge=True)
            try:
                observations = self._observe(burst.frames, _StageTimer(), budget, owned, burst.headers)
            except _FrameFailure as failure:
                return LightJudgement(failure.reason, None)
            found = self._light_evidence(observations, light, owned)
            return LightJudgement(TrueReason.VERIFIED if found.passed else TrueReason.CHALLENGE_FAILED, found)
        finally:
            _zero(owned)

    # ------------------------------------------------------------------ enroll
    def templates(self, images: CheckedBurst, budget: Budget) -> np.ndarray:
        """One template per reference image (already through `check_references`); each image must
        show exactly one face of enrolment quality. The caller owns (and zeroes) the result."""
        owned: list[np.ndarray] = []
        try:
            aligned_crops = []
            for index, (data, header) in enumerate(zip(images.frames, images.headers, strict=True)):
                budget.check("decode")
                image = decode_frame(data, self._image, index, header)
                owned.append(image)
                subject, others = select_subject(self._detector.detect(image), self._limits.bystander_ratio)
                meta = {"image_index": str(index)}
                if subject is None:
                    raise InvalidRequest(f"reference image {index} shows no face", "REFERENCE_NO_FACE", meta)
                if others:
                    raise InvalidRequest(f"reference image {index} shows {len(others) + 1} faces; exactly one is needed",
                                         "REFERENCE_MULTIPLE_FACES", meta)
                subject = self._detector.refine(image, subject)  # landmarks at full resolution
                aligned = align_face(image, subject)
                owned.append(aligned)
                report = assess(subject, aligned, self._quality)
                if not report.passed:
                    raise InvalidRequest(f"reference image {index} is of too low quality ({report.failure})",
                                         "REFERENCE_LOW_QUALITY", meta)
                aligned_crops.append(aligned)
            budget.check("embed")
            return self._embedder.embed(aligned_crops)
        finally:
            _zero(owned)
