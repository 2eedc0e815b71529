"""Thin gRPC servicer: protobuf <-> core commands, admission control, error mapping."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

import grpc

from idv.node import NodeState
from idv.errors import DeadlineExceeded, IdvError, NotServing, Overloaded
from idv.pipeline import Budget, EnrollCommand, VerificationPipeline, VerifyCommand
from idv.rpc.status import internal_status, to_status
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
    """Load shedding for the expensive RPCs only, so health checks are still answered when saturated.

    At most `max_in_flight` requests are admitted (the rest get RESOURCE_EXHAUSTED at
    once); of those, at most `compute_slots` run the models at a time, the others wait
    within their own deadline.
    """

    def __init__(self, max_in_flight: int, compute_slots: int):
        self._admitted = threading.BoundedSemaphore(max_in_flight)
        self._compute = threading.BoundedSemaphore(compute_slots)

    def run(self, budget: Budget, work: Callable[[], T]) -> T:
        if not self._admitted.acquire(blocking=False):
            raise Overloaded("the node is at capacity; retry with backoff")
        try:
            if not self._compute.acquire(timeout=max(budget.remaining(), 0.0)):
                raise DeadlineExceeded("deadline exceeded while queued for a worker")
            try:
                return work()
            finally:
                self._compute.release()
        finally:
            self._admitted.release()


class IdentityVerificationServicer(pb_grpc.IdentityVerificationServicer):
    def __init__(self, node: NodeState, admission: Admission, budget_seconds: float):
        self._node = node
        self._admission = admission
        self._budget_seconds = budget_seconds

    def _budget(self, context: grpc.ServicerContext) -> Budget:
        remaining = context.time_remaining()
        seconds = self._budget_seconds if remaining is None else min(self._budget_seconds, remaining)
        return Budget(seconds)

    def _pipeline(self) -> VerificationPipeline:
        pipeline = self._node.pipeline
        if pipeline is None:
            raise NotServing("the node is starting or stopping; retry shortly")
        return pipeline

    def _call(self, rpc: str, context: grpc.ServicerContext, work: Callable[[VerificationPipeline, Budget], T]) -> T:
        budget = self._budget(context)
        try:
            pipeline = self._pipeline()
            return self._admission.run(budget, lambda: work(pipeline, budget))
        except IdvError as error:
            log.info("request refused", extra={"rpc": rpc, "code": error.code.value, "error_reason": error.reason})
            context.abort_with_status(to_status(error))
        except Exception:  # a bug: generic status to the caller, traceback (no payload) to the log
            log.exception("unhandled error", extra={"rpc": rpc})
            context.abort_with_status(internal_status())
        raise AssertionError("unreachable")  # abort_with_status raises

    def Verify(self, request: pb.VerifyRequest, context: grpc.ServicerContext) -> pb.VerifyResponse:
        command = VerifyCommand(
            id_number=request.id_number,
            name=request.name,
            purpose=_PURPOSES.get(request.purpose),
            frames=tuple(request.frames),
            challenge_id=request.challenge_id,
            caller=self._node.caller_of(context),
        )
        outcome = self._call("Verify", context, lambda p, b: p.verify(command, b))
        self._node.record_decision(command, outcome)
        return pb.VerifyResponse(
            verdict=pb.Verdict.Value(outcome.verdict.value),
            reason=pb.Reason.Value(outcome.reason.value),
            request_id=outcome.request_id,
            retry_after_seconds=outcome.retry_after_seconds,
        )

    def Enroll(self, request: pb.EnrollRequest, context: grpc.ServicerContext) -> pb.EnrollResponse:
        command = EnrollCommand(
            id_number=request.id_number,
            name=request.name,
            reference_images=tuple(request.reference_images),
            replace=request.replace,
            caller=self._node.caller_of(context),
        )
        outcome = self._call("Enroll", context, lambda p, b: p.enroll(command, b))
        log.info("enrolled", extra={"rpc": "Enroll", "request_id": outcome.request_id,
                                    "template_count": outcome.template_count})
        return pb.EnrollResponse(
            request_id=outcome.request_id,
            template_count=outcome.template_count,
            flagged_for_review=outcome.flagged_for_review,
        )

    def CreateChallenge(self, request: pb.CreateChallengeRequest, context: grpc.ServicerContext):
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "active challenges are not enabled on this node")

