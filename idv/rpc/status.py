"""The one place where idv errors become gRPC statuses with rich details.

Each status carries a google.rpc.ErrorInfo (domain "idv.v1", a stable reason,
non-personal metadata) and, for throttling, a RetryInfo. Messages are written
by idv and never echo request content.
"""

from __future__ import annotations

import math

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from idv.errors import Code, IdvError

DOMAIN = "idv.v1"

_GRPC_CODES: dict[Code, tuple[grpc.StatusCode, int]] = {
    Code.INVALID_ARGUMENT: (grpc.StatusCode.INVALID_ARGUMENT, code_pb2.INVALID_ARGUMENT),
    Code.ALREADY_EXISTS: (grpc.StatusCode.ALREADY_EXISTS, code_pb2.ALREADY_EXISTS),
    Code.NOT_FOUND: (grpc.StatusCode.NOT_FOUND, code_pb2.NOT_FOUND),
    Code.FAILED_PRECONDITION: (grpc.StatusCode.FAILED_PRECONDITION, code_pb2.FAILED_PRECONDITION),
    Code.DEADLINE_EXCEEDED: (grpc.StatusCode.DEADLINE_EXCEEDED, code_pb2.DEADLINE_EXCEEDED),
    Code.CANCELLED: (grpc.StatusCode.CANCELLED, code_pb2.CANCELLED),
    Code.UNAVAILABLE: (grpc.StatusCode.UNAVAILABLE, code_pb2.UNAVAILABLE),
    Code.RESOURCE_EXHAUSTED: (grpc.StatusCode.RESOURCE_EXHAUSTED, code_pb2.RESOURCE_EXHAUSTED),
    Code.UNAUTHENTICATED: (grpc.StatusCode.UNAUTHENTICATED, code_pb2.UNAUTHENTICATED),
    Code.PERMISSION_DENIED: (grpc.StatusCode.PERMISSION_DENIED, code_pb2.PERMISSION_DENIED),
    Code.INTERNAL: (grpc.StatusCode.INTERNAL, code_pb2.INTERNAL),
}


def _pack(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def to_status(error: IdvError) -> grpc.Status:
    _, numeric = _GRPC_CODES[error.code]
    retry_after_seconds = getattr(error, "retry_after_seconds", None)
    details = [_pack(error_details_pb2.ErrorInfo(reason=error.reason, domain=DOMAIN, metadata=error.metadata))]
    if retry_after_seconds is not None:
        delay = duration_pb2.Duration(seconds=max(1, math.ceil(retry_after_seconds)))
        details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
    return rpc_status.to_status(status_pb2.Status(code=numeric, message=error.message, details=details))


def internal_status() -> grpc.Status:
    """For bugs: a generic message; the traceback goes to the server log only."""
    return to_status(IdvError("internal error; the request was not processed", "INTERNAL"))


def error_info(call_error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Client side: the ErrorInfo of a failed call, if any."""
    status = rpc_status.from_call(call_error)  # type: ignore[arg-type]
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None
