"""Issue 12: a burst's work fanned out over the node's frame pool decides exactly as in one thread.

The pooled path (frames, the k embeddings and the liveness cues as tasks on the frame pool) and
the sequential one (`serving.burst_parallel = false`: every stage in order on the request's
thread) are built by the composition root on the same models and fed the same real frames; every
stage output must be equal, bit for bit, and so must the decision.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from idv.pipeline import Budget, ClaimedReference, _StageTimer
from liveness import FaceObservation as LiveObservation
from liveness import LivenessChecker, LivenessConfig
from tests.conftest import nuaa_sequences


def _bursts(testdata: Path) -> dict[str, tuple[list[bytes], bytes]]:
    """Real captures: live and printed-photo bursts of two subjects, and a challenge-length one."""
    out: dict[str, tuple[list[bytes], bytes]] = {}
    for subject in ("0001", "0004"):
        reference = next(iter(nuaa_sequences(testdata, "print", subject).values()))[0].read_bytes()
        live = next(iter(nuaa_sequences(testdata, "live", subject).values()))
        printed = list(nuaa_sequences(testdata, "print", subject).values())[1]
        out[f"live-{subject}"] = ([p.read_bytes() for p in live[:15:3]], reference)
        out[f"print-{subject}"] = ([p.read_bytes() for p in printed[:15:3]], reference)
    live = next(iter(nuaa_sequences(testdata, "live", "0002").values()))
    reference = next(iter(nuaa_sequences(testdata, "print", "0002").values()))[0].read_bytes()
    out["live-0002-24"] = ([p.read_bytes() for p in live[:48:2]][:24], reference)
    return out


@pytest.fixture()
def pipelines(node_settings, assemble):
    pooled = assemble(node_settings.updated(burst_parallel=True, frame_threads=2))
    sequential = assemble(node_settings.updated(burst_parallel=False))
    assert pooled.pipeline._frame_pool is not None and sequential.pipeline._frame_pool is None
    return pooled.pipeline, sequential.pipeline


def _same_observations(a, b) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.face.box_xywh == y.face.box_xywh and x.face.score == y.face.score
        assert np.array_equal(x.face.landmarks, y.face.landmarks)
        assert np.array_equal(x.aligned_bgr, y.aligned_bgr)
        assert (x.usable, x.sharpness) == (y.usable, y.sharpness)
        assert (x.embedding is None) == (y.embedding is None)
        if x.embedding is not None:
            assert np.array_equal(x.embedding, y.embedding)  # bit for bit, not approximately


def test_pooled_and_sequential_paths_give_identical_stage_outputs(pipelines, model_set, testdata) -> None:
    pooled, sequential = pipelines
    checker = LivenessChecker(model_set.minifasnet_v2, model_set.minifasnet_v1se, LivenessConfig())
    decided = {}
    with ThreadPoolExecutor(2) as cue_pool:
        for name, (frames, reference) in _bursts(testdata).items():
            stages = []
            for pipeline in (pooled, sequential):
                owned: list[np.ndarray] = []
                burst = pipeline.check_burst(frames, with_challenge=len(frames) > 8)
                stages.append(pipeline._observe(burst.frames, _StageTimer(), Budget(30), owned, burst.headers))
            _same_observations(*stages)
            observations = [LiveObservation(o.frame_bgr, o.face.box_xywh, o.face.landmarks, o.embedding)
                            for o in stages[0][:8]]
            assert checker.measure(observations, executor=cue_pool) == checker.measure(observations)
            # The pipeline's way: the pixel cues start before the embeddings exist, the identity cue after.
            bare = [LiveObservation(o.frame_bgr, o.box_xywh, o.landmarks5) for o in observations]
            begun = checker.begin(bare, executor=cue_pool).finish(
                [o.embedding for o in observations if o.embedding is not None])
            assert begun == checker.check(observations)

            answers = []
            for pipeline in (pooled, sequential):
                templates = pipeline.templates(pipeline.check_references([reference]), Budget(30))
                decision = pipeline.evaluate(pipeline.check_burst(frames, with_challenge=len(frames) > 8),
                                             ClaimedReference("key", templates), None, Budget(30))
                answers.append(decision.true_reason)
            assert answers[0] is answers[1]
            decided[name] = answers[0].value
    # The bursts are not trivially alike: genuine captures pass, printed photos fail liveness.
    assert decided["live-0001"] == decided["live-0004"] == decided["live-0002-24"] == "VERIFIED"
    assert decided["print-0001"] == decided["print-0004"] == "LIVENESS_FAILED"


def test_a_lone_request_runs_its_frames_embeddings_and_cues_on_the_pool(pipelines, model_set, testdata,
                                                                          monkeypatch) -> None:
    pooled, _ = pipelines
    threads: dict[str, set[str]] = {"detect": set(), "embed": set(), "planarity": set()}
    detect, embed = model_set.detector.detect, model_set.embedder.embed

    def seen(stage, fn):
        def wrapped(*args, **kwargs):
            threads[stage].add(threading.current_thread().name)
            return fn(*args, **kwargs)
        return wrapped

    import liveness.checker

    monkeypatch.setattr(model_set.detector, "detect", seen("detect", detect))
    monkeypatch.setattr(model_set.embedder, "embed", seen("embed", embed))
    monkeypatch.setattr(liveness.checker, "measure_planarity", seen("planarity", liveness.checker.measure_planarity))
    frames, reference = _bursts(testdata)["live-0001"]
    templates = pooled.templates(pooled.check_references([reference]), Budget(30))
    for names in threads.values():  # enrolment runs in the caller's thread
        names.clear()
    caller = threading.current_thread().name
    decision = pooled.evaluate(pooled.check_burst(frames, with_challenge=False), ClaimedReference("key", templates),
                               None, Budget(30))
    assert decision.true_reason.value == "VERIFIED"
    for stage, names in threads.items():
        assert names and caller not in names and all(n.startswith("idv-frame") for n in names), (stage, names)
    assert len(threads["detect"]) == 2  # five frames over a pool of two: both threads detect


def test_the_frame_pool_is_sized_to_the_cores_and_closed_with_the_service(node_settings, assemble) -> None:
    import os

    assembled = assemble(node_settings)
    pool = assembled.pipeline._frame_pool
    assert pool is not None and pool._max_workers == len(os.sched_getaffinity(0))
    assert node_settings.updated(frame_threads=3).serving.frame_pool_threads == 3
    assembled.close()
    with pytest.raises(RuntimeError):
        pool.submit(int)


def test_a_challenge_bursts_facemesh_runs_on_the_pool_and_decides_as_in_order(pipelines, model_set, testdata,
                                                                               monkeypatch) -> None:
    """The 24 frames' FaceMesh landmarks run as tasks on the frame pool, one interpreter per
    thread; every frame's signals and the decision match the in-order path exactly."""
    from concurrent.futures import wait

    from idv.action_check import ActionVerifier
    from liveness.actions import ActionConfig
    from tests.test_challenges import clip_frames

    pooled, sequential = pipelines
    frames = clip_frames(testdata, "live_d12.mp4", 20, 105)  # turns left, then right
    reference = clip_frames(testdata, "live_d12.mp4", 0, 0, 1)[0]
    assert model_set.facemesh.instances >= 2
    threads: set[str] = set()
    landmarks = model_set.facemesh.landmarks

    def seen(*args, **kwargs):
        threads.add(threading.current_thread().name)
        return landmarks(*args, **kwargs)

    monkeypatch.setattr(model_set.facemesh, "landmarks", seen)
    answers: dict[tuple[str, ...], list[str]] = {}
    for actions in (("TURN_LEFT", "TURN_RIGHT"), ("TURN_RIGHT", "TURN_LEFT")):
        for pipeline in (pooled, sequential):
            templates = pipeline.templates(pipeline.check_references([reference]), Budget(30))
            decision = pipeline.evaluate(pipeline.check_burst(frames, with_challenge=True),
                                         ClaimedReference("key", templates), actions, Budget(60))
            answers.setdefault(actions, []).append(decision.true_reason.value)
    # Performed in that order: passes; the other order: the challenge fails, on both paths.
    assert answers == {("TURN_LEFT", "TURN_RIGHT"): ["VERIFIED", "VERIFIED"],
                       ("TURN_RIGHT", "TURN_LEFT"): ["CHALLENGE_FAILED", "CHALLENGE_FAILED"]}
    assert len({n for n in threads if n.startswith("idv-frame")}) == 2, threads

    # Frame by frame, the signals are the same bit for bit whichever interpreter ran them.
    owned: list[np.ndarray] = []
    observations = sequential._observe(*_observe_args(sequential, frames, owned))
    verifier = ActionVerifier(model_set.facemesh, ActionConfig())
    images, faces = [o.frame_bgr for o in observations], [o.face for o in observations]
    with ThreadPoolExecutor(2) as pool:
        pooled_tasks = verifier.begin(images, faces, ("TURN_LEFT",), None, pool)._tasks
        wait(pooled_tasks)
    in_order = [verifier._signals(image, face, i, None) for i, (image, face) in enumerate(zip(images, faces))]
    assert [task.result() for task in pooled_tasks] == in_order


def _observe_args(pipeline, frames, owned):
    burst = pipeline.check_burst(frames, with_challenge=True)
    return burst.frames, _StageTimer(), Budget(60), owned, burst.headers


def test_a_burst_that_fails_liveness_drops_its_unstarted_facemesh_tasks(model_set, testdata) -> None:
    """The challenge's landmark work is started early; a burst that fails before its actions are
    judged cancels what has not started, and every task has ended when `stop` returns."""
    from idv.action_check import ActionVerifier
    from liveness.actions import ActionConfig
    from tests.test_challenges import clip_frames

    import cv2

    frames = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR)
              for f in clip_frames(testdata, "live_d12.mp4", 20, 105)]
    faces = [model_set.detector.detect(f)[0] for f in frames]
    verifier = ActionVerifier(model_set.facemesh, ActionConfig())
    with ThreadPoolExecutor(1) as pool:
        gate = threading.Event()
        pool.submit(gate.wait)  # the pool is busy: none of the FaceMesh tasks can start yet
        pending = verifier.begin(frames, faces, ("TURN_LEFT",), [], pool)
        threading.Timer(0.5, gate.set).start()  # freed later, so `stop` finds every task unstarted
        pending.stop()
        assert all(task.cancelled() for task in pending._tasks)
        # Not stopped: the same tasks run and the check answers.
        pending = verifier.begin(frames, faces, ("TURN_LEFT",), [], pool)
        assert pending.finish() is True


def test_a_long_burst_is_detected_coarse_except_the_frames_its_cues_and_recognizer_read(
        node_settings, assemble, model_set, testdata, monkeypatch) -> None:
    """Issue 12, work per burst (`burst.coarse_detection_above`, off by default): a 24-frame challenge
    burst is detected on shrunk copies; the k embedded frames and the frames liveness judges are
    detected again at full size, so what the recognizer and the calibrated cues read is the
    full-size run's, bit for bit. On this burst the decision is the full-size path's."""
    from tests.test_challenges import clip_frames

    import cv2

    coarse = assemble(node_settings.updated(burst_parallel=False, coarse_detection_above=8)).pipeline
    exact = assemble(node_settings.updated(burst_parallel=False)).pipeline
    assert node_settings.burst.coarse_detection_above == 0  # off by default (paired_decisions.json)
    frames = clip_frames(testdata, "live_d12.mp4", 20, 105)
    reference = clip_frames(testdata, "live_d12.mp4", 0, 0, 1)[0]
    calls = {"detect": 0, "detect_coarse": 0}
    for name in calls:
        original = getattr(model_set.detector, name)

        def counted(image, _name=name, _original=original):
            calls[_name] += 1
            return _original(image)

        monkeypatch.setattr(model_set.detector, name, counted)
    answers = []
    for pipeline, actions in ((coarse, ("TURN_LEFT", "TURN_RIGHT")), (exact, ("TURN_LEFT", "TURN_RIGHT")),
                              (coarse, ("TURN_RIGHT", "TURN_LEFT"))):
        templates = pipeline.templates(pipeline.check_references([reference]), Budget(30))
        for name in calls:
            calls[name] = 0
        decision = pipeline.evaluate(pipeline.check_burst(frames, with_challenge=True),
                                     ClaimedReference("key", templates), actions, Budget(60))
        answers.append((decision.true_reason.value, dict(calls)))
    assert answers[0][0] == answers[1][0] == "VERIFIED"
    assert answers[2][0] == "CHALLENGE_FAILED"
    # Coarse: every frame once on a shrunk copy, then the 8 frames liveness judges (the 3 embedded
    # among them) at full size; the reference pipeline: all 24 at full size.
    assert answers[0][1] == {"detect_coarse": 24, "detect": 8}, answers[0][1]
    assert answers[1][1] == {"detect_coarse": 0, "detect": 24}, answers[1][1]

    # What the cues and the recognizer read: those frames' faces are the full-size run's exactly.
    owned: list[np.ndarray] = []
    burst = coarse.check_burst(frames, with_challenge=True)
    observations = coarse._detect_burst(burst.frames, _StageTimer(), Budget(60), owned, burst.headers, True)
    chosen = coarse._choose(observations)
    refreshed, kept = coarse._exact_where_needed(observations, chosen, _StageTimer(), Budget(60), owned)
    judged = coarse._liveness.frames_judged(len(frames), kept)
    assert kept == chosen and set(kept) <= set(judged) and len(judged) == 8
    moved = 0
    for index, observation in enumerate(refreshed):
        image = cv2.imdecode(np.frombuffer(frames[index], np.uint8), cv2.IMREAD_COLOR)
        full = max(model_set.detector.detect(image), key=lambda f: min(f.width, f.height))
        same = full.box_xywh == observation.face.box_xywh and np.array_equal(full.landmarks,
                                                                              observation.face.landmarks)
        if index in judged:
            assert same, index
        else:
            moved += not same
            assert abs(full.x - observation.face.x) < 0.1 * full.width  # coarse, yet the same face
    assert moved > 0  # the other frames really were detected coarse


def test_a_chosen_frame_that_fails_the_gate_at_full_size_sends_the_burst_to_full_size(
        node_settings, assemble, model_set, testdata, monkeypatch) -> None:
    """A coarse crop passed the quality gate but the full-size one does not: the burst is detected at
    full size throughout and chosen again, as the full-size path would choose."""
    import dataclasses

    import idv.pipeline
    from tests.test_challenges import clip_frames

    pipeline = assemble(node_settings.updated(burst_parallel=False, coarse_detection_above=8)).pipeline
    frames = clip_frames(testdata, "live_d12.mp4", 20, 105)
    reference = clip_frames(testdata, "live_d12.mp4", 0, 0, 1)[0]
    templates = pipeline.templates(pipeline.check_references([reference]), Budget(30))
    assess, detect = idv.pipeline.assess, model_set.detector.detect
    calls = {"assess": 0, "detect": 0}

    def gate(face, aligned, limits):
        calls["assess"] += 1
        report = assess(face, aligned, limits)
        if calls["assess"] == len(frames) + 1:  # the first full-size crop (a chosen frame's) fails
            report = dataclasses.replace(report, passed=False, failure="sharpness")
        return report

    def counted(image):
        calls["detect"] += 1
        return detect(image)

    monkeypatch.setattr(idv.pipeline, "assess", gate)
    monkeypatch.setattr(model_set.detector, "detect", counted)
    decision = pipeline.evaluate(pipeline.check_burst(frames, with_challenge=True),
                                 ClaimedReference("key", templates), ("TURN_LEFT", "TURN_RIGHT"), Budget(60))
    assert decision.true_reason.value == "VERIFIED"
    assert calls["detect"] == 24  # the 8 needed frames, then the other 16


def test_embeddings_of_frames_sure_to_be_chosen_start_before_the_last_frame_is_detected(
        pipelines, model_set, testdata, monkeypatch) -> None:
    """A 5-frame burst, k = 3: the first run's sharpest frame is known once frames 0 and 1 are in,
    so its embedding is handed to the pool before the last frame is detected (filling the core a
    lone request's last detection leaves idle); the embeddings are the sequential path's, bit for
    bit, and no embedding is computed twice."""
    import idv.pipeline

    pooled, sequential = pipelines
    frames, reference = _bursts(testdata)["live-0001"]
    started_after: list[int] = []  # frames detected when each early embedding was handed over
    offer = idv.pipeline._EarlyEmbeddings.offer

    def watched(self, prepared):
        before = len(self._started)
        offer(self, prepared)
        started_after.extend([len(prepared)] * (len(self._started) - before))

    embeds = {"count": 0}
    embed = model_set.embedder.embed

    def counted(crops):
        embeds["count"] += 1
        return embed(crops)

    kept: dict[str, list] = {}

    def keeping(label, pipeline):
        original = pipeline._embedded

        def capture(*args, **kwargs):
            result = original(*args, **kwargs)
            kept[label] = [o.embedding.copy() if o.embedding is not None else None for o in result]
            return result
        return capture

    monkeypatch.setattr(idv.pipeline._EarlyEmbeddings, "offer", watched)
    monkeypatch.setattr(model_set.embedder, "embed", counted)
    monkeypatch.setattr(pooled, "_embedded", keeping("pooled", pooled))
    monkeypatch.setattr(sequential, "_embedded", keeping("sequential", sequential))
    for pipeline in (pooled, sequential):
        templates = pipeline.templates(pipeline.check_references([reference]), Budget(30))
        embeds["count"] = 0
        decision = pipeline.evaluate(pipeline.check_burst(frames, with_challenge=False),
                                     ClaimedReference("key", templates), None, Budget(30))
        assert decision.true_reason.value == "VERIFIED"
        assert embeds["count"] == 3  # each chosen frame embedded once, early or not
    # Pooled: runs [0, 1], [2, 3], [4] handed over after 2, 4 and 5 frames; sequential: none early.
    assert started_after == [2, 4, 5]
    assert [e is None for e in kept["pooled"]] == [e is None for e in kept["sequential"]]
    for a, b in zip(kept["pooled"], kept["sequential"]):
        assert a is None or np.array_equal(a, b)


def test_an_unusable_frame_stops_early_embeddings_and_the_choice_is_the_usual_one(
        pipelines, model_set, testdata, monkeypatch) -> None:
    """Once a frame fails the quality gate the runs may shift, so nothing more starts early: the
    first run's embedding (frames 0-1, before the unusable frame 3) is used, the rest are started
    as usual, each chosen frame is embedded once, and the decision is the sequential path's."""
    import dataclasses

    import idv.pipeline

    pooled, sequential = pipelines
    frames, reference = _bursts(testdata)["live-0001"]
    assess = idv.pipeline.assess
    calls = {"embed": 0}
    embed = model_set.embedder.embed

    def gate(face, aligned, limits):  # the fourth frame assessed is too blurred
        report = assess(face, aligned, limits)
        if abs(face.x - gate.x4) < 1e-6:
            report = dataclasses.replace(report, passed=False, failure="sharpness")
        return report

    image = __import__("cv2").imdecode(np.frombuffer(frames[3], np.uint8), 1)
    gate.x4 = max(model_set.detector.detect(image), key=lambda f: f.width).x

    def counted(crops):
        calls["embed"] += 1
        return embed(crops)

    monkeypatch.setattr(idv.pipeline, "assess", gate)
    monkeypatch.setattr(model_set.embedder, "embed", counted)
    reasons = []
    for pipeline in (pooled, sequential):
        templates = pipeline.templates(pipeline.check_references([reference]), Budget(30))
        calls["embed"] = 0
        reasons.append(pipeline.evaluate(pipeline.check_burst(frames, with_challenge=False),
                                         ClaimedReference("key", templates), None, Budget(30)).true_reason.value)
        assert calls["embed"] == 3
    assert reasons == ["VERIFIED", "VERIFIED"]


@pytest.mark.parametrize("leave_at", ["liveness", "challenge"])
def test_a_request_cancelled_after_its_embeddings_started_still_zeroes_them(pipelines, model_set, testdata,
                                                                           monkeypatch, leave_at) -> None:
    """Privacy: the caller goes away (Budget.check raises Cancelled) after the k embeddings were
    started but before the pipeline collected them; every embedding vector is zeroed anyway, on the
    pooled and the sequential path."""
    from idv.errors import Cancelled
    from tests.test_challenges import clip_frames

    frames = clip_frames(testdata, "live_d12.mp4", 20, 105)
    reference = clip_frames(testdata, "live_d12.mp4", 0, 0, 1)[0]
    made: list[np.ndarray] = []
    embed = model_set.embedder.embed

    def keeping(crops):
        vectors = embed(crops)
        made.append(vectors)
        return vectors

    for pipeline in pipelines:
        templates = pipeline.templates(pipeline.check_references([reference]), Budget(30))
        gone = {"now": False}
        monkeypatch.setattr(model_set.embedder, "embed", keeping)
        # The caller goes away right after this step; the next Budget.check sees it.
        owner, step = ((pipeline, "_start_embedding") if leave_at == "liveness"  # next check: "liveness"
                       else (pipeline._liveness, "begin"))  # next check: "challenge"

        def leaving(*args, _original=getattr(owner, step), **kwargs):
            result = _original(*args, **kwargs)
            gone["now"] = True
            return result
        monkeypatch.setattr(owner, step, leaving)
        made.clear()
        with pytest.raises(Cancelled):
            pipeline.evaluate(pipeline.check_burst(frames, with_challenge=True), ClaimedReference("key", templates),
                              ("TURN_LEFT", "TURN_RIGHT"), Budget(60, cancelled=lambda: gone["now"]))
        monkeypatch.undo()
        assert len(made) == 3, len(made)
        assert all(not np.any(vectors) for vectors in made), "an embedding outlived a cancelled request"


def test_without_a_pool_facemesh_runs_only_when_the_actions_are_judged(model_set, testdata, monkeypatch) -> None:
    """A sequential node (no frame pool) runs the challenge's FaceMesh after liveness, as it always
    did: `begin` computes nothing, `finish` runs every frame in order, `stop` drops it all."""
    import cv2

    from idv.action_check import ActionVerifier
    from liveness.actions import ActionConfig
    from tests.test_challenges import clip_frames

    frames = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR)
              for f in clip_frames(testdata, "live_d12.mp4", 20, 105)]
    faces = [model_set.detector.detect(f)[0] for f in frames]
    calls = {"n": 0}
    landmarks = model_set.facemesh.landmarks

    def counted(*args, **kwargs):
        calls["n"] += 1
        return landmarks(*args, **kwargs)

    monkeypatch.setattr(model_set.facemesh, "landmarks", counted)
    verifier = ActionVerifier(model_set.facemesh, ActionConfig())
    pending = verifier.begin(frames, faces, ("TURN_LEFT", "TURN_RIGHT"), [])
    assert calls["n"] == 0
    pending.stop()
    assert calls["n"] == 0
    assert verifier.begin(frames, faces, ("TURN_LEFT", "TURN_RIGHT"), []).finish() is True
    assert calls["n"] == len(frames)
