"""Thin gRPC servicer on grpc.aio: receive, authenticate, authorize, admit, run in the pool, map errors.

Every RPC of the service goes through two generic helpers, so a handler holds no logic:

* `_receive` (registered for each method, request-streaming on the wire-compatible
  side so the body is read under our control): per-address call cap, the API key checked
  from the HEADERS before any body byte is read, a receive slot (idv/rpc/intake.py), the
  body within `body_timeout_seconds`, protobuf decoding. Refusals here are counted in
  `idv_refused_before_handler_total{cause}`.
* `_call`: scope check, admission to the node's compute pool (RESOURCE_EXHAUSTED over
  capacity, queueing within the deadline), the synchronous `work` on the pool, errors
  mapped to statuses; a caller that leaves stops the pipeline at its next stage (Budget).

A handler is `async def X(self, request, context)` returning
`await self._call("X", context, scope, work)` converted to its response, with
`work(service, caller, budget)` synchronous (it runs on a pool thread).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError

from idv.errors import IdvError, InvalidRequest, NotServing, Overloaded
from idv.node_state import NodeState
from idv.admin import AdminService
from idv.pipeline import Budget
from idv.rpc.admission import Admission
from idv.rpc.intake import PeerIntake, read_single_message
from idv.rpc.status import internal_status, to_status
from idv.security.callers import ANONYMOUS, METADATA_KEY, Caller
from idv.security.terminals import TerminalAttestation
from idv.service import EnrollCommand, VerificationService, VerifyCommand
from idv.session_service import SessionService
from idv.v1 import verification_pb2 as pb
from idv.verdicts import Purpose

log = logging.getLogger("idv.rpc")

T = TypeVar("T")

SERVICE = pb.DESCRIPTOR.services_by_name["IdentityVerification"]

_PURPOSES = {
    pb.REGISTRATION: Purpose.REGISTRATION,
    pb.LICENCE_RENEWAL: Purpose.LICENCE_RENEWAL,
    pb.CHECK_IN: Purpose.CHECK_IN,
}

# The caller `_receive` authenticated, for the `_call` of the same RPC (each aio RPC runs in its own task).
_CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("idv_caller")


def _api_key(context: grpc.aio.ServicerContext) -> str | None:
    for key, value in context.invocation_metadata() or ():
        if key == METADATA_KEY:
            return value if isinstance(value, str) else None
    return None


def _remaining(context: grpc.aio.ServicerContext, cap: float) -> float:
    remaining = context.time_remaining()
    return cap if remaining is None else min(cap, remaining)


class IdentityVerificationServicer:
    def __init__(self, node: NodeState, admission: Admission, budget_seconds: float, intake: PeerIntake):
        self._node = node
        self._admission = admission
        self._budget_seconds = budget_seconds
        self._intake = intake

    # --- generic helpers ----------------------------------------------------------

    def generic_handler(self, service: ServiceDescriptor = SERVICE) -> grpc.GenericRpcHandler:
        """Every method of `service` this servicer implements (by name), each behind `_receive`.

        Another service of the proto (e.g. an admin service) is served the same way: implement its
        methods here and register `servicer.generic_handler(pb.DESCRIPTOR.services_by_name[...])`."""
        methods = {}
        for method in service.methods:
            handler = getattr(self, method.name, None)
            if handler is None:
                continue  # not implemented here: gRPC answers UNIMPLEMENTED
            request_type = message_factory.GetMessageClass(method.input_type)
            methods[method.name] = grpc.stream_unary_rpc_method_handler(
                functools.partial(self._receive, method.name, request_type, handler),
                request_deserializer=None,  # bytes: decoded in _receive, so a bad message is ours to count
                response_serializer=lambda response: response.SerializeToString(),
            )
        return grpc.method_handlers_generic_handler(service.full_name, methods)

    async def _refuse(self, rpc: str, context: grpc.aio.ServicerContext, error: IdvError, started: float,
                      caller_name: str = "-", before_handler: bool = True) -> None:
        self._node.metrics.observe_rpc(rpc, error.code.value, time.perf_counter() - started, error.reason)
        if before_handler:
            self._node.metrics.observe_refused_before_handler(error.reason)
        log.info("request refused", extra={"rpc": rpc, "caller": caller_name, "code": error.code.value,
                                           "error_reason": error.reason})
        await context.abort_with_status(to_status(error))

    async def _receive(self, rpc: str, request_type: type, handler: Callable[..., Awaitable[T]],
                       request_iterator: object, context: grpc.aio.ServicerContext) -> T:
        started = time.perf_counter()
        intake = self._intake
        address = intake.addresses.of(context.peer())
        if not intake.open_stream(address):
            await self._refuse(rpc, context, Overloaded("too many calls open from this address; retry with backoff",
                                                        "TOO_MANY_STREAMS"), started)
        try:
            try:
                caller = self._node.callers.authenticate(_api_key(context))
            except IdvError as error:
                await self._refuse(rpc, context, error, started, before_handler=False)
            caller_key = None if caller is ANONYMOUS else caller.name
            if not intake.start_receiving(address, caller_key):
                await self._refuse(rpc, context, Overloaded("too many request bodies are being received; retry with "
                                                            "backoff", "RECEIVE_BUSY"), started, caller.name)
            try:
                body_timeout = _remaining(context, intake.limits.body_timeout_seconds)
                raw, problem = await read_single_message(context, body_timeout)
            finally:
                intake.stop_receiving(address, caller_key)
            if problem is not None:
                await self._refuse(rpc, context, problem, started, caller.name)
            try:
                request = request_type.FromString(raw)
            except DecodeError:
                await self._refuse(rpc, context, InvalidRequest("the request is not a valid protobuf message",
                                                                "UNDECODABLE_PROTOBUF"), started, caller.name)
            _CALLER.set(caller)
            return await handler(request, context)
        finally:
            intake.close_stream(address)

    async def _call(self, rpc: str, context: grpc.aio.ServicerContext, scope: Callable[[Caller], str],
                    work: Callable[[VerificationService, Caller, Budget], T]) -> T:
        started = time.perf_counter()
        caller = _CALLER.get()
        cancelled = threading.Event()
        budget = Budget(_remaining(context, self._budget_seconds), cancelled=cancelled.is_set)
        try:
            self._node.callers.authorize(caller, scope(caller))
            service = self._node.service
            if service is None:
                raise NotServing("the node is starting or stopping; retry shortly")
            result = await self._admission.run(budget.remaining(), lambda: work(service, caller, budget), cancelled)
            self._node.metrics.observe_rpc(rpc, "OK", time.perf_counter() - started)
            return result
        except IdvError as error:
            await self._refuse(rpc, context, error, started, caller.name, before_handler=False)
        except asyncio.CancelledError:  # the caller left or its deadline passed
            self._node.metrics.observe_rpc(rpc, "CANCELLED", time.perf_counter() - started, "CANCELLED")
            raise
        except Exception:  # a bug: generic status to the caller, traceback (no payload) to the log
            self._node.metrics.observe_rpc(rpc, "INTERNAL", time.perf_counter() - started, "INTERNAL")
            log.exception("unhandled error", extra={"rpc": rpc, "caller": caller.name})
            await context.abort_with_status(internal_status())
        raise AssertionError("unreachable")  # abort_with_status raises

    # --- handlers -------------------------------------------------------------------

    async def Verify(self, request: pb.VerifyRequest, context: grpc.aio.ServicerContext) -> pb.VerifyResponse:
        purpose = _PURPOSES.get(request.purpose)

        def scope(caller: Caller) -> str:
            if purpose is None:
                raise InvalidRequest("purpose is required (REGISTRATION, LICENCE_RENEWAL or CHECK_IN)",
                                     "MISSING_PURPOSE")
            return f"verify:{purpose.value.lower()}"

        def work(service: VerificationService, caller: Caller, budget: Budget):
            attestation = None
            if request.terminal_id or request.terminal_signature:
                attestation = TerminalAttestation(request.terminal_id, bytes(request.terminal_signature))
            command = VerifyCommand(request.id_number, request.name, purpose, tuple(request.frames),
                                    request.challenge_id, caller.name, tuple(request.frame_timestamps_ms),
                                    attestation=attestation, attestation_nonce=request.challenge_id)
            outcome = service.verify(command, budget)
            self._node.record_decision(command, outcome)
            return outcome

        outcome = await self._call("Verify", context, scope, work)
        return pb.VerifyResponse(
            verdict=pb.Verdict.Value(outcome.verdict.value),
            reason=pb.Reason.Value(outcome.reason.value),
            request_id=outcome.request_id,
            credential=_credential(outcome.credential),
        )

    async def Enroll(self, request: pb.EnrollRequest, context: grpc.aio.ServicerContext) -> pb.EnrollResponse:
        def work(service: VerificationService, caller: Caller, budget: Budget):
            command = EnrollCommand(request.id_number, request.name, tuple(request.reference_images),
                                    request.replace, caller.name)
            return service.enroll(command, budget)

        outcome = await self._call("Enroll", context, lambda caller: "enroll", work)
        log.info("enrolled", extra={"rpc": "Enroll", "request_id": outcome.request_id,
                                    "template_count": outcome.template_count})
        return pb.EnrollResponse(request_id=outcome.request_id, template_count=outcome.template_count,
                                 flagged_for_review=outcome.flagged_for_review)

    async def CreateChallenge(self, request: pb.CreateChallengeRequest,
                              context: grpc.aio.ServicerContext) -> pb.CreateChallengeResponse:
        def work(service: VerificationService, caller: Caller, budget: Budget):
            return service.create_challenge(caller.name, request.id_number, _PURPOSES.get(request.purpose))

        challenge = await self._call("CreateChallenge", context, _any_verify_scope, work)
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

    async def CreateSession(self, request: pb.CreateSessionRequest,
                      context: grpc.aio.ServicerContext) -> pb.CreateSessionResponse:
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

        opened = await self._call("CreateSession", context, scope, work)
        return pb.CreateSessionResponse(
            session_id=opened.session_id, capture_url=opened.capture_url, capture_token=opened.capture_token,
            actions=[pb.Action.Value(a) for a in opened.actions], expires_at_unix=int(opened.expires_at),
            frame_count=opened.frame_count,
            light=[pb.LightStep(colour=c, duration_ms=d) for c, d in opened.light],
        )

    async def GetSessionResult(self, request: pb.GetSessionResultRequest,
                         context: grpc.aio.ServicerContext) -> pb.GetSessionResultResponse:
        def work(service: VerificationService, caller: Caller, budget: Budget):
            return self._session_service().session_result(caller.name, request.session_id, self._budget_seconds)

        view = await self._call("GetSessionResult", context, _any_verify_scope, work)
        response = pb.GetSessionResultResponse(state=pb.SessionState.Value(view.state.value))
        if view.result is not None:
            response.refusal = view.result.refusal
            response.request_id = view.result.request_id
            if view.result.verdict:
                response.verdict = pb.Verdict.Value(view.result.verdict)
                response.reason = pb.Reason.Value(view.result.reason)
        if view.credential is not None:
            response.credential.CopyFrom(_credential(view.credential))
        return response

    # --- check-in credentials and the person's verification history (issue 18) -----------------

    async def RedeemCredential(self, request: pb.RedeemCredentialRequest,
                               context: grpc.aio.ServicerContext) -> pb.RedeemCredentialResponse:
        def work(service: VerificationService, caller: Caller, budget: Budget):
            credentials = self._node.credentials
            if credentials is None:
                raise NotServing("this node issues no check-in credentials (credentials.purposes is empty)")
            return credentials.redeem(caller.name, request.code)

        redeemed = await self._call("RedeemCredential", context, lambda caller: "redeem", work)
        return pb.RedeemCredentialResponse(
            id_number=redeemed.id_number, name=redeemed.name, purpose=pb.Purpose.Value(redeemed.purpose.value),
            verified_at_unix=redeemed.verified_at, level=redeemed.level,
            verification_request_id=redeemed.verification_request_id, request_id=redeemed.request_id)

    async def GetVerificationHistory(self, request: pb.GetVerificationHistoryRequest,
                                     context: grpc.aio.ServicerContext) -> pb.GetVerificationHistoryResponse:
        def work(service: VerificationService, caller: Caller, budget: Budget):
            return self._session_service().history(caller.name, request.session_id)

        history = await self._call("GetVerificationHistory", context, _any_verify_scope, work)
        return pb.GetVerificationHistoryResponse(window_days=history.window_days, entries=[
            pb.HistoryEntry(time_unix=e.time, caller=e.caller, verdict=e.verdict,
                            purpose=pb.Purpose.Value(e.purpose) if e.purpose in pb.Purpose.keys() else 0)
            for e in history.entries])


    # ---- admin (issue 17): scope `admin`, logic in idv.admin, answers without any biometric
    async def _admin_call(self, rpc: str, context: grpc.aio.ServicerContext,
                          work: Callable[[AdminService, Caller], T]) -> T:
        def run(service: VerificationService, caller: Caller, budget: Budget) -> T:
            admin = self._node.admin
            if admin is None:
                raise NotServing("the node is starting or stopping; retry shortly")
            return work(admin, caller)

        return await self._call(rpc, context, lambda caller: "admin", run)

    async def DeleteIdentity(self, request: pb.IdentityRequest, context: grpc.aio.ServicerContext) -> pb.DeleteIdentityResponse:
        done = await self._admin_call("DeleteIdentity", context, lambda admin, caller: admin.delete(caller.name, request.id_number))
        return pb.DeleteIdentityResponse(request_id=done.request_id, deleted=done.deleted,
                                         propagation_bound_seconds=done.propagation_bound_seconds)

    async def UnlockIdentity(self, request: pb.IdentityRequest, context: grpc.aio.ServicerContext) -> pb.UnlockIdentityResponse:
        done = await self._admin_call("UnlockIdentity", context, lambda admin, caller: admin.unlock(caller.name, request.id_number))
        return pb.UnlockIdentityResponse(request_id=done.request_id, was_locked=done.was_locked)

    async def GetIdentityStatus(self, request: pb.IdentityRequest,
                          context: grpc.aio.ServicerContext) -> pb.GetIdentityStatusResponse:
        status = await self._admin_call("GetIdentityStatus", context,
                                  lambda admin, caller: admin.status(caller.name, request.id_number))
        return pb.GetIdentityStatusResponse(
            request_id=status.request_id, enrolled=status.enrolled, template_count=status.template_count,
            enrolled_at_unix=status.enrolled_at, model_fingerprints=list(status.model_fingerprints),
            consecutive_failures=status.consecutive_failures, locked_until_unix=status.locked_until,
            failure_cap_reached=status.failure_cap_reached, reenrolment_required=status.reenrolment_required)


# Tests only (the service refuses it unless the node allows fixed challenges, never in production):
# the actions a session's challenge must have, so a recorded clip can match it.
FIXED_ACTIONS_METADATA_KEY = "idv-test-fixed-actions"


def _fixed_actions(context: grpc.aio.ServicerContext) -> tuple[str, ...]:
    for key, value in context.invocation_metadata() or ():
        if key == FIXED_ACTIONS_METADATA_KEY and isinstance(value, str):
            return tuple(a.strip().upper() for a in value.split(",")[:8])
    return ()


def _credential(issued) -> pb.Credential | None:
    """Issue 18: the check-in credential for a response, or None (field left unset)."""
    if issued is None:
        return None
    return pb.Credential(code=issued.code, expires_at_unix=int(issued.expires_at))


def _any_verify_scope(caller: Caller) -> str:
    """CreateChallenge needs some verify scope: return one the caller has, or the first to deny."""
    for purpose in Purpose:
        scope = f"verify:{purpose.value.lower()}"
        if caller.may(scope):
            return scope
    return "verify:registration"
