"""The composition root: settings in, a running verification node out.

Everything stateful is built here and passed down; nothing else in idv creates
models, stores, keys or servers.
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
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from idv.audit import AuditLog
from idv.challenges import ActionVerifier, ChallengeIssuer, ChallengePolicy
from idv.config import Settings
from idv.face.burst import BurstPolicy
from idv.face.detector import DetectionScale
from idv.face.quality import QualityLimits
from idv.imaging import ImageLimits
from idv.keys import load_audit_key, load_keyring
from idv.metrics import Metrics
from idv.models.manifest import DEFAULT_MANIFEST, Manifest, load_manifest
from idv.models.registry import (
    DetectorChoice,
    RecognizerChoice,
    custom_arcface_entry,
    custom_scrfd_entry,
    load_pack,
)
from idv.models.runtime import RuntimeOptions
from idv.node_state import NodeState
from idv.pipeline import PipelineLimits, VerificationPipeline
from idv.references import ReferenceVault
from idv.security.callers import CallerRegistry
from idv.service import VerificationService, VerifyPolicy
from idv.readiness import ReadinessProbe
from idv.state.base import ChallengeStore, CounterStore, LockoutPolicy
from idv.state.local import MemoryChallengeStore, SqliteCounterStore
from idv.store.base import ReferenceStore
from idv.store.sqlite import SqliteReferenceStore
from idv.throttle import CallerLimits, Throttle
from idv.verdicts import Purpose

log = logging.getLogger("idv.node")


def harden_process() -> None:
    """No core dumps: a dump of a verifying process would hold probe frames and embeddings."""
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        pr_set_dumpable = 4
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the rlimit still applies
        pass


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
    metrics_port: int = -1
    _closers: list = field(default_factory=list)
    _stoppers: list = field(default_factory=list)  # background threads, stopped before anything closes

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
        custom_detector = None
        if settings.detector_file is not None:
            path = Path(settings.detector_file)
            custom_detector = DetectorChoice(custom_scrfd_entry(path, settings.detector_sha256), path.parent,
                                             settings.detector_sha256)
        pack = load_pack(
            manifest,
            settings.model_pack,
            settings.model_dir,
            RuntimeOptions(intra_op_threads=settings.intra_op_threads),
            settings.security_level,
            settings.detector_score_threshold,
            custom,
            custom_detector,
            # issue 12: detect on a copy sized to the smallest face the quality gate accepts
            DetectionScale(min_face_px=float(settings.min_face_size), target_face_px=settings.detection_face_px),
        )
        # Development creates keys on first start; production refuses to run without provisioned keys.
        keys_may_be_created = settings.mode == "development"
        store = open_reference_store(settings)
        self._closers.append(store.close)
        vault = ReferenceVault(store, load_keyring(settings.data_dir, create=keys_may_be_created),
                               reload_keys=lambda: load_keyring(settings.data_dir, create=False))
        counters, challenge_store = open_shared_state(settings, self._closers)
        liveness_gate = self._liveness(manifest, settings)
        limits = PipelineLimits(
            min_frames=liveness_gate.min_frames if liveness_gate is not None else 1,
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
            burst=BurstPolicy(embed_frames=settings.embed_frames),  # issue 12: k frames embedded per burst
        )
        actions, challenges = self._challenges(manifest, settings, challenge_store)
        screening = self._screening(manifest, settings, vault, pack)
        # One pool for the frames of every request: a lone request uses all cores, and under
        # load the pool is the node's compute queue (benchmarks/README.md has the sweep).
        # issue 12: OpenCV's own pool (one thread per core inside every resize, decode and colour
        # conversion) on top of the frame pool and the request workers oversubscribes the cores;
        # parallelism comes from the frame pool, so each OpenCV call runs on its caller's thread.
        cv2.setNumThreads(1)
        frame_pool = futures.ThreadPoolExecutor(max_workers=settings.frame_threads, thread_name_prefix="idv-frame")
        self._closers.append(frame_pool.shutdown)
        pipeline = VerificationPipeline(pack.detector, pack.embedder, vault, pack.threshold, limits,
                                        liveness=liveness_gate, actions=actions, screening=screening,
                                        frame_pool=frame_pool)
        throttle = Throttle(
            counters,
            LockoutPolicy(max_consecutive_failures=settings.lockout_after_failures,
                          base_lockout_seconds=settings.lockout_base_seconds, failure_cap=settings.failure_cap),
            CallerLimits(settings.caller_requests_per_minute, settings.caller_distinct_identities_per_hour),
        )
        audit = AuditLog(settings.audit_path, load_audit_key(settings.data_dir, create=keys_may_be_created))
        policy = VerifyPolicy(frozenset(Purpose(p) for p in settings.challenge_purposes))
        service = VerificationService(pipeline, throttle, audit, policy, challenges)
        self._closers.append(audit.close)
        fingerprints = dict(pipeline.fingerprints)
        self.state.metrics.set_models(fingerprints)
        self.state.ready(service)
        probe = ReadinessProbe([store.ping, counters.ping], settings.store_probe_interval_seconds,
                               settings.store_probe_failures, on_ready=lambda: self.state.ready(service),
                               on_not_ready=self.state.not_serving)
        probe.start()
        self._stoppers.append(probe.stop)
        log.info(
            "serving",
            extra={"port": self.port, "seconds": round(time.monotonic() - self.started_at, 3),
                   "fingerprints": fingerprints, "mode": settings.mode, "store": settings.store_kind,
                   "shared_state": "redis" if settings.redis_url else "local", "replica": settings.replica_id},
        )

    @staticmethod
    def _challenges(manifest: Manifest, settings: Settings, store: ChallengeStore):
        """FaceMesh-based action checking and the challenge issuer, when the manifest has FaceMesh."""
        if "facemesh" not in manifest.models:
            return None, None
        from liveness.actions import ActionConfig
        from idv.models.litert import load_facemesh

        facemesh = load_facemesh(manifest.entry("facemesh"), settings.model_dir, settings.intra_op_threads)
        config = ActionConfig()
        issuer = ChallengeIssuer(store, ChallengePolicy(ttl_seconds=settings.challenge_ttl_seconds), config)
        return ActionVerifier(facemesh, config), issuer

    def _screening(self, manifest: Manifest, settings: Settings, vault: ReferenceVault, pack):
        """The 1:N gallery, loaded from the store, and its policies; None when both are off."""
        if not settings.gallery_enabled:
            return None
        from idv.gallery import Gallery, GalleryConfig, GallerySync, Screening, ScreeningPolicy

        embedder = pack.embedder
        gallery = Gallery(GalleryConfig(embedder.dimension, exact_max=settings.gallery_exact_max,
                                        nprobe=settings.gallery_nprobe))
        sync = GallerySync(vault, gallery, embedder.fingerprint, embedder.dimension)
        sync.load()
        sync.start(settings.gallery_refresh_seconds)
        self._stoppers.append(sync.stop)
        policy = ScreeningPolicy(duplicate_threshold(manifest, settings, pack.threshold),
                                 settings.duplicate_policy, settings.impersonation_check,
                                 settings.impersonation_margin)
        return Screening(gallery, policy, refresh=sync.refresh)

    @staticmethod
    def _liveness(manifest: Manifest, settings: Settings):
        if not settings.liveness:
            return None
        from idv.liveness_gate import build_liveness_gate

        return build_liveness_gate(manifest, settings)

    def stop(self, grace: float | None = None) -> None:
        """Report NOT_SERVING at once, let in-flight calls finish within the grace period."""
        for stop in self._stoppers:  # first: the readiness probe must not report SERVING again
            stop()
        self._stoppers.clear()
        self.state.not_serving()
        self.server.stop(self.settings.grace_seconds if grace is None else grace).wait()
        for close in reversed(self._closers):
            close()
        self._closers.clear()


def open_reference_store(settings: Settings, migrate: bool | None = None) -> ReferenceStore:
    """The configured reference store: the embedded SQLite file, or PostgreSQL shared by replicas."""
    if settings.store_kind != "postgresql":
        return SqliteReferenceStore(settings.store_path)
    from idv.store.postgres import PostgresReferenceStore

    return PostgresReferenceStore(postgres_config(settings),
                                  settings.postgres_migrate_on_start if migrate is None else migrate)


def postgres_config(settings: Settings):
    from idv.store.postgres import PostgresConfig

    return PostgresConfig(
        dsn=settings.store, schema=settings.postgres_schema, pool_min=settings.postgres_pool_min,
        pool_max=settings.postgres_pool_max, pool_timeout_seconds=settings.postgres_pool_timeout_seconds,
        statement_timeout_ms=settings.postgres_statement_timeout_ms,
        connect_timeout_seconds=settings.postgres_connect_timeout_seconds,
    )


def open_shared_state(settings: Settings, closers: list) -> tuple[CounterStore, ChallengeStore]:
    """Throttling counters and challenges: in Redis when replicas share them, else this process's own."""
    if not settings.redis_url:
        counters = SqliteCounterStore(settings.counters_path)
        closers.append(counters.close)
        return counters, MemoryChallengeStore()
    from idv.state.redis_state import RedisChallengeStore, RedisConfig, RedisCounterStore, connect

    config = RedisConfig(settings.redis_url, settings.redis_prefix, settings.redis_timeout_seconds,
                         settings.redis_attempt_ttl_seconds)
    client = connect(config)
    closers.append(client.close)
    counters = RedisCounterStore(client, config)
    counters.ping()  # refuse to start without it, like a missing reference store
    return counters, RedisChallengeStore(client, config)


def duplicate_threshold(manifest: Manifest, settings: Settings, verify_threshold: float) -> float:
    """The 1:N match threshold: the setting, else the recognizer's calibrated fmr_1e-5 threshold.

    Never below the verification threshold: a face that would not pass 1:1 against an
    identity is not evidence that it belongs to that identity.
    """
    if settings.duplicate_threshold > 0:
        return max(settings.duplicate_threshold, verify_threshold)
    calibrated = verify_threshold
    if settings.recognizer_file is None:
        entry = manifest.entry(manifest.pack(settings.model_pack)["recognizer"])
        try:
            calibrated = float(entry.thresholds["fmr_1e-5"])  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            log.warning("no calibrated fmr_1e-5 threshold: 1:N screening uses the verification threshold")
    return max(calibrated, verify_threshold)


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
    metrics = Metrics()
    state = NodeState(health_servicer, CallerRegistry.load(settings.callers_path), metrics)
    admission = Admission(settings.max_concurrent_rpcs, settings.worker_threads)
    metrics.track_in_flight(lambda: admission.in_flight)
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
        if settings.tls:
            port = server.add_secure_port(address, server_credentials(settings))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"cannot listen on {address}: {exc} (is another idv already running there?)") from None
    if port == 0:
        raise OSError(f"cannot listen on {address} (is another idv already running there?)")
    server.start()
    node = Node(settings, server, port, state, started)
    if settings.metrics_port >= 0:
        http_server, node.metrics_port = metrics.serve(settings.metrics_host, settings.metrics_port)
        node._closers.append(http_server.shutdown)
    return node


def server_credentials(settings: Settings) -> grpc.ServerCredentials:
    assert settings.tls_cert_file is not None and settings.tls_key_file is not None
    pair = [(Path(settings.tls_key_file).read_bytes(), Path(settings.tls_cert_file).read_bytes())]
    if settings.tls_client_ca_file is not None:
        return grpc.ssl_server_credentials(pair, root_certificates=Path(settings.tls_client_ca_file).read_bytes(),
                                           require_client_auth=True)
    return grpc.ssl_server_credentials(pair)


def serve(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; returns the process exit code."""
    harden_process()
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
