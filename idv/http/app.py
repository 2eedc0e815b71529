"""The device endpoint as an ASGI app (Starlette): the capture page and one upload per session.

    GET  /capture/...     the reference capture page (static files shipped in idv/http/static)
    POST /v1/capture      one capture (Authorization: Bearer <capture token>), answered with
                          the verdict and coarse reason, never a score; with PASS (issue 18) also
                          the check-in QR code (PNG data URI) and a history token
                          In record mode (device.record_dir, development only) the capture is
                          also saved with its label (idv.http.recorder)
    GET  /v1/history      the person's own verification history (Authorization: Bearer <history
                          token>), issue 18

Before any pixel is decoded: rate per client address, bearer token present, body bounded
(refused while streaming, not after), header parsed and frame count/size/timing checked.
The token is used (once) only then, so a malformed upload from a buggy device does not burn
it, and an overloaded node answers 503 with the token still valid. The decision itself is
SessionService.verify_capture, i.e. Verify's own. Every error is JSON
{"error": {"reason", "message"}}; unknown, used and expired tokens answer alike.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from typing import Protocol, TypeVar

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from idv.address_keys import address_key
from idv.credential_qr import qr_png_data_uri
from idv.errors import Code, IdvError, InvalidRequest, NotServing, Throttled, Unauthenticated
from idv.http.capture_body import MEDIA_TYPE, CaptureLimits, parse_capture
from idv.http.recorder import LABELS, CaptureRecorder
from idv.pipeline import Budget
from idv.state.base import CounterStore

log = logging.getLogger("idv.http")

T = TypeVar("T")

_HTTP_STATUS = {
    Code.INVALID_ARGUMENT: 400, Code.UNAUTHENTICATED: 401, Code.PERMISSION_DENIED: 403, Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409, Code.FAILED_PRECONDITION: 409, Code.RESOURCE_EXHAUSTED: 429, Code.CANCELLED: 499,
    Code.UNAVAILABLE: 503, Code.DEADLINE_EXCEEDED: 504, Code.INTERNAL: 500,
}

# The page needs its own scripts, the camera and its own origin; nothing else, nowhere else.
_PAGE_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
                                "media-src 'self' blob: mediastream:; connect-src 'self'; base-uri 'none'; "
                                "form-action 'none'; frame-ancestors 'none'"),
    "Permissions-Policy": "camera=(self), microphone=(), geolocation=()",
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class DeviceEndpointConfig:
    # Origins (scheme://host[:port]) whose pages may upload cross-origin; empty: the node's own page only.
    allowed_origins: tuple[str, ...] = ()
    max_body_bytes: int = 8 * 1024 * 1024
    requests_per_minute_per_address: int = 30
    request_budget_seconds: float = 10.0
    capture: CaptureLimits = CaptureLimits()
    # Record mode (issue 14, development only): every capture is also saved, labelled (idv.http.recorder).
    recorder: CaptureRecorder | None = None


class Admission(Protocol):
    """What the node's admission control offers (idv.rpc.admission.Admission): `work` on the compute
    pool, refused over capacity, `cancelled` set if the caller leaves while it runs."""

    async def run(self, deadline_seconds: float, work: Callable[[], T], cancelled: threading.Event) -> T: ...


def _error(error: IdvError) -> JSONResponse:
    headers = {"Cache-Control": "no-store"}
    retry = getattr(error, "retry_after_seconds", None)
    if retry is not None:
        headers["Retry-After"] = str(max(1, int(retry + 0.999)))
    return JSONResponse({"error": {"reason": error.reason, "message": error.message}},
                        status_code=getattr(error, "http_status", _HTTP_STATUS.get(error.code, 500)), headers=headers)


class _TooLarge(IdvError):
    code = Code.INVALID_ARGUMENT
    default_reason = "BODY_TOO_LARGE"
    http_status = 413


class _SecuredStatic(StaticFiles):
    async def get_response(self, path: str, scope) -> Response:
        response = await super().get_response(path, scope)
        response.headers.update(_PAGE_HEADERS)
        return response


def _bearer(request: Request) -> str:
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


async def _read_bounded(request: Request, limit: int) -> bytearray:
    declared = request.headers.get("content-length")
    if declared is not None and (not declared.isdigit() or int(declared) > limit):
        raise _TooLarge(f"the upload is larger than {limit} bytes", "BODY_TOO_LARGE")
    body = bytearray()
    async for chunk in request.stream():
        if len(body) + len(chunk) > limit:
            body[:] = bytes(len(body))
            raise _TooLarge(f"the upload is larger than {limit} bytes", "BODY_TOO_LARGE")
        body += chunk
    return body


def build_app(node_state, admission: Admission, counters: CounterStore, config: DeviceEndpointConfig) -> Starlette:
    """`node_state` is the node's NodeState: its `sessions` is None until the models are warm."""

    def admit_address(address: str) -> None:
        # Counted per address_key: an IPv6 client is its /64, as the front and the gRPC intake count it.
        bucket = "device:" + hashlib.sha256(address_key(address).encode()).hexdigest()[:24]
        if counters.hit(bucket, 60, time.time()) > config.requests_per_minute_per_address:
            raise Throttled("too many uploads from this address; wait a minute", "RATE_LIMITED", 60.0)

    async def upload(request: Request) -> Response:
        started = time.perf_counter()
        body = bytearray()
        capture = None
        try:
            await run_in_threadpool(admit_address, request.client.host if request.client else "-")
            token = _bearer(request)
            if not token:
                raise Unauthenticated("the capture token is not valid (unknown, already used or expired)",
                                      "CAPTURE_TOKEN_INVALID")
            if request.headers.get("content-type", "").split(";")[0].strip() != MEDIA_TYPE:
                raise InvalidRequest(f"the upload must be {MEDIA_TYPE}", "CAPTURE_FORMAT")
            body = await _read_bounded(request, config.max_body_bytes)
            capture = parse_capture(body, config.capture)
            if config.recorder is not None and capture.record_label not in LABELS:
                raise InvalidRequest(f"record mode: label the capture as one of {', '.join(LABELS)}",
                                     "RECORD_LABEL")
            if config.recorder is None and capture.record_label:
                raise InvalidRequest("record_label was sent but this node is not in record mode", "RECORD_LABEL")
            sessions = node_state.sessions
            if sessions is None:
                raise NotServing("the node is starting or stopping; retry shortly")
            cancelled = threading.Event()  # a device that hangs up stops the pipeline at its next stage
            budget = Budget(config.request_budget_seconds, cancelled=cancelled.is_set)
            frames, stamps = capture.frames, capture.timestamps_ms
            command, outcome, history_token = await admission.run(
                budget.remaining(), lambda: sessions.verify_capture(token, frames, budget, stamps,
                                                                  capture.attestation), cancelled)
            node_state.record_decision(command, outcome)
            if config.recorder is not None:
                try:
                    await run_in_threadpool(_record, config.recorder, capture, command, outcome)
                except OSError as error:  # the decision is made and audited; only the recording is lost
                    log.error("record mode: capture not saved", extra={"error": error.strerror or str(error)})
            node_state.metrics.observe_rpc("DeviceUpload", "OK", time.perf_counter() - started)
            answer: dict[str, object] = {"verdict": outcome.verdict.value, "reason": outcome.reason.value}
            answer.update(await _after_pass(outcome.credential, history_token))  # issue 18
            return JSONResponse(answer, headers={"Cache-Control": "no-store"})
        except IdvError as error:
            node_state.metrics.observe_rpc("DeviceUpload", error.code.value, time.perf_counter() - started,
                                           error.reason)
            log.info("upload refused", extra={"rpc": "DeviceUpload", "code": error.code.value,
                                              "error_reason": error.reason})
            return _error(error)
        except Exception:  # a bug: generic answer; the traceback (never the payload) to the log
            node_state.metrics.observe_rpc("DeviceUpload", "INTERNAL", time.perf_counter() - started, "INTERNAL")
            log.exception("unhandled error", extra={"rpc": "DeviceUpload"})
            return _error(IdvError("internal error; the upload was not processed", "INTERNAL"))
        finally:
            if capture is not None:
                capture.zero()
            body[:] = bytes(len(body))

    # --- issue 18: the person's own verification history, for the page that just passed -------------
    async def history(request: Request) -> Response:
        started = time.perf_counter()
        try:
            await run_in_threadpool(admit_address, request.client.host if request.client else "-")
            token = _bearer(request)
            if not token:
                raise Unauthenticated("the history token is not valid (unknown or expired)", "HISTORY_TOKEN_INVALID")
            sessions = node_state.sessions
            if sessions is None:
                raise NotServing("the node is starting or stopping; retry shortly")
            found = await run_in_threadpool(sessions.history_for_device, token)
            node_state.metrics.observe_rpc("DeviceHistory", "OK", time.perf_counter() - started)
            return JSONResponse({"window_days": found.window_days, "entries": [
                {"time": round(e.time), "caller": e.caller, "purpose": e.purpose, "verdict": e.verdict}
                for e in found.entries]}, headers={"Cache-Control": "no-store"})
        except IdvError as error:
            node_state.metrics.observe_rpc("DeviceHistory", error.code.value, time.perf_counter() - started,
                                           error.reason)
            return _error(error)
        except Exception:
            log.exception("unhandled error", extra={"rpc": "DeviceHistory"})
            return _error(IdvError("internal error", "INTERNAL"))

    async def root(request: Request) -> Response:
        return RedirectResponse("/capture/", status_code=307)

    static = resources.files("idv.http") / "static"
    routes = [
        Route("/", root),
        Route("/v1/capture", upload, methods=["POST"]),
        Route("/v1/history", history, methods=["GET"]),  # issue 18
        Mount("/capture", _SecuredStatic(directory=str(static), html=True), name="capture"),
    ]
    middleware = [Middleware(CORSMiddleware, allow_origins=list(config.allowed_origins), allow_methods=["POST", "GET"],
                             allow_headers=["Authorization", "Content-Type"], max_age=600)]
    return Starlette(routes=routes, middleware=middleware)


def _record(recorder: CaptureRecorder, capture, command, outcome) -> None:
    """Record mode: save the capture with the light sequence its challenge issued (none: nothing to
    calibrate the light check with, so nothing is saved)."""
    if not outcome.light_sequence:
        log.warning("record mode: capture not saved (its challenge had no light sequence)")
        return
    recorder.save(capture.frames, capture.timestamps_ms, outcome.light_sequence, capture.record_label,
                  outcome.verdict.value, outcome.reason.value, command.purpose.value if command.purpose else "")


async def _after_pass(credential, history_token: str) -> dict[str, object]:
    """Issue 18: what a PASS adds to the upload's answer: the check-in QR code (rendered here, a PNG
    data URI: the page loads nothing from elsewhere) and the token for the person's history."""
    extra: dict[str, object] = {}
    if credential is not None:
        extra["credential"] = {"qr_png": await run_in_threadpool(qr_png_data_uri, credential.code),
                               "expires_at": int(credential.expires_at)}
    if history_token:
        extra["history_token"] = history_token
    return extra
