"""The gRPC node: the transport around the service that idv.assemble builds.

`build_node` binds the port and answers health checks (NOT_SERVING); `Node.load` builds the
service with `idv.assemble.build_service` and turns SERVING; `serve` runs until a signal.
"""

from __future__ import annotations

import ctypes
import logging
import resource
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection

from idv.assemble import AssembledService, build_service
from idv.config import ServingSettings, Settings
from idv.front import BACKEND_HOST, ConnectionFront, FrontLimits, bind_listener
from idv.http.app import DeviceEndpointConfig, build_app
from idv.http.recorder import CaptureRecorder
from idv.http.capture_body import CaptureLimits
from idv.http.server import DeviceServer, DeviceServerConfig
from idv.metrics import Metrics
from idv.models.model_set import ModelSet
from idv.node_state import NodeState
from idv.readiness import ReadinessProbe
from idv.reload import ReloadConfig, Reloader, TlsFiles
from idv.rpc.admission import Admission
from idv.rpc.guarded_health import GuardedHealth
from idv.rpc.intake import IntakeLimits, PeerAddresses, PeerIntake
from idv.rpc.servicer import IdentityVerificationServicer
from idv.rpc.transport import AioServer, LoopThread, SyncHealth
from idv.security.callers import CallerRegistry
from idv.v1 import verification_pb2

log = logging.getLogger("idv.node")


def harden_process() -> None:
    """No core dumps: a dump of a verifying process would hold probe frames and embeddings."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        pr_set_dumpable = 4
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the rlimit still applies
        pass


def server_options(settings: ServingSettings) -> list[tuple[str, int]]:
    """gRPC core's own limits (docs/api.md "Limits" and docs/architecture.md "Hostile peers")."""
    return [
        # Fits the largest request the API allows (Settings.validate checks it).
        ("grpc.max_receive_message_length", settings.max_message_bytes),
        ("grpc.max_send_message_length", 64 * 1024),
        ("grpc.max_metadata_size", 8 * 1024),
        # Off: with it on, a second server binds the same port silently and steals half the traffic.
        ("grpc.so_reuseport", 0),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_timeout_ms", 20_000),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_recv_ping_interval_without_data_ms", 30_000),
        ("grpc.http2.max_ping_strikes", 2),
        # --- issue 16: what a peer can hold without sending a request ---
        # Streams one connection may open at once (HTTP/2 SETTINGS; excess streams are refused by gRPC core).
        ("grpc.max_concurrent_streams", settings.max_streams_per_connection),
        # Connections the server keeps at once. The front (idv/front.py) already caps the public port at
        # max_connections and per address; this bounds what local processes reaching the private port may hold.
        ("grpc.max_allowed_incoming_connections", settings.max_connections),
        # A connection that never finishes its TLS/HTTP/2 handshake is dropped after this.
        ("grpc.server_handshake_timeout_ms", int(settings.handshake_timeout_seconds * 1000)),
        # A connection with no call open (an idle fd) is closed after this.
        ("grpc.max_connection_idle_ms", int(settings.connection_idle_seconds * 1000)),
        # Flow control: a stream the node has not asked to read may hold only its 64 KiB initial window.
        # BDP probing would grow the windows to megabytes per connection (measured: 20 connections x 32
        # streams of partial 12 MiB bodies pushed 6 GB through and +270 MB RSS with it, +110 MB without).
        # When a body is read (idv/rpc/intake.py) gRPC opens the window to that message's length anyway.
        ("grpc.http2.bdp_probe", 0),
        ("grpc.http2.lookahead_bytes", 64 * 1024),
        ("grpc.max_connection_age_ms", 1_800_000),
        ("grpc.max_connection_age_grace_ms", 30_000),
    ]


@dataclass
class Node:
    settings: Settings
    server: AioServer
    port: int  # the public port: the connection front (idv/front.py)
    state: NodeState
    started_at: float
    front: ConnectionFront
    front_loop: LoopThread  # the fronts' event loop (gRPC's and the device endpoint's)
    server_port: int = -1  # the gRPC server's private loopback port behind the front
    metrics_port: int = -1
    reloader: Reloader | None = None  # callers and TLS certificates, reloaded on SIGHUP and on change
    admission: Admission | None = None
    device: DeviceServer | None = None  # the capture devices' HTTP(S) endpoint, when device.port is set
    assembled: AssembledService | None = None  # set by load()
    _closers: list = field(default_factory=list)
    _stoppers: list = field(default_factory=list)  # background threads, stopped before anything closes

    def load(self, models: ModelSet | None = None) -> None:
        """Build the service (idv.assemble), then report SERVING. Raises (and stays NOT_SERVING) on any problem.

        `models`: an already loaded ModelSet to serve (tests share one); by default the settings' models."""
        assembled = build_service(self.settings, models,
                                  self.capture_base_url if self.device is not None else None)
        self.assembled = assembled
        self._closers.append(assembled.close)  # after the server has stopped: calls in flight use it
        service = assembled.service
        self.state.admin = assembled.admin
        self.state.sessions = assembled.sessions
        self.state.credentials = assembled.credentials  # issue 18
        self.state.metrics.set_models(service.fingerprints)
        self.state.ready(service)
        store_settings = self.settings.store
        probe = ReadinessProbe(assembled.readiness_checks, store_settings.probe_interval_seconds,
                               store_settings.probe_failures, on_ready=lambda: self.state.ready(service),
                               on_not_ready=self.state.not_serving)
        probe.start()
        self._stoppers.append(probe.stop)
        self._serve_devices(assembled)
        log.info(
            "serving",
            extra={"port": self.port, "seconds": round(time.monotonic() - self.started_at, 3),
                   "fingerprints": assembled.models.fingerprints, "mode": self.settings.serving.mode,
                   "store": store_settings.kind, "shared_state": "redis" if self.settings.state.shared else "local",
                   "replica": store_settings.replica_id},
        )

    # --- verification sessions: the device endpoint -------------------------------------------
    @property
    def capture_base_url(self) -> str:
        """Where capture devices reach this node: device.public_url, else the bound device port."""
        device = self.settings.device
        if device.public_url:
            return device.public_url.rstrip("/")
        scheme = "https" if self.settings.serving.tls else "http"
        return f"{scheme}://{device.host}:{self.device.port if self.device else device.port}"

    def _serve_devices(self, assembled: AssembledService) -> None:
        if self.device is None:
            return
        settings = self.settings
        config = DeviceEndpointConfig(
            allowed_origins=settings.device.origins, max_body_bytes=settings.device.max_body_bytes,
            requests_per_minute_per_address=settings.device.requests_per_minute,
            request_budget_seconds=settings.serving.request_budget_seconds,
            capture=CaptureLimits(max_frames=settings.limits.max_frames_with_challenge,
                                  max_frame_bytes=settings.image.max_bytes),
            recorder=CaptureRecorder(settings.device.record_dir) if settings.device.record_dir is not None else None,
        )
        if config.recorder is not None:
            # Loud on purpose: from now on frames (biometric data) are written to disk.
            log.warning(f"RECORD MODE IS ON: every capture uploaded to the device endpoint is SAVED (frames, "
                        f"biometric data) to {config.recorder.directory}, labelled by the operator. Collect only "
                        "with the consent of the people recorded; delete the recordings after calibration "
                        "(idv eval light); never in production.")
        self.device.start(build_app(self.state, self.admission, assembled.counters, config))
        self._stoppers.append(self.device.stop)
        log.info("devices served", extra={"port": self.device.port, "tls": self.device.tls})

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING at once, let in-flight calls finish within the grace period."""
        for stop in self._stoppers:  # first: the readiness probe must not report SERVING again
            stop()
        self._stoppers.clear()
        self.state.not_serving()
        fronting = not self.front_loop.loop.is_closed()
        if fronting:  # no new connections; those open keep flowing while the server drains, then are cut
            self.front_loop.call(self.front.stop_accepting(), timeout=10)
        self.server.stop(self.settings.serving.grace_seconds if grace is None else grace)
        if fronting:
            self.front_loop.call(self.front.close(), timeout=10)
        for close in reversed(self._closers):
            close()
        self._closers.clear()
        self.front_loop.close()


def build_node(settings: Settings) -> Node:
    """Bind the port and start answering health checks (NOT_SERVING); call `load()` next.

    The server is grpc.aio on an event loop thread the node owns (idv/rpc/transport.py):
    no thread waits for a request body; model work runs on the compute pool.
    """
    serving = settings.serving
    started = time.monotonic()
    # The public port is the front's: connections per address and in all are capped at accept.
    try:
        listener = bind_listener(serving.host, serving.port)
    except OSError as exc:
        raise OSError(f"cannot listen on {serving.host}:{serving.port}: {exc} "
                      "(is another idv already running there?)") from None
    metrics = Metrics()
    front = ConnectionFront("grpc", front_limits(serving), listener, metrics.observe_connection_refused)
    metrics.track_connections("grpc", lambda: front.open_connections)
    front_loop = LoopThread("idv-front")
    loop = LoopThread("idv-grpc")
    # The compute pool: the only threads that run requests; `worker_threads` of them at a time.
    compute_pool = futures.ThreadPoolExecutor(max_workers=serving.worker_threads, thread_name_prefix="idv-compute")
    health_servicer = health.aio.HealthServicer()
    state = NodeState(SyncHealth(health_servicer, loop), CallerRegistry.load(settings.store.callers_path), metrics)
    reloader = Reloader(ReloadConfig(settings.store.callers_path, tls_files(serving), serving.reload_watch_seconds),
                        apply_callers=lambda callers: setattr(state, "callers", callers))
    admission = Admission(serving.max_concurrent_rpcs, compute_pool)
    metrics.track_in_flight(lambda: admission.in_flight)
    intake = PeerIntake(IntakeLimits(
        max_streams_per_peer=serving.max_streams_per_peer,
        receive_bodies_per_peer=serving.receive_bodies_per_peer,
        receive_bodies_per_caller=serving.receive_bodies_per_caller,
        receive_bodies_total=serving.receive_bodies_total,
        body_timeout_seconds=serving.body_timeout_seconds,
        max_message_bytes=serving.max_message_bytes,
    ), PeerAddresses(front.original_peer))
    metrics.track_intake(lambda: intake.open_streams, lambda: intake.receiving_total)
    servicer = IdentityVerificationServicer(state, admission, serving.request_budget_seconds, intake)
    address = f"{serving.host}:{serving.port}"
    private_address = f"{BACKEND_HOST}:0"  # the server's own port, reached only through the front

    async def start() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(options=server_options(serving))
        server.add_generic_rpc_handlers([servicer.generic_handler()])
        server.add_generic_rpc_handlers([GuardedHealth(health_servicer, metrics, addresses=intake.addresses)
                                         .generic_handler()])
        if serving.reflection:
            names = (verification_pb2.DESCRIPTOR.services_by_name["IdentityVerification"].full_name,
                     health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
            reflection.enable_server_reflection(names, server)
        try:
            # TLS end to end: the front splices the client's bytes unchanged to this port.
            if serving.tls:
                port = server.add_secure_port(private_address, reloader.server_credentials())
            else:
                port = server.add_insecure_port(private_address)
        except RuntimeError as exc:
            raise OSError(f"cannot listen on {private_address} behind {address}: {exc}") from None
        if port == 0:
            raise OSError(f"cannot listen on {private_address} behind {address}")
        await server.start()
        return server, port

    try:
        server, server_port = loop.call(start())
        front_loop.call(front.start(server_port), timeout=10)
    except BaseException:
        compute_pool.shutdown(wait=False)
        loop.close()
        front_loop.close()
        listener.close()
        raise
    node = Node(settings, AioServer(loop, server, compute_pool), front.port, state, started, front, front_loop,
                server_port, reloader=reloader, admission=admission)
    reloader.start()
    node._stoppers.append(reloader.stop)
    # Bound now, like the gRPC port, so capture URLs can name it; it serves once the models are warm.
    if settings.device.enabled:
        try:
            device_listener = bind_listener(settings.device.host, settings.device.port)
        except OSError as exc:
            node.stop(0)
            raise OSError(f"cannot listen on {settings.device.host}:{settings.device.port} for devices: "
                          f"{exc}") from None
        device_front = ConnectionFront("device", front_limits(serving), device_listener,
                                       metrics.observe_connection_refused)
        metrics.track_connections("device", lambda: device_front.open_connections)
        node.device = DeviceServer(DeviceServerConfig(settings.device.host, settings.device.port,
                                                      serving.tls_cert_file, serving.tls_key_file),
                                   device_front, front_loop)
        node._closers.append(node.device.close)
    if serving.metrics_port >= 0:
        http_server, node.metrics_port = metrics.serve(serving.metrics_host, serving.metrics_port)
        node._closers.append(http_server.shutdown)
    return node


def front_limits(settings: ServingSettings) -> FrontLimits:
    return FrontLimits(connections_per_address=settings.connections_per_address,
                       max_connections=settings.max_connections,
                       first_byte_seconds=settings.handshake_timeout_seconds,
                       quiet_seconds=settings.quiet_connection_seconds)


def tls_files(settings: ServingSettings) -> TlsFiles | None:
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    return TlsFiles(Path(settings.tls_cert_file), Path(settings.tls_key_file),
                    Path(settings.tls_client_ca_file) if settings.tls_client_ca_file else None)


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    harden_process()
    try:
        node = build_node(settings)
    except Exception as exc:  # issue 17: a bad callers/TLS file or a busy port, named, without a traceback
        log.error(f"refusing to start: {exc}")
        return 2
    log.info("listening", extra={"port": node.port, "state": "NOT_SERVING"})
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("stop requested", extra={"state": signal.Signals(signum).name})
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    # --- issue 17: SIGHUP reloads callers and TLS certificates (idv.reload); no restart, no drain
    if node.reloader is not None:
        signal.signal(signal.SIGHUP, lambda _signum, _frame: node.reloader.request())
    try:
        node.load()
    except Exception as exc:  # refuse to serve: a model is missing or altered, a key or store is broken
        log.error(f"refusing to serve: {exc}")
        node.stop(0)
        return 2
    stop_requested.wait()
    node.stop()
    log.info("stopped", extra={"port": node.port})
    return 0
