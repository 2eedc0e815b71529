"""What the servicer needs at request time. The service is None until the models are warm."""

from __future__ import annotations

import logging

from grpc_health.v1 import health, health_pb2

from idv.admin import AdminService
from idv.credentials import CheckInCredentials
from idv.session_service import SessionService
from idv.metrics import Metrics
from idv.service import VerificationService, VerifyCommand, VerifyOutcome
from idv.security.callers import CallerRegistry

log = logging.getLogger("idv.node")

SERVICE_NAME = "idv.v1.IdentityVerification"


class NodeState:
    def __init__(self, health_servicer: health.HealthServicer, callers: CallerRegistry, metrics: Metrics):
        self._health = health_servicer
        self.callers = callers
        self.metrics = metrics
        self.service: VerificationService | None = None
        self.sessions: SessionService | None = None  # set with the service when the device endpoint is on
        self.admin: AdminService | None = None  # issue 17: set with the service, when the node is loaded
        self.credentials: CheckInCredentials | None = None  # issue 18: set with the service, when it issues them
        self.not_serving()

    def _set(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self._health.set(name, status)
        self.metrics.serving.set(1 if status == health_pb2.HealthCheckResponse.SERVING else 0)

    def ready(self, service: VerificationService) -> None:
        self.service = service
        self._set(health_pb2.HealthCheckResponse.SERVING)

    def not_serving(self) -> None:
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    def record_decision(self, command: VerifyCommand, outcome: VerifyOutcome) -> None:
        purpose = command.purpose.value if command.purpose else ""
        self.metrics.observe_verdict(purpose, outcome.verdict.value, outcome.reason.value, outcome.timings_ms)
        log.info(
            "decision",
            extra={
                "rpc": "Verify",
                "request_id": outcome.request_id,
                "caller": command.caller,
                "purpose": purpose,
                "verdict": outcome.verdict.value,
                "reason": outcome.reason.value,
                "timings_ms": {k: round(v, 2) for k, v in outcome.timings_ms.items()},
            },
        )
