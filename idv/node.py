"""The composition root: settings in, a running verification node out.

Everything stateful is built here and passed down; nothing else in idv creates
models, stores, keys or servers.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from idv.config import Settings
from idv.face.quality import QualityLimits
from idv.imaging import ImageLimits
from idv.keys import load_keyring
from idv.models.manifest import DEFAULT_MANIFEST, load_manifest
from idv.models.registry import RecognizerChoice, custom_arcface_entry, load_pack
from idv.models.runtime import RuntimeOptions
from idv.pipeline import PipelineLimits, VerificationPipeline, VerifyCommand, VerifyOutcome
from idv.references import ReferenceVault
from idv.store.sqlite import SqliteReferenceStore

log = logging.getLogger("idv.node")

SERVICE_NAME = "idv.v1.IdentityVerification"


class NodeState:
    """What the servicer needs at request time; the pipeline is None until the models are warm."""

    def __init__(self, health_servicer: health.HealthServicer):
        self._health = health_servicer
        self.pipeline: VerificationPipeline | None = None
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    def _set(self, status: int) -> None:
        for name in ("", SERVICE_NAME):
            self._health.set(name, status)

    def ready(self, pipeline: VerificationPipeline) -> None:
        self.pipeline = pipeline
        self._set(health_pb2.HealthCheckResponse.SERVING)

    def not_serving(self) -> None:
        self._set(health_pb2.HealthCheckResponse.NOT_SERVING)

    def caller_of(self, context: grpc.ServicerContext) -> str:
        return "anonymous"

    def record_decision(self, command: VerifyCommand, outcome: VerifyOutcome) -> None:
        log.info(
            "decision",
            extra={
                "rpc": "Verify",
                "request_id": outcome.request_id,
                "caller": command.caller,
                "purpose": command.purpose.value if command.purpose else "",
                "verdict": outcome.verdict.value,
                "reason": outcome.reason.value,
                "timings_ms": {k: round(v, 2) for k, v in outcome.timings_ms.items()},
            },
        )


def server_options(settings: Settings) -> list[tuple[str, int]]:
    return [
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
        ("grpc.max_connection_idle_ms", 300_000),
        ("grpc.max_connection_age_ms", 1_800_000),
        ("grpc.max_connection_age_grace_ms", 30_000),
        ("grpc.max_concurrent_streams", 32),
    ]


@dataclass
class Node:
    settings: Settings
    server: grpc.Server
    port: int
    state: NodeState
    started_at: float

    def load(self) -> None:
        """Load and warm the models, then report SERVING. Raises (and stays NOT_SERVING) on any problem."""
        settings = self.settings
        manifest = load_manifest(settings.model_manifest or DEFAULT_MANIFEST)
        custom = None
        if settings.recognizer_file is not None:
            path = Path(settings.recognizer_file)
            custom = RecognizerChoice(
                entry=custom_arcface_entry(path, settings.recognizer_sha256),
                model_dir=path.parent,
                expected_sha256=settings.recognizer_sha256,
                threshold=settings.recognizer_threshold,
            )
        pack = load_pack(
            manifest,
            settings.model_pack,
            settings.model_dir,
            RuntimeOptions(intra_op_threads=settings.intra_op_threads),
            settings.security_level,
            settings.detector_score_threshold,
            custom,
        )
        store = SqliteReferenceStore(settings.store_path)
        vault = ReferenceVault(store, load_keyring(settings.data_dir))
        limits = PipelineLimits(
            max_frames=settings.max_frames,
            max_frames_with_challenge=settings.max_frames_with_challenge,
            max_reference_images=settings.max_reference_images,
            bystander_ratio=settings.bystander_ratio,
            image=ImageLimits(
                max_bytes=settings.max_frame_bytes,
                max_width=settings.max_frame_width,
                max_height=settings.max_frame_height,
                max_pixels=settings.max_frame_pixels,
            ),
            quality=QualityLimits(
                min_face_size=settings.min_face_size,
                min_sharpness=settings.min_sharpness,
                min_brightness=settings.min_brightness,
                max_brightness=settings.max_brightness,
            ),
        )
        pipeline = VerificationPipeline(pack.detector, pack.embedder, vault, pack.threshold, limits)
        self.state.ready(pipeline)
        log.info(
            "serving",
            extra={"port": self.port, "seconds": round(time.monotonic() - self.started_at, 3),
                   "fingerprints": pack.fingerprints, "mode": settings.mode},
        )

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING at once, let in-flight calls finish within the grace period."""
        self.state.not_serving()
        self.server.stop(self.settings.grace_seconds if grace is None else grace).wait()


def build_node(settings: Settings) -> Node:
    """Bind the port and start answering health checks (NOT_SERVING); call `load()` next."""
    from idv.rpc.servicer import Admission, IdentityVerificationServicer
    from idv.v1 import verification_pb2_grpc as pb_grpc

    started = time.monotonic()
    # Threads beyond the compute slots keep health checks and fast refusals answered under load.
    executor = futures.ThreadPoolExecutor(
        max_workers=settings.max_concurrent_rpcs + 4, thread_name_prefix="idv-rpc"
    )
    server = grpc.server(executor, options=server_options(settings))
    health_servicer = health.HealthServicer(experimental_non_blocking=True)
    state = NodeState(health_servicer)
    admission = Admission(settings.max_concurrent_rpcs, settings.worker_threads)
    pb_grpc.add_IdentityVerificationServicer_to_server(
        IdentityVerificationServicer(state, admission, settings.request_budget_seconds), server
    )
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        from grpc_reflection.v1alpha import reflection

        from idv.v1 import verification_pb2

        names = (verification_pb2.DESCRIPTOR.services_by_name["IdentityVerification"].full_name,
                 health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME)
        reflection.enable_server_reflection(names, server)
    address = f"{settings.host}:{settings.port}"
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc} (is another idv already running there?)") from None
    if port == 0:
        raise OSError(f"cannot listen on {address} (is another idv already running there?)")
    server.start()
    return Node(settings, server, port, state, started)


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    node = build_node(settings)
    log.info("listening", extra={"port": node.port, "state": "NOT_SERVING"})
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: object) -> None:
        log.info("stop requested", extra={"state": signal.Signals(signum).name})
        stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
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
