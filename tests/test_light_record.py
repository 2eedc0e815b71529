"""Record mode and `idv eval light` (issue 14): the capture page's operator mode saves labelled
captures through the real device endpoint; `idv eval light DIR` runs the node's own light check on
them and reports BPCER and APCER per species with counts. No real flash captures exist here, so the
captures are real live clips with the screen's reflections added by the physical simulator (genuine)
or without them / with another sequence's (a recording, a screen replay)."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import cv2
import httpx
import pytest
from click.testing import CliRunner

from idv.cli import main as cli
from idv.client import IdvClient
from idv.config import ConfigError, load_settings
from liveness.light import LightConfig
from tests.conftest import ID_SUBJECT_1, start_node
from tests.test_light_challenge import CLIP, NAME, _capture, _simulator

COMPLEMENT = {"RED": "CYAN", "CYAN": "RED", "GREEN": "MAGENTA", "MAGENTA": "GREEN", "BLUE": "YELLOW",
              "YELLOW": "BLUE"}


@pytest.fixture()
def record_node(node_settings, testdata, tmp_path):
    settings = node_settings.updated(challenge_passive_only_for=(), check_in_kind="light", lockout_after_failures=50,
                                     device_port=0, device_requests_per_minute=1000, request_budget_seconds=60.0,
                                     device__record_dir=tmp_path / "recordings")
    node = start_node(settings)
    frames, _ = _simulator().clip_frames(testdata / "video" / CLIP, limit_s=8.0)
    with IdvClient(f"127.0.0.1:{node.port}", retries=0, timeout=60) as client:
        client.enroll(ID_SUBJECT_1, NAME, [cv2.imencode(".jpg", frames[0])[1].tobytes()])
    yield node, settings
    node.stop(0)


def _body(frames: list[bytes], stamps: list[float], label: str | None) -> bytes:
    header: dict[str, object] = {"timestamps_ms": stamps, "sizes": [len(f) for f in frames]}
    if label is not None:
        header["record_label"] = label
    return json.dumps(header).encode() + b"\n" + b"".join(frames)


def _upload(node, token: str, body: bytes) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{node.device.port}/v1/capture", content=body, timeout=120, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/vnd.idv.capture"})


def test_record_mode_saves_labelled_captures_and_eval_light_counts_them(record_node, testdata, tmp_path) -> None:
    node, settings = record_node
    sim = _simulator()
    record_dir = settings.device.record_dir
    plan = [("genuine", "same", 1), ("genuine", "same", 8), ("video", None, 2), ("video", None, 5),
            ("screen", "other", 3), ("screen", "other", 9)]
    sent = []
    with IdvClient(f"127.0.0.1:{node.port}", retries=0, timeout=60) as client:
        # The capture page's link says "record mode" so the page shows the label picker.
        assert "record=1" in client.create_session(ID_SUBJECT_1, NAME, "check_in").capture_url
        for label, reflect, seed in plan:
            opened_at = time.monotonic()
            session = client.create_session(ID_SUBJECT_1, NAME, "check_in")
            assert session.light
            reflected = {"same": session.light, None: None,
                         "other": tuple((COMPLEMENT[c], d) for c, d in session.light)}[reflect]
            frames, stamps = _capture(sim, testdata, session.light, reflected, seed)
            if label == "genuine":
                # Unlabelled in record mode: refused before the token is used (the retry below still works).
                refused = _upload(node, session.capture_token, _body(frames, stamps, None))
                assert refused.status_code == 400 and refused.json()["error"]["reason"] == "RECORD_LABEL"
            # The capture takes as long as its frame times say: the session window is checked (issue 14).
            time.sleep(max(0.0, (stamps[-1] - stamps[0]) / 1000 - (time.monotonic() - opened_at)) + 0.2)
            answer = _upload(node, session.capture_token, _body(frames, stamps, label))
            assert answer.status_code == 200, answer.text
            sent.append((label, session.light, frames, stamps, answer.json()["verdict"]))

    recordings = sorted(p for p in record_dir.iterdir())
    assert len(recordings) == len(plan)
    assert stat.S_IMODE(os.stat(record_dir).st_mode) == 0o700
    by_stamps = {}
    for directory in recordings:
        manifest = json.loads((directory / "capture.json").read_text())
        by_stamps[json.dumps(manifest["timestamps_ms"])] = (directory, manifest)
        assert stat.S_IMODE(os.stat(directory / "capture.json").st_mode) == 0o600
        assert not {"id_number", "name", "id_key", "score"} & set(manifest)  # no identity, no score
    for label, light, frames, stamps, verdict in sent:
        directory, manifest = by_stamps[json.dumps([float(t) for t in stamps])]
        assert manifest["label"] == label and manifest["verdict"] == verdict
        assert [(s["colour"], s["duration_ms"]) for s in manifest["light"]] == list(light)  # the server's sequence
        assert [(directory / name).read_bytes() for name in manifest["frames"]] == frames

    models = ["--model-dir", str(settings.models.dir)]
    result = CliRunner().invoke(cli, ["eval", "light", str(record_dir), "--json", *models])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["recordings"] == 6
    assert report["bpcer"]["trials"] == 2 and set(report["apcer"]) == {"video", "screen"}
    assert report["apcer"]["video"]["trials"] == 2 and report["apcer"]["screen"]["trials"] == 2
    lo, hi = report["bpcer"]["ci95"]
    assert 0.0 <= lo <= report["bpcer"]["rate"] <= hi <= 1.0
    # The same check the node ran: a capture the node passed passed the light check here too.
    outcome = {r["name"]: r for r in report["per_recording"]}
    for label, light, frames, stamps, verdict in sent:
        directory, _ = by_stamps[json.dumps([float(t) for t in stamps])]
        if verdict == "PASS":
            assert outcome[directory.name]["passed"], outcome[directory.name]
    # Rates on simulated captures (as tests/test_light_challenge.py): genuine pass at least one of two,
    # attacks are accepted at most one of four; the errors are counted as such.
    assert report["bpcer"]["errors"] <= 1
    assert report["apcer"]["video"]["errors"] + report["apcer"]["screen"]["errors"] <= 1
    assert report["bpcer"]["errors"] == sum(1 for r in report["per_recording"]
                                            if r["label"] == "genuine" and not r["passed"])
    table = CliRunner().invoke(cli, ["eval", "light", str(record_dir), *models])
    assert table.exit_code == 0 and "BPCER (genuine)" in table.output and "APCER (screen)" in table.output

    # Malformed recordings are named, not skipped.
    broken = recordings[0]
    (broken / "frame-03.jpg").unlink()
    missing = CliRunner().invoke(cli, ["eval", "light", str(record_dir), *models])
    assert missing.exit_code != 0 and broken.name in missing.output and "frame-03.jpg" in missing.output
    (broken / "capture.json").write_text("{not json")
    garbled = CliRunner().invoke(cli, ["eval", "light", str(record_dir), *models])
    assert garbled.exit_code != 0 and "not valid JSON" in garbled.output
    empty = tmp_path / "empty"
    empty.mkdir()
    nothing = CliRunner().invoke(cli, ["eval", "light", str(empty), *models])
    assert nothing.exit_code != 0 and "no recordings" in nothing.output


def test_record_mode_is_refused_in_production_and_without_a_device_endpoint(tmp_path) -> None:
    with pytest.raises(ConfigError, match="production mode refuses device.record_dir"):
        load_settings(environ={}, overrides={"mode": "production", "device_port": 8443,
                                             "device__record_dir": tmp_path})
    with pytest.raises(ConfigError, match="record_dir.*needs the device endpoint"):
        load_settings(environ={}, overrides={"device__record_dir": tmp_path})


def test_thresholds_reported_are_the_nodes(tmp_path) -> None:
    from idv.evaluation.light_recordings import LightReport, report_json

    shown = report_json(LightReport((), LightConfig()))["thresholds"]
    assert (shown["min_correlation"], shown["min_amplitude"]) == (LightConfig().min_correlation,
                                                                  LightConfig().min_amplitude)


def test_the_capture_page_in_record_mode_asks_for_a_label_and_the_capture_is_saved(record_node, tmp_path,
                                                                                    testdata) -> None:
    """Real Chromium, whose fake camera plays a recording (an injected camera: it cannot follow the
    flashes): the operator labels it `video` on the page; the saved capture is what eval light measures."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait

    from liveness.video_signals import iter_video_frames
    from tests.chromium import chromium_driver, write_y4m
    from tests.test_sessions import _sway

    node, settings = record_node
    frames = [f for i, f in iter_video_frames(testdata / "video" / CLIP) if i % 3 == 0 and i < 240]
    camera = tmp_path / "recorded.y4m"
    write_y4m(camera, [_sway(f, k) for k, f in enumerate(frames)], 10)
    driver = chromium_driver(camera)
    try:
        with IdvClient(f"127.0.0.1:{node.port}", retries=0, timeout=60) as client:
            opened = client.create_session(ID_SUBJECT_1, NAME, "check_in")
            driver.get(opened.capture_url)
            body = lambda d: d.find_element(By.TAG_NAME, "body")  # noqa: E731
            WebDriverWait(driver, 10).until(lambda d: body(d).get_attribute("data-state") == "ready")
            assert driver.find_element(By.ID, "record").is_displayed()
            Select(driver.find_element(By.ID, "record-label")).select_by_value("video")
            driver.find_element(By.ID, "start").click()
            WebDriverWait(driver, 120, poll_frequency=0.2).until(
                lambda d: body(d).get_attribute("data-state") in ("done", "error"))
            assert body(driver).get_attribute("data-state") == "done", body(driver).get_attribute("data-reason")
            verdict = body(driver).get_attribute("data-verdict")
    finally:
        driver.quit()
    saved = list(settings.device.record_dir.iterdir())
    assert len(saved) == 1
    manifest = json.loads((saved[0] / "capture.json").read_text())
    assert manifest["label"] == "video" and manifest["verdict"] == verdict == "FAIL"
    assert [(s["colour"], s["duration_ms"]) for s in manifest["light"]] == list(opened.light)
    report = CliRunner().invoke(cli, ["eval", "light", str(settings.device.record_dir), "--json",
                                      "--model-dir", str(settings.models.dir)])
    assert report.exit_code == 0, report.output
    measured = json.loads(report.output)
    assert measured["bpcer"] is None and measured["apcer"]["video"]["trials"] == 1
    assert measured["apcer"]["video"]["errors"] == 0  # the injected recording did not pass the light check


def test_a_page_without_record_mode_shows_no_label_picker(node_settings, testdata, tmp_path) -> None:
    """And a label sent to a node that is not recording is refused, token unspent."""
    settings = node_settings.updated(challenge_passive_only_for=(), check_in_kind="light", device_port=0)
    node = start_node(settings)
    try:
        with IdvClient(f"127.0.0.1:{node.port}", retries=0, timeout=60) as client:
            opened = client.create_session(ID_SUBJECT_1, NAME, "check_in")
            assert "record=" not in opened.capture_url
            page = httpx.get(f"http://127.0.0.1:{node.device.port}/capture/", timeout=10).text
            assert '<section id="record" class="record" hidden>' in page
            labelled = _upload(node, opened.capture_token, _body([b"\xff\xd8\xff"] * 3, [0.0, 100.0, 200.0], "genuine"))
            assert labelled.status_code == 400 and labelled.json()["error"]["reason"] == "RECORD_LABEL"
            assert client.session_result(opened.session_id).state == "PENDING"
    finally:
        node.stop(0)
    assert not any(settings.store.data_dir.rglob("frame-*.jpg"))


def test_a_recording_that_fails_half_way_leaves_no_frames_behind(tmp_path) -> None:
    """A save that fails after some frames were written (here: a frame that is not bytes) removes its
    staging directory: nothing would ever delete a hidden partial recording."""
    from idv.http.recorder import CaptureRecorder

    recorder = CaptureRecorder(tmp_path / "rec")
    with pytest.raises(TypeError):
        recorder.save([b"\xff\xd8first", "not bytes"], [0.0, 300.0], [("RED", 300)], "genuine", "PASS", "VERIFIED",
                      "check_in")
    assert list((tmp_path / "rec").iterdir()) == []
