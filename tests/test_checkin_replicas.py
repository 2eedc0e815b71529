"""Issue 18 across two replicas sharing PostgreSQL, Redis and a data dir (each its own audit log):
a check-in code issued on one is redeemed once on the other, and the person's history gathers the
attempts both replicas audited."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest

from idv.client import IdvClient
from idv.rpc.status import error_info
from idv.security.callers import add_caller
from tests.conftest import ID_SUBJECT_1
from tests.servers import pg_schema, postgres_dsn, redis_prefix, redis_url  # noqa: F401  (fixtures)
from tests.test_challenges import clip_frames
from tests.test_replicas import _start_replicas, shared_settings  # noqa: F401  (fixture)

NAME = "张三"
ACTIONS = ("TURN_LEFT", "TURN_RIGHT")


def test_a_code_issued_on_one_replica_is_redeemed_once_on_the_other_and_history_reads_both_logs(
        shared_settings, testdata) -> None:  # noqa: F811
    settings = shared_settings.updated(device_port=0, session_fixed_challenges=True, request_budget_seconds=60.0)
    path = settings.store.callers_path
    keys = {"hotel": add_caller(path, "hotel", ["verify:*", "enroll"], "如家酒店"),
            "netcafe": add_caller(path, "netcafe", ["verify:check_in"], "星际网吧"),
            "desk": add_caller(path, "desk", ["redeem"])}
    nodes = _start_replicas(settings)
    clients = []
    try:
        def client(node, who: str) -> IdvClient:
            made = IdvClient(f"127.0.0.1:{node.port}", api_key=keys[who], timeout=60, retries=0)
            clients.append(made)
            return made

        hotel_a, netcafe_b, desk_a, desk_b = (client(nodes[0], "hotel"), client(nodes[1], "netcafe"),
                                              client(nodes[0], "desk"), client(nodes[1], "desk"))
        hotel_a.enroll(ID_SUBJECT_1, NAME, clip_frames(testdata, "live_d12.mp4", 0, 0, 1))
        assert netcafe_b.verify(ID_SUBJECT_1, NAME, clip_frames(testdata, "live_d3.mp4", 0, 40, 8),
                                "check_in").verdict == "FAIL"  # audited by replica b
        opened = hotel_a.create_session(ID_SUBJECT_1, NAME, "check_in", fixed_actions=ACTIONS)
        frames = clip_frames(testdata, "live_d12.mp4", 20, 105)
        # Frame times within the session's short life (a longer span is a capture made before it).
        header = {"timestamps_ms": [40.0 * i for i in range(len(frames))], "sizes": [len(f) for f in frames]}
        judged = httpx.post(f"http://127.0.0.1:{nodes[1].device.port}/v1/capture", timeout=120,
                            content=json.dumps(header).encode() + b"\n" + b"".join(frames),
                            headers={"Authorization": f"Bearer {opened.capture_token}",
                                     "Content-Type": "application/vnd.idv.capture"})
        answer = judged.json()
        assert answer["verdict"] == "PASS" and answer["credential"]["qr_png"].startswith("data:image/png;base64,")
        code = hotel_a.session_result(opened.session_id).credential.code  # issued on b, read on a
        assert desk_a.redeem_credential(code).id_number == ID_SUBJECT_1
        with pytest.raises(grpc.RpcError) as refused:
            desk_b.redeem_credential(code)
        assert error_info(refused.value).reason == "CREDENTIAL_INVALID"
        # The page's history (asked on a) and the backend's (asked on b) both see both replicas' records.
        seen = httpx.get(f"http://127.0.0.1:{nodes[0].device.port}/v1/history", timeout=30,
                         headers={"Authorization": f"Bearer {answer['history_token']}"}).json()["entries"]
        assert [(e["caller"], e["verdict"]) for e in seen] == [("如家酒店", "PASS"), ("星际网吧", "FAIL")]
        entries, _ = client(nodes[1], "hotel").verification_history(opened.session_id)
        assert [(e.caller, e.verdict) for e in entries] == [("如家酒店", "PASS"), ("星际网吧", "FAIL")]
        assert {p.name for p in settings.store.data_dir.glob("audit*.log")} == {"audit-a.log", "audit-b.log"}
    finally:
        for made in clients:
            made.close()
        for node in nodes:
            node.stop(0)
