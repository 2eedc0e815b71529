"""The committed generated code is exactly what the committed proto produces."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _generator():
    spec = importlib.util.spec_from_file_location("gen_proto", REPO / "scripts" / "gen_proto.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def test_committed_generated_code_matches_proto(tmp_path: Path) -> None:
    _generator().generate(tmp_path)
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*.py*"))
    assert generated, "protoc generated nothing"
    for relative in generated:
        committed = REPO / relative
        assert committed.is_file(), f"{relative} is generated but not committed; run scripts/gen_proto.py"
        assert committed.read_bytes() == (tmp_path / relative).read_bytes(), (
            f"{relative} differs from the proto; run scripts/gen_proto.py and commit"
        )


def test_verify_response_has_no_score_field() -> None:
    from google.protobuf.descriptor import FieldDescriptor

    from idv.v1 import verification_pb2 as pb

    for message in (pb.VerifyResponse, pb.EnrollResponse):
        for field in message.DESCRIPTOR.fields:
            assert field.type not in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE), (
                f"{message.DESCRIPTOR.name}.{field.name} is a floating-point field: no score may be returned"
            )
            assert "score" not in field.name and "similar" not in field.name
