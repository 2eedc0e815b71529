"""Issue 18 end to end: a check-in session in real headless Chromium (fake camera playing a recorded
clip) ends with a QR code on the page; the test reads the QR off a screenshot with OpenCV, a desk
terminal redeems it once (by the CLI, from the screenshot), and the person who passed reads their
own verification history on the page, including another caller's failed attempt against their ID."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import grpc
import numpy as np
import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from idv.client import IdvClient
from idv.logs import JsonFormatter
from idv.rpc.status import error_info
from idv.security.callers import CallerRegistry, add_caller
from idv.v1 import verification_pb2 as pb
from tests.conftest import ID_SUBJECT_1, ID_SUBJECT_2, start_node
from tests.test_challenges import clip_frames
from tests.test_sessions import CLIP, CLIP_ACTIONS, NAME, _run_page, browser, fake_camera  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]
CREDENTIAL_TTL = 20.0
HOTEL = "如家酒店 Home Inn"
NET_CAFE = "星际网吧 Star Net Café"


@pytest.fixture(scope="module")
def checkin_node(tmp_path_factory, model_dir, testdata):
    from idv.config import load_settings

    data = tmp_path_factory.mktemp("checkin-node") / "data"
    settings = load_settings(environ={}, overrides={
        "port": 0, "data_dir": data, "model_dir": model_dir, "grace_seconds": 1.0, "metrics_port": -1,
        "model_manifest": os.environ.get("IDV_MODEL_MANIFEST"), "device_port": 0,
        "session_fixed_challenges": True, "request_budget_seconds": 60.0, "device_requests_per_minute": 1000,
        "credentials__ttl_seconds": CREDENTIAL_TTL,
        # Weaker than the default, as in tests/conftest.py: the terminal's direct Verify here is a
        # passive burst (CHECK_IN, and LICENCE_RENEWAL to show it issues no code), sent more than once.
        "challenge_passive_only_for": "check_in,licence_renewal", "integrity__replay_check": False,
    })
    path = settings.store.callers_path
    keys = {
        "hotel": add_caller(path, "hotel", ["verify:*", "enroll"], HOTEL),
        "netcafe": add_caller(path, "netcafe", ["verify:check_in"], NET_CAFE),
        "desk": add_caller(path, "desk", ["redeem"], "前台 Front desk"),
    }
    node = start_node(settings)
    with _client(node, keys["hotel"]) as hotel:
        hotel.enroll(ID_SUBJECT_1, NAME, clip_frames(testdata, CLIP, 0, 0, 1))
        hotel.enroll(ID_SUBJECT_2, NAME, clip_frames(testdata, "live_d3.mp4", 0, 0, 1))
    yield node, keys
    node.stop(0)


@pytest.fixture()
def node_logs():
    """Everything the in-process node logs during the test, as the JSON lines it writes."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield stream
    root.removeHandler(handler)
    root.setLevel(previous)


def _client(node, key: str | None) -> IdvClient:
    return IdvClient(f"127.0.0.1:{node.port}", api_key=key, retries=0, timeout=60)


def _refusal(call) -> tuple[str, str, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    info = error_info(refused.value)
    return refused.value.code().name, info.reason if info else "", refused.value.details()


def _decode_qr(png: bytes) -> str:
    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    text, _, _ = cv2.QRCodeDetector().detectAndDecode(image)
    return text


def _redeem_by_cli(node, key: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "idv.cli", "credential", "redeem", "--json",
                           "--target", f"127.0.0.1:{node.port}", "--api-key", key, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)


def test_check_in_by_qr_code_and_the_persons_own_history(checkin_node, browser, testdata, tmp_path,  # noqa: F811
                                                           node_logs) -> None:
    node, keys = checkin_node
    with _client(node, keys["hotel"]) as hotel, _client(node, keys["netcafe"]) as netcafe, \
            _client(node, keys["desk"]) as desk:
        # Another caller tries someone else's face against the person's ID (fails), and against another ID.
        impostor = clip_frames(testdata, "live_d3.mp4", 0, 40, 8)
        assert netcafe.verify(ID_SUBJECT_1, NAME, impostor, "check_in").verdict == "FAIL"
        assert netcafe.verify(ID_SUBJECT_2, NAME, clip_frames(testdata, CLIP, 0, 40, 8), "check_in").verdict == "FAIL"
        # A trusted terminal's Verify for check-in gets a credential too (used below to show expiry).
        direct = hotel.verify(ID_SUBJECT_1, NAME, clip_frames(testdata, CLIP, 0, 20, 8), "check_in")
        assert direct.verdict == "PASS" and direct.credential is not None, direct
        assert direct.credential.expires_at_unix <= time.time() + CREDENTIAL_TTL + 1
        # No credential for a purpose that does not issue them.
        assert hotel.verify(ID_SUBJECT_1, NAME, clip_frames(testdata, CLIP, 0, 20, 8),
                            "licence_renewal").credential is None

        # The person verifies on the capture page: the check-in QR code appears.
        opened = hotel.create_session(ID_SUBJECT_1, NAME, "check_in", fixed_actions=CLIP_ACTIONS)
        page = _run_page(browser, opened.capture_url)
        assert (page["state"], page["verdict"], page["reason"]) == ("done", "PASS", "VERIFIED"), page
        WebDriverWait(browser, 10).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-credential") == "shown")
        screenshot = browser.get_screenshot_as_png()
        shot = tmp_path / "checkin-qr.png"
        shot.write_bytes(screenshot)
        if os.environ.get("IDV_CAPTURE_SCREENSHOTS"):
            Path(os.environ["IDV_CAPTURE_SCREENSHOTS"], "capture-6-checkin.png").write_bytes(screenshot)
        code = _decode_qr(screenshot)
        assert code.startswith("IDVC1."), "OpenCV found no QR code on the page"
        result = hotel.session_result(opened.session_id)
        assert (result.state, result.verdict) == ("COMPLETED", "PASS")
        assert result.credential is not None and result.credential.code == code  # the backend gets it too

        # A caller without the `redeem` scope is refused, and that does not use the code.
        assert _refusal(lambda: hotel.redeem_credential(code))[:2] == ("PERMISSION_DENIED", "PERMISSION_DENIED")
        # The desk redeems it once, from the screenshot, with the CLI.
        redeemed = _redeem_by_cli(node, keys["desk"], "--image", str(shot))
        assert redeemed.returncode == 0, redeemed.stderr
        identity = json.loads(redeemed.stdout)
        assert (identity["id_number"], identity["name"], identity["purpose"]) == (ID_SUBJECT_1, NAME, "CHECK_IN")
        assert identity["verification_request_id"] == result.request_id
        assert identity["level"] == node.settings.models.security_level + "+active"
        assert abs(identity["verified_at_unix"] - time.time()) < 120
        # A second redemption, an expired code and an unknown one get the very same answer.
        again = _refusal(lambda: desk.redeem_credential(code))
        time.sleep(max(0.0, direct.credential.expires_at_unix + 1.5 - time.time()))
        expired = _refusal(lambda: desk.redeem_credential(direct.credential.code))
        unknown = _refusal(lambda: desk.redeem_credential("IDVC1." + "A" * 32))
        assert again == expired == unknown and again[:2] == ("NOT_FOUND", "CREDENTIAL_INVALID")
        second_by_cli = _redeem_by_cli(node, keys["desk"], code)
        assert second_by_cli.returncode == 1 and "not valid" in second_by_cli.stderr

        # The person asks, on the page, who verified as them.
        browser.find_element(By.ID, "history-button").click()
        WebDriverWait(browser, 20).until(
            lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-history") == "shown")
        items = browser.find_elements(By.CSS_SELECTOR, "#history-list li")
        seen = [(li.get_attribute("data-caller"), li.get_attribute("data-purpose"), li.get_attribute("data-verdict"))
                for li in items]
        # Newest first: the session's PASS, the licence renewal and check-in Verify PASSes, the café's failure.
        assert seen == [(HOTEL, "CHECK_IN", "PASS"), (HOTEL, "LICENCE_RENEWAL", "PASS"), (HOTEL, "CHECK_IN", "PASS"),
                        (NET_CAFE, "CHECK_IN", "FAIL")], seen
        if os.environ.get("IDV_CAPTURE_SCREENSHOTS"):
            browser.save_screenshot(str(Path(os.environ["IDV_CAPTURE_SCREENSHOTS"], "capture-7-history.png")))

        # The backend that opened the session reads the same history; nobody else can.
        entries, window_days = hotel.verification_history(opened.session_id)
        assert window_days == 180
        assert [(e.caller, e.purpose, e.verdict) for e in entries] == seen
        assert all(abs(e.time_unix - time.time()) < 600 for e in entries)
        assert _refusal(lambda: netcafe.verification_history(opened.session_id))[0] == "NOT_FOUND"
        failed = hotel.create_session(ID_SUBJECT_2, NAME, "check_in", fixed_actions=CLIP_ACTIONS)
        assert _refusal(lambda: hotel.verification_history(failed.session_id))[0] == "NOT_FOUND"  # not passed
    # By construction: the request names a session, never an ID.
    assert [f.name for f in pb.GetVerificationHistoryRequest.DESCRIPTOR.fields] == ["session_id"]
    # The redemptions and the history views are in the audit; the history shows only attempts.
    records = [json.loads(line) for line in node.settings.store.audit_path.read_text().splitlines()]
    events = [r["event"] for r in records]
    assert events.count("credential_redeemed") == 1 and events.count("credential_refused") >= 4
    assert events.count("history_viewed") == 2
    assert CallerRegistry.load(node.settings.store.callers_path).display_names()["netcafe"] == NET_CAFE
    # Neither the codes nor the identity they stand for reach the node's logs or its audit log.
    logged, audited = node_logs.getvalue(), node.settings.store.audit_path.read_text()
    assert "decision" in logged  # the handler did capture the node's records
    for secret in (code, direct.credential.code, code.partition(".")[2], ID_SUBJECT_1, NAME):
        assert secret not in logged and secret not in audited


def test_the_device_history_needs_the_token_of_a_passed_session(checkin_node) -> None:
    import httpx

    node, _ = checkin_node
    base = f"http://127.0.0.1:{node.device.port}/v1/history"
    answers = [httpx.get(base, timeout=10),
               httpx.get(base, timeout=10, headers={"Authorization": "Bearer nosuchsession.secret"}),
               httpx.get(base, timeout=10, headers={"Authorization": "Bearer " + "x" * 500})]
    assert {a.status_code for a in answers} == {401}
    assert {a.json()["error"]["reason"] for a in answers} == {"HISTORY_TOKEN_INVALID"}
    assert all(a.headers["cache-control"] == "no-store" for a in answers)


def test_the_operator_can_turn_the_history_off(checkin_node, tmp_path) -> None:
    node, _ = checkin_node
    off = start_node(node.settings.updated(port=0, data_dir=tmp_path / "off", history__enabled=False))
    key = add_caller(off.settings.store.callers_path, "hotel", ["verify:*"])
    off.state.callers = CallerRegistry.load(off.settings.store.callers_path)
    try:
        with _client(off, key) as hotel:
            code, reason, _ = _refusal(lambda: hotel.verification_history("any-session"))
    finally:
        off.stop(0)
    assert (code, reason) == ("FAILED_PRECONDITION", "HISTORY_DISABLED")
