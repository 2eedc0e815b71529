"""grpc.health.v1.Health behind its own intake (issue 16).

The stock aio health service reads its request eagerly, and gRPC lets a peer send a
request of up to max_message_bytes (12 MiB) for it: twelve connections of half-sent
"health checks" would hold what the service's receive slots bound. So the health service
reads its (tiny) request the same way the service does, under its own receive slots
(`HEALTH_LIMITS`: one per address, eight in all, a short timeout) that the service's
callers never compete for, and keyless as health checks are. The answers come from the
stock servicer, unchanged.
"""

from __future__ import annotations


import grpc
from grpc_health.v1 import health_pb2

from idv.errors import IdvError, InvalidRequest, Overloaded
from idv.metrics import Metrics
from idv.rpc.intake import IntakeLimits, PeerAddresses, PeerIntake, read_single_message
from idv.rpc.status import to_status

HEALTH_SERVICE = "grpc.health.v1.Health"
HEALTH_LIMITS = IntakeLimits(max_streams_per_peer=16, receive_bodies_per_peer=1, receive_bodies_total=8,
                             body_timeout_seconds=2.0)


class GuardedHealth:
    def __init__(self, servicer: object, metrics: Metrics, limits: IntakeLimits = HEALTH_LIMITS,
                 addresses: PeerAddresses | None = None):
        self._servicer = servicer
        self._metrics = metrics
        self._intake = PeerIntake(limits, addresses)

    def generic_handler(self) -> grpc.GenericRpcHandler:
        serialize = health_pb2.HealthCheckResponse.SerializeToString
        return grpc.method_handlers_generic_handler(HEALTH_SERVICE, {
            "Check": grpc.stream_unary_rpc_method_handler(self._check, None, serialize),
            "Watch": grpc.stream_stream_rpc_method_handler(self._watch, None, serialize),
        })

    async def _check(self, _requests: object, context: grpc.aio.ServicerContext):
        address = self._intake.addresses.of(context.peer())
        if not self._intake.open_stream(address):
            await self._refuse(context, Overloaded("too many calls open from this address", "TOO_MANY_STREAMS"))
        try:
            request = await self._request(context, address)
            return await self._servicer.Check(request, context)
        finally:
            self._intake.close_stream(address)

    async def _watch(self, _requests: object, context: grpc.aio.ServicerContext) -> None:
        address = self._intake.addresses.of(context.peer())
        if not self._intake.open_stream(address):
            await self._refuse(context, Overloaded("too many calls open from this address", "TOO_MANY_STREAMS"))
        try:
            request = await self._request(context, address)
            await self._servicer.Watch(request, context)
        finally:
            self._intake.close_stream(address)

    async def _request(self, context: grpc.aio.ServicerContext, address: str) -> health_pb2.HealthCheckRequest:
        if not self._intake.start_receiving(address, None):
            await self._refuse(context, Overloaded("too many health requests are being received", "RECEIVE_BUSY"))
        try:
            raw, problem = await read_single_message(context, self._intake.limits.body_timeout_seconds)
        finally:
            self._intake.stop_receiving(address, None)
        if problem is not None:
            await self._refuse(context, problem)
        try:
            return health_pb2.HealthCheckRequest.FromString(raw)
        except Exception:  # protobuf's DecodeError
            await self._refuse(context, InvalidRequest("the request is not a valid protobuf message",
                                                       "UNDECODABLE_PROTOBUF"))
        raise AssertionError("unreachable")

    async def _refuse(self, context: grpc.aio.ServicerContext, error: IdvError) -> None:
        self._metrics.observe_rpc("Health", error.code.value, 0.0, error.reason)
        self._metrics.observe_refused_before_handler(error.reason)
        await context.abort_with_status(to_status(error))

