"""The light challenge in the capture page, in real headless Chromium (issue 14): the page flashes the
session's sequence full-screen while it captures and sends frame times relative to the first flash.
Chromium's fake camera plays a recording, which by construction cannot reflect the flashes: the
"injected camera" attack. It must fail, with the reason a person with bad luck sees."""

from __future__ import annotations

import json
import time

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from idv.client import IdvClient
from liveness.video_signals import iter_video_frames
from tests.chromium import chromium_driver, write_y4m
from tests.conftest import ID_SUBJECT_1, start_node
from tests.test_challenges import clip_frames
from tests.test_sessions import _sway

NAME = "王芳"
CLIP = "live_d12.mp4"


@pytest.fixture(scope="module")
def recorded_camera(tmp_path_factory, testdata):
    """The clip's first 8 s at 10 fps (a real person, moving a little), as Y4M for Chromium."""
    frames = [f for i, f in iter_video_frames(testdata / "video" / CLIP) if i % 3 == 0 and i < 240]
    path = tmp_path_factory.mktemp("camera") / "recorded.y4m"
    write_y4m(path, [_sway(f, k) for k, f in enumerate(frames)], 10)
    return path


@pytest.fixture()
def light_node(node_settings, testdata):
    settings = node_settings.updated(device_port=0, challenge_passive_only_for=(), check_in_kind="light",
                                     request_budget_seconds=60.0, device_requests_per_minute=1000)
    node = start_node(settings)
    with IdvClient(f"127.0.0.1:{node.port}", retries=0, timeout=60) as client:
        client.enroll(ID_SUBJECT_1, NAME, clip_frames(testdata, CLIP, 0, 0, 1))
    yield node, settings
    node.stop(0)


def test_a_recording_played_as_the_camera_cannot_follow_the_flashes(light_node, recorded_camera) -> None:
    node, settings = light_node
    driver = chromium_driver(recorded_camera)
    try:
        with IdvClient(f"127.0.0.1:{node.port}", retries=0, timeout=60) as client:
            opened = client.create_session(ID_SUBJECT_1, NAME, "check_in")
            assert opened.actions == () and 6 <= len(opened.light) <= 10
            assert "light=" in opened.capture_url
            driver.get(opened.capture_url)
            body = lambda d: d.find_element(By.TAG_NAME, "body")  # noqa: E731
            WebDriverWait(driver, 10).until(lambda d: body(d).get_attribute("data-state") == "ready")
            driver.find_element(By.ID, "start").click()
            # The page flashes: the overlay is on, and shows the sequence's colours in turn.
            WebDriverWait(driver, 15, poll_frequency=0.02).until(lambda d: body(d).get_attribute("data-light") == "on")
            seen_steps = set()
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and body(driver).get_attribute("data-light") == "on":
                seen_steps.add(body(driver).get_attribute("data-light-step"))
                time.sleep(0.03)
            assert len(seen_steps - {None}) >= 3, seen_steps
            WebDriverWait(driver, 120, poll_frequency=0.2).until(
                lambda d: body(d).get_attribute("data-state") in ("done", "error"))
            page = {k: body(driver).get_attribute(f"data-{k}") for k in ("state", "verdict", "reason")}
            assert page == {"state": "done", "verdict": "FAIL", "reason": "CHALLENGE_FAILED"}, page
            result = client.session_result(opened.session_id)
            assert (result.state, result.verdict, result.reason) == ("COMPLETED", "FAIL", "CHALLENGE_FAILED")
    finally:
        driver.quit()
    records = [json.loads(line) for line in settings.store.audit_path.read_text().splitlines()]
    verify = [r for r in records if r.get("event") == "verify"][-1]
    assert verify["true_reason"] == "CHALLENGE_FAILED" and "light_correlation" in verify["evidence"]
