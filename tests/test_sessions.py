"""Verification sessions end to end: gRPC CreateSession/GetSessionResult, the device endpoint over
real HTTP, and the reference capture page in real headless Chromium whose fake camera plays a
recorded clip (live_d12.mp4: neutral, then TURN_LEFT, then TURN_RIGHT; see
benchmarks/accuracy/action_segments.toml, segment d12_left_then_right)."""

from __future__ import annotations

import json
import os
import time
from dataclasses import replace
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from idv.client import IdvClient
from idv.rpc.status import error_info
from idv.security.callers import add_caller
from liveness.video_signals import iter_video_frames
from tests.chromium import chromium_driver, write_y4m
from tests.conftest import ID_SUBJECT_1, ID_SUBJECT_2, start_node
from tests.test_challenges import clip_frames

NAME = "王芳"
CLIP = "live_d12.mp4"
CLIP_ACTIONS = ("TURN_LEFT", "TURN_RIGHT")  # what the clip's segment 20..105 does, in order
SEGMENT = (20, 105)
Y4M_FPS = 10
HOLD_BEFORE_S = 4.0  # neutral: the page's framing phase (at most 3 s) ends inside it
HOLD_AFTER_S = 6.0
SCREENSHOTS = Path(os.environ.get("IDV_CAPTURE_SCREENSHOTS", "")) if os.environ.get("IDV_CAPTURE_SCREENSHOTS") else None


@pytest.fixture(scope="module")
def fake_camera(tmp_path_factory, testdata) -> Path:
    """The clip's left-then-right segment between neutral holds, at 10 fps, as Y4M for Chromium."""
    frames = {i: f for i, f in iter_video_frames(testdata / "video" / CLIP) if i <= SEGMENT[1]}
    native_fps = 25.0
    segment_s = (SEGMENT[1] - SEGMENT[0]) / native_fps
    sequence = [frames[SEGMENT[0]]] * int(HOLD_BEFORE_S * Y4M_FPS)
    sequence += [frames[SEGMENT[0] + round(k * native_fps / Y4M_FPS)] for k in range(int(segment_s * Y4M_FPS) + 1)]
    sequence += [frames[SEGMENT[1]]] * int(HOLD_AFTER_S * Y4M_FPS)
    path = tmp_path_factory.mktemp("camera") / "clip.y4m"
    write_y4m(path, sequence, Y4M_FPS)
    return path


@pytest.fixture(scope="module")
def session_node(tmp_path_factory, model_dir, testdata):
    from idv.config import load_settings

    data = tmp_path_factory.mktemp("session-node") / "data"
    settings = load_settings(environ={}, overrides={
        "port": 0, "data_dir": data, "model_dir": model_dir, "grace_seconds": 1.0, "metrics_port": -1,
        "model_manifest": os.environ.get("IDV_MODEL_MANIFEST"), "device_port": 0,
        "session_fixed_challenges": True, "request_budget_seconds": 60.0, "device_requests_per_minute": 1000,
    })
    keys = {name: add_caller(settings.callers_path, name, ["verify:*", "enroll"]) for name in ("a", "b")}
    node = start_node(settings)
    with IdvClient(f"127.0.0.1:{node.port}", api_key=keys["a"], retries=0, timeout=60) as client:
        client.enroll(ID_SUBJECT_1, NAME, clip_frames(testdata, CLIP, 0, 0, 1))
        client.enroll(ID_SUBJECT_2, NAME, clip_frames(testdata, "live_d3.mp4", 0, 0, 1))
    yield node, keys
    node.stop(0)


@pytest.fixture(scope="module")
def browser(fake_camera):
    driver = chromium_driver(fake_camera)
    yield driver
    driver.quit()


def _client(node, key: str) -> IdvClient:
    return IdvClient(f"127.0.0.1:{node.port}", api_key=key, retries=0, timeout=60)


def _state(driver) -> str:
    return driver.find_element(By.TAG_NAME, "body").get_attribute("data-state")


def _shoot(driver, name: str) -> None:
    if SCREENSHOTS is not None:
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        assert driver.save_screenshot(str(SCREENSHOTS / f"capture-{name}.png"))


def _run_page(driver, url: str, screenshots: bool = False) -> dict[str, str]:
    """Open the capture URL, press start, follow the page to done/error; the body's data attributes."""
    driver.get(url)
    WebDriverWait(driver, 10).until(lambda d: _state(d) == "ready")
    assert "token=" not in driver.current_url, "the capture token must leave the address bar"
    if screenshots:
        _shoot(driver, "1-ready")
    driver.find_element(By.ID, "start").click()
    WebDriverWait(driver, 10).until(lambda d: _state(d) == "capturing")
    if screenshots:
        time.sleep(0.6)
        _shoot(driver, "2-framing")
        WebDriverWait(driver, 10).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-phase") == "challenge")
        time.sleep(0.4)
        _shoot(driver, "3-challenge")
        WebDriverWait(driver, 20).until(lambda d: _state(d) != "capturing")
        if _state(driver) == "uploading":
            _shoot(driver, "4-uploading")
    WebDriverWait(driver, 120, poll_frequency=0.2).until(lambda d: _state(d) in ("done", "error"))
    if screenshots:
        _shoot(driver, "5-done")
    body = driver.find_element(By.TAG_NAME, "body")
    return {k: body.get_attribute(f"data-{k}") or "" for k in ("state", "verdict", "reason")} | {
        "outcome": driver.find_element(By.ID, "outcome").text}


def test_enrolled_person_passes_through_the_capture_page(session_node, browser) -> None:
    node, keys = session_node
    with _client(node, keys["a"]) as a:
        opened = a.create_session(ID_SUBJECT_1, NAME, "registration", fixed_actions=CLIP_ACTIONS)
        assert opened.actions == CLIP_ACTIONS and opened.frame_count == 24
        assert ID_SUBJECT_1 not in opened.capture_url and NAME not in opened.capture_url
        assert a.session_result(opened.session_id).state == "PENDING"
        page = _run_page(browser, opened.capture_url, screenshots=True)
        assert page["state"] == "done" and page["verdict"] == "PASS" and page["reason"] == "VERIFIED", page
        assert "核验通过" in page["outcome"] and "Verified" in page["outcome"]
        result = a.session_result(opened.session_id)
    assert (result.state, result.verdict, result.reason) == ("COMPLETED", "PASS", "VERIFIED")
    assert len(result.request_id) == 36
    with _client(node, keys["a"]) as a:  # readable again until it expires (a lost answer can be re-read)
        assert a.session_result(opened.session_id) == result
    with _client(node, keys["b"]) as b, pytest.raises(grpc.RpcError) as refused:
        b.session_result(opened.session_id)
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert error_info(refused.value).reason == "SESSION_NOT_FOUND"
    # The used token is refused, with the very answer of an unknown one.
    used = _upload(node, opened.capture_token, _tiny_capture())
    unknown = _upload(node, "x" * 43, _tiny_capture())
    assert used.status_code == unknown.status_code == 401
    assert used.content == unknown.content
    assert json.loads(used.content)["error"]["reason"] == "CAPTURE_TOKEN_INVALID"


def _capture_body(frames: list[bytes], interval_ms: float = 300.0) -> bytes:
    header = {"timestamps_ms": [1000.0 + i * interval_ms for i in range(len(frames))], "sizes": [len(f) for f in frames]}
    return json.dumps(header).encode() + b"\n" + b"".join(frames)


def _tiny_capture() -> bytes:
    import cv2

    ok, jpeg = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    return _capture_body([jpeg.tobytes()] * 2)


def _upload(node, token: str, body: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{node.device.port}/v1/capture", content=body, timeout=120, headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/vnd.idv.capture", **(headers or {})})
