"""Duplicate-face policies over gRPC on the embedded default store: refuse, or enrol and flag,
with the other identity named only in the audit log (as a keyed hash)."""

from __future__ import annotations


import grpc
import pytest

from idv.client import IdvClient
from idv.rpc.status import error_info
from tests.conftest import ID_SUBJECT_1, ID_SUBJECT_2, nuaa_frames, start_node


def _photo(testdata, subject: str, index: int = 0) -> bytes:
    return nuaa_frames(testdata, "print", subject)[index].read_bytes()


@pytest.mark.parametrize("policy", ["refuse", "flag"])
def test_a_second_id_for_an_enrolled_face_is_refused_or_flagged(node_settings, testdata, policy) -> None:
    settings = node_settings.updated(duplicate_policy=policy)
    node = start_node(settings)
    try:
        with IdvClient(f"127.0.0.1:{node.port}", timeout=30, retries=0) as client:
            assert not client.enroll(ID_SUBJECT_1, "张三", [_photo(testdata, "0001")]).flagged_for_review
            # Re-enrolling the same identity with its own face is no duplicate.
            assert not client.enroll(ID_SUBJECT_1, "张三", [_photo(testdata, "0001", 5)], replace=True).flagged_for_review
            if policy == "refuse":
                with pytest.raises(grpc.RpcError) as refused:
                    client.enroll(ID_SUBJECT_2, "李四", [_photo(testdata, "0001", 5)])
                assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
                assert error_info(refused.value).reason == "DUPLICATE_FACE"
            else:
                assert client.enroll(ID_SUBJECT_2, "李四", [_photo(testdata, "0001", 5)]).flagged_for_review
        first_key = node.assembled.service.id_key(ID_SUBJECT_1)
    finally:
        node.stop(0)
    audit = settings.store.audit_path.read_text(encoding="utf-8")
    assert f'"duplicate_of": "{first_key}"' in audit.replace('":"', '": "')
    assert ID_SUBJECT_1 not in audit and ID_SUBJECT_2 not in audit
