"""Thin gRPC servicer: authenticate, authorize, admit, convert, call the service, map errors.

Credentials and scopes are checked first, before any frame is decoded; then the
admission control sheds load for the expensive RPCs only (health checks are
another service and stay answered when the node is saturated).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

import grpc

from idv.admin import AdminService
from idv.errors import DeadlineExceeded, IdvError, InvalidRequest, NotServing, Overloaded
from idv.node_state import NodeState
from idv.pipeline import Budget
from idv.service import EnrollCommand, VerificationService, VerifyCommand
from idv.session_service import SessionService
from idv.rpc.status import internal_status, to_status
from idv.security.callers import METADATA_KEY, Caller
from idv.v1 import verification_pb2 as pb
from idv.v1 import verification_pb2_grpc as pb_grpc
from idv.verdicts import Purpose

log = logging.getLogger("idv.rpc")

T = TypeVar("T")

_PURPOSES = {
    pb.REGISTRATION: Purpose.REGISTRATION,
    pb.LICENCE_RENEWAL: Purpose.LICENCE_RENEWAL,
    pb.CHECK_IN: Purpose.CHECK_IN,
}


class Admission:
    """At most `max_in_flight` expensive requests are admitted (the rest get RESOURCE_EXHAUSTED at
    once); of those, at most `compute_slots` run the models at a time, the others wait within
    their own deadline.
    """

    def __init__(self, max_in_flight: int, compute_slots: int):
        self._admitted = threading.BoundedSemaphore(max_in_flight)
        self._compute = threading.BoundedSemaphore(compute_slots)
        self._lock = threading.Lock()
        self.in_flight = 0

    def run(self, budget: Budget, work: Callable[[], T]) -> T:
        if not self._admitted.acquire(blocking=False):
            raise Overloaded("the node is at capacity; retry with backoff")
        with self._lock:
            self.in_flight += 1
        try:
            if not self._compute.acquire(timeout=max(budget.remaining(), 0.0)):
                raise DeadlineExceeded("deadline exceeded while queued for a worker")
            try:
                return work()
            finally:
                self._compute.release()
        finally:
            with self._lock:
                self.in_flight -= 1
            self._admitted.release()


def _api_key(context: grpc.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == METADATA_KEY:
            return value if isinstance(value, str) else None
    return None


class IdentityVerificationServicer(pb_grpc.IdentityVerificationServicer):
    def __init__(self, node: NodeState, admission: Admission, budget_seconds: float):
        self._node = node
        self._admission = admission
        self._budget_seconds = budget_seconds

    def _budget(self, context: grpc.ServicerContext) -> Budget:
        remaining = context.time_remaining()
        seconds = self._budget_seconds if remaining is None else min(self._budget_seconds, remaining)
        return Budget(seconds, cancelled=lambda: not context.is_active())

    def _call(self, rpc: str, context: grpc.ServicerContext, scope: Callable[[Caller], str],
              work: Callable[[VerificationService, Caller, Budget], T]) -> T:
        budget = self._budget(context)
        started = time.perf_counter()
        caller_name = "-"
        try:
            caller = self._node.callers.authenticate(_api_key(context))
            caller_name = caller.name
            self._node.callers.authorize(caller, scope(caller))
            service = self._node.service
            if service is None:
                raise NotServing("the node is starting or stopping; retry shortly")
            result = self._admission.run(budget, lambda: work(service, caller, budget))
            self._node.metrics.observe_rpc(rpc, "OK", time.perf_counter() - started)
            return result
        except IdvError as error:
            self._node.metrics.observe_rpc(rpc, error.code.value, time.perf_counter() - started, error.reason)
            log.info("request refused", extra={"rpc": rpc, "caller": caller_name, "code": error.code.value,
                                               "error_reason": error.reason})
            context.abort_with_status(to_status(error))
        except Exception:  # a bug: generic status to the caller, traceback (no payload) to the log
            self._node.metrics.observe_rpc(rpc, "INTERNAL", time.perf_counter() - started, "INTERNAL")
            log.exception("unhandled error", extra={"rpc": rpc, "caller": caller_name})
            context.abort_with_status(internal_status())
        raise AssertionError("unreachable")  # abort_with_status raises

    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext) -> pb.VerifyResponse:
        purpose = _PURPOSES.get(request.purpose)

        def scope(caller: Caller) -> str:
            if purpose is None:
                raise InvalidRequest("purpose is required (REGISTRATION, LICENCE_RENEWAL or CHECK_IN)",
                                     "MISSING_PURPOSE")
            return f"verify:{purpose.value.lower()}"

        def work(service: VerificationService, caller: Caller, budget: Budget):
            command = VerifyCommand(request.id_number, request.name, purpose, tuple(request.frames),
                                    request.challenge_id, caller.name, tuple(request.frame_timestamps_ms))
            outcome = service.verify(command, budget)
            self._node.record_decision(command, outcome)
            return outcome

        outcome = self._call("Verify", context, scope, work)
        return pb.VerifyResponse(
            verdict=pb.Verdict.Value(outcome.verdict.value),
            reason=pb.Reason.Value(outcome.reason.value),
            request_id=outcome.request_id,
        )

    def Enroll(self, request: pb.EnrollRequest, context: grpc.ServicerContext) -> pb.EnrollResponse:
        def work(service: VerificationService, caller: Caller, budget: Budget):
            command = EnrollCommand(request.id_number, request.name, tuple(request.reference_images),
                                    request.replace, caller.name)
            return service.enroll(command, budget)

        outcome = self._call("Enroll", context, lambda caller: "enroll", work)
        log.info("enrolled", extra={"rpc": "Enroll", "request_id": outcome.request_id,
                                    "template_count": outcome.template_count})
        return pb.EnrollResponse(request_id=outcome.request_id, template_count=outcome.template_count,
                                 flagged_for_review=outcome.flagged_for_review)

    def CreateChallenge(self, request: pb.CreateChallengeRequest,
                        context: grpc.ServicerContext) -> pb.CreateChallengeResponse:
        def work(service: VerificationService, caller: Caller, budget: Budget):
            return service.create_challenge(caller.name, request.id_number, _PURPOSES.get(request.purpose))

        challenge = self._call("CreateChallenge", context, _any_verify_scope, work)
        return pb.CreateChallengeResponse(
            challenge_id=challenge.challenge_id,
            actions=[pb.Action.Value(a) for a in challenge.actions],
            expires_at_unix=int(challenge.expires_at),
            light=[pb.LightStep(colour=c, duration_ms=d) for c, d in challenge.light],
        )

    # --- verification sessions (issue 13) ------------------------------------------------------

    def _session_service(self) -> SessionService:
        sessions = self._node.sessions
        if sessions is None:
            raise NotServing("this node does not serve sessions: they need the device endpoint (device.port) "
                             "and the FaceMesh model (active challenges)")
        return sessions

    def CreateSession(self, request: pb.CreateSessionRequest,
                      context: grpc.ServicerContext) -> pb.CreateSessionResponse:
        purpose = _PURPOSES.get(request.purpose)
        fixed = _fixed_actions(context)

        def scope(caller: Caller) -> str:
            if purpose is None:
                raise InvalidRequest("purpose is required (REGISTRATION, LICENCE_RENEWAL or CHECK_IN)",
                                     "MISSING_PURPOSE")
            return f"verify:{purpose.value.lower()}"

        def work(service: VerificationService, caller: Caller, budget: Budget):
            return self._session_service().create_session(caller.name, request.id_number, request.name, purpose,
                                                          fixed)

        opened = self._call("CreateSession", context, scope, work)
        return pb.CreateSessionResponse(
            session_id=opened.session_id, capture_url=opened.capture_url, capture_token=opened.capture_token,
            actions=[pb.Action.Value(a) for a in opened.actions], expires_at_unix=int(opened.expires_at),
            frame_count=opened.frame_count,
            light=[pb.LightStep(colour=c, duration_ms=d) for c, d in opened.light],
        )

    def GetSessionResult(self, request: pb.GetSessionResultRequest,
                         context: grpc.ServicerContext) -> pb.GetSessionResultResponse:
        def work(service: VerificationService, caller: Caller, budget: Budget):
            return self._session_service().session_result(caller.name, request.session_id, self._budget_seconds)

        view = self._call("GetSessionResult", context, _any_verify_scope, work)
        response = pb.GetSessionResultResponse(state=pb.SessionState.Value(view.state.value))
        if view.result is not None:
            response.refusal = view.result.refusal
            response.request_id = view.result.request_id
            if view.result.verdict:
                response.verdict = pb.Verdict.Value(view.result.verdict)
                response.reason = pb.Reason.Value(view.result.reason)
        return response


    # ---- admin (issue 17): scope `admin`, logic in idv.admin, answers without any biometric
    def _admin_call(self, rpc: str, context: grpc.ServicerContext, work: Callable[[AdminService, Caller], T]) -> T:
        def run(service: VerificationService, caller: Caller, budget: Budget) -> T:
            admin = self._node.admin
            if admin is None:
                raise NotServing("the node is starting or stopping; retry shortly")
            return work(admin, caller)

        return self._call(rpc, context, lambda caller: "admin", run)

    def DeleteIdentity(self, request: pb.IdentityRequest, context: grpc.ServicerContext) -> pb.DeleteIdentityResponse:
        done = self._admin_call("DeleteIdentity", context, lambda admin, caller: admin.delete(caller.name, request.id_number))
        return pb.DeleteIdentityResponse(request_id=done.request_id, deleted=done.deleted,
                                         propagation_bound_seconds=done.propagation_bound_seconds)

    def UnlockIdentity(self, request: pb.IdentityRequest, context: grpc.ServicerContext) -> pb.UnlockIdentityResponse:
        done = self._admin_call("UnlockIdentity", context, lambda admin, caller: admin.unlock(caller.name, request.id_number))
        return pb.UnlockIdentityResponse(request_id=done.request_id, was_locked=done.was_locked)

    def GetIdentityStatus(self, request: pb.IdentityRequest,
                          context: grpc.ServicerContext) -> pb.GetIdentityStatusResponse:
        status = self._admin_call("GetIdentityStatus", context,
                                  lambda admin, caller: admin.status(caller.name, request.id_number))
        return pb.GetIdentityStatusResponse(
            request_id=status.request_id, enrolled=status.enrolled, template_count=status.template_count,
            enrolled_at_unix=status.enrolled_at, model_fingerprints=list(status.model_fingerprints),
            consecutive_failures=status.consecutive_failures, locked_until_unix=status.locked_until,
            failure_cap_reached=status.failure_cap_reached, reenrolment_required=status.reenrolment_required)


# Tests only (the service refuses it unless the node allows fixed challenges, never in production):
# the actions a session's challenge must have, so a recorded clip can match it.
FIXED_ACTIONS_METADATA_KEY = "idv-test-fixed-actions"


def _fixed_actions(context: grpc.ServicerContext) -> tuple[str, ...]:
    for key, value in context.invocation_metadata() or ():
        if key == FIXED_ACTIONS_METADATA_KEY and isinstance(value, str):
            return tuple(a.strip().upper() for a in value.split(",")[:8])
    return ()


def _any_verify_scope(caller: Caller) -> str:
    """CreateChallenge needs some verify scope: return one the caller has, or the first to deny."""
    for purpose in Purpose:
        scope = f"verify:{purpose.value.lower()}"
        if caller.may(scope):
            return scope
    return "verify:registration"
