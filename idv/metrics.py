"""Prometheus metrics on a registry owned by the node (no process-global registry).

Labels carry only RPC names, status codes, reason codes, purposes, verdicts, stages
and model fingerprints: never an identity, a name, a caller's key or an image.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.exposition import start_http_server

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("idv_requests", "RPCs by method, status code and error reason",
                                ["rpc", "code", "reason"], registry=self.registry)
        self.verdicts = Counter("idv_verdicts", "Verify verdicts by purpose, verdict and caller-visible reason",
                                ["purpose", "verdict", "reason"], registry=self.registry)
        self.rejected = Counter("idv_rejected", "Requests refused before the pipeline ran (auth, throttling, load)",
                                ["reason"], registry=self.registry)
        self.request_seconds = Histogram("idv_request_seconds", "RPC latency in the server", ["rpc"],
                                         buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.stage_seconds = Histogram("idv_stage_seconds", "Pipeline stage latency per request", ["stage"],
                                       buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.refused_before_handler = Counter(
            "idv_refused_before_handler", "Calls refused before a handler ran, by cause (issue 16): TOO_MANY_STREAMS, "
            "RECEIVE_BUSY, BODY_TIMEOUT, NO_WHOLE_MESSAGE (larger than max_message_bytes, refused by gRPC, or none "
            "sent), EXTRA_MESSAGE, UNDECODABLE_PROTOBUF", ["cause"], registry=self.registry)
        self.connections_refused = Counter(
            "idv_connections_refused", "Connections the node's front closed (idv/front.py), by listener (grpc, "
            "device) and cause: CONNECTIONS_PER_ADDRESS and MAX_CONNECTIONS (refused at accept), SILENT_CONNECTION "
            "(no byte within handshake_timeout_seconds), QUIET_CONNECTION (no byte either way within "
            "quiet_connection_seconds), SERVER_UNREACHABLE", ["listener", "cause"], registry=self.registry)
        self.open_connections = Gauge("idv_open_connections", "Client connections open through the front, by listener",
                                      ["listener"], registry=self.registry)
        self.open_calls = Gauge("idv_open_calls", "Service calls open, from HEADERS to the answer",
                                registry=self.registry)
        self.receiving = Gauge("idv_receiving_bodies", "Request bodies being received (not yet admitted)",
                               registry=self.registry)
        self.in_flight = Gauge("idv_in_flight", "Expensive RPCs admitted and not finished", registry=self.registry)
        self.serving = Gauge("idv_serving", "1 when health reports SERVING", registry=self.registry)
        self.models = Info("idv_models", "Fingerprints of the loaded models", registry=self.registry)

    _REFUSALS = frozenset({"RESOURCE_EXHAUSTED", "UNAUTHENTICATED", "PERMISSION_DENIED", "UNAVAILABLE"})

    def observe_rpc(self, rpc: str, code: str, seconds: float, reason: str = "") -> None:
        self.requests.labels(rpc, code, reason).inc()
        self.request_seconds.labels(rpc).observe(seconds)
        if code in self._REFUSALS:
            self.rejected.labels(reason or code).inc()

    def observe_verdict(self, purpose: str, verdict: str, reason: str, stages_ms: Mapping[str, float]) -> None:
        self.verdicts.labels(purpose, verdict, reason).inc()
        for stage, ms in stages_ms.items():
            self.stage_seconds.labels(stage).observe(ms / 1000.0)

    def observe_refused_before_handler(self, cause: str) -> None:
        self.refused_before_handler.labels(cause).inc()

    def observe_connection_refused(self, listener: str, cause: str) -> None:
        self.connections_refused.labels(listener, cause).inc()

    def track_connections(self, listener: str, read: Callable[[], float]) -> None:
        self.open_connections.labels(listener).set_function(read)

    def track_intake(self, open_calls: Callable[[], float], receiving: Callable[[], float]) -> None:
        self.open_calls.set_function(open_calls)
        self.receiving.set_function(receiving)

    def track_in_flight(self, read: Callable[[], float]) -> None:
        self.in_flight.set_function(read)

    def set_models(self, fingerprints: Mapping[str, str]) -> None:
        self.models.info(dict(fingerprints))

    def serve(self, host: str, port: int) -> tuple[object, int]:
        """Expose /metrics over HTTP on its own port; returns (server, bound port)."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        return server, server.server_port
