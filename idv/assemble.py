"""How the service is put together: settings in, a ready `VerificationService` out. No gRPC.

This is the one place that opens the stores and the shared state, loads the keys and the
models, builds the gallery, liveness, challenges and throttling, and wires them into the
service. The gRPC node (idv.node), the CLI, the evaluation and the benchmarks all get their
parts from here; tests build the service here too, with real models and no server.

    build_service(settings)            -> AssembledService (service + what must be closed)
    load_models(manifest, settings)    -> ModelSet (idv.models.model_set)
    open_reference_store(settings)     -> ReferenceStore (SQLite, or PostgreSQL for replicas)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from idv.action_check import ActionVerifier
from idv.admin import AdminConfig, AdminService
from idv.audit import AuditLog
from idv.capture_integrity import ReplayGuard, frame_digest_key
from idv.challenges import ChallengeIssuer
from idv.config import Settings, mask_dsn
from idv.credentials import CheckInCredentials
from idv.gallery import Gallery, GallerySync, Screening, ScreeningPolicy
from idv.history import VerificationHistory
from idv.keys import load_audit_key, load_keyring
from idv.liveness_gate import build_liveness_gate
from idv.models.manifest import Manifest
from idv.models.model_set import ModelSet, load_models, manifest_for
from idv.pipeline import VerificationPipeline
from idv.references import ReferenceVault
from idv.service import VerificationService
from idv.session_service import SessionService
from idv.security.callers import CallerRegistry, CallersFileError
from idv.security.terminals import AttestationCheck, TerminalRegistry
from idv.sessions import SessionKeeper, SessionPolicy
from idv.reference_thresholds import ReferenceThresholds
from idv.site_thresholds import resolve_threshold, shipped_thresholds, start_record
from idv.state.base import ChallengeStore, CounterStore, CredentialStore, SeenFrameStore, SessionStore
from idv.state.local import (MemoryChallengeStore, MemoryCredentialStore, MemorySeenFrameStore, MemorySessionStore,
                             SqliteCounterStore)
from idv.state.redis_state import (RedisChallengeStore, RedisCounterStore, RedisCredentialStore, RedisSeenFrameStore,
                                   RedisSessionStore,
                                   connect)
from idv.store.base import ReferenceStore
from idv.store.postgres import PostgresReferenceStore
from idv.store.sqlite import SqliteReferenceStore
from idv.store.sqlite_file import SqliteOptions
from idv.store_guard import StoreGuardConfig, check_store, require_existing_file
from idv.throttle import Throttle
from liveness.actions import ActionConfig

log = logging.getLogger("idv.node")

__all__ = ["AssembledService", "build_service", "load_models", "open_reference_store", "open_vault"]


@dataclass(eq=False)
class AssembledService:
    """The service and what it holds open. `close()` stops background work, then closes, in
    reverse order of opening."""

    service: VerificationService
    admin: AdminService  # erase, unlock, inspect one identity (scope admin)
    sessions: SessionService | None  # verification sessions for capture devices; None without a device endpoint
    pipeline: VerificationPipeline
    models: ModelSet
    vault: ReferenceVault
    challenge_store: ChallengeStore
    counters: CounterStore  # throttling counters and lockouts
    screening: Screening | None  # the 1:N gallery's policies; None when both are off
    threshold: float  # the one-photo comparison threshold in force (manifest, operator model or site calibration)
    thresholds: ReferenceThresholds  # per number of fused reference photos (idv/reference_thresholds.py)
    # Pinged by the readiness probe: what a request touches (reference store, shared state).
    readiness_checks: tuple[Callable[[], None], ...]
    _stoppers: list[Callable[[], None]] = field(default_factory=list)
    _closers: list[Callable[[], None]] = field(default_factory=list)
    # Issue 18: check-in credentials issued on PASS and redeemed by desks; the person's own history.
    credentials: CheckInCredentials | None = None  # None when no purpose issues them
    history: VerificationHistory | None = None  # None when the operator turned it off

    def close(self) -> None:
        for stop in self._stoppers:
            stop()
        self._stoppers.clear()
        for close in reversed(self._closers):
            close()
        self._closers.clear()

    def __enter__(self) -> AssembledService:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def open_reference_store(settings: Settings, migrate: bool | None = None) -> ReferenceStore:
    """The configured reference store: the embedded SQLite file, or PostgreSQL shared by replicas."""
    store = settings.store
    if store.kind != "postgresql":
        return SqliteReferenceStore(store.sqlite_path, SqliteOptions(store.sqlite_busy_timeout_seconds))
    return PostgresReferenceStore(store.postgres(), store.postgres_migrate_on_start if migrate is None else migrate)


def describe_store(settings: Settings) -> str:
    """The store for messages: the SQLite path, or the DSN (secrets masked) and schema."""
    if settings.store.kind != "postgresql":
        return str(settings.store.sqlite_path)
    return f"{mask_dsn(settings.store.url)} (schema {settings.store.postgres_schema})"


def open_vault(settings: Settings, store: ReferenceStore) -> ReferenceVault:
    """The store behind its keys. Development creates keys on first start; production refuses to
    run without provisioned keys."""
    data_dir = settings.store.data_dir
    keyring = load_keyring(data_dir, create=not settings.serving.production)
    # Refuse a store that is not ours, or keys that are not the store's (a replica started with
    # other keys would find nobody and answer NOT_VERIFIED to everyone).
    check_store(store, keyring, StoreGuardConfig(settings.store.store_id_path, describe_store(settings)))
    return ReferenceVault(store, keyring, reload_keys=lambda: load_keyring(data_dir, create=False))


@dataclass(frozen=True, eq=False)
class _SharedState:
    counters: CounterStore
    challenges: ChallengeStore
    sessions: SessionStore
    credentials: CredentialStore  # issue 18
    seen_frames: SeenFrameStore  # issue 14: keyed digests of presented frames


def _open_shared_state(settings: Settings, closers: list[Callable[[], None]]) -> _SharedState:
    """Throttling counters, challenges and sessions: in Redis when replicas share them, else this
    process's own (counters in a SQLite file: a lockout that a restart forgets is no lockout)."""
    if not settings.state.shared:
        counters = SqliteCounterStore(settings.store.counters_path,
                                      SqliteOptions(settings.store.sqlite_busy_timeout_seconds))
        closers.append(counters.close)
        return _SharedState(counters, MemoryChallengeStore(), MemorySessionStore(), MemoryCredentialStore(),
                            MemorySeenFrameStore())
    config = settings.state.redis()
    client = connect(config)
    closers.append(client.close)
    redis_counters = RedisCounterStore(client, config)
    redis_counters.ping()  # refuse to start without it, like a missing reference store
    return _SharedState(redis_counters, RedisChallengeStore(client, config), RedisSessionStore(client, config),
                        RedisCredentialStore(client, config), RedisSeenFrameStore(client, config))


def display_names(callers_path: Path) -> dict[str, str]:
    """Issue 18: caller name -> display name, read when a history is asked for (so a reloaded callers
    file counts). A callers file being rewritten badly shows caller names rather than failing the person."""
    try:
        return CallerRegistry.load(callers_path).display_names()
    except CallersFileError as exc:
        log.warning(f"verification history shows caller names: {exc}")
        return {}


def duplicate_threshold(manifest: Manifest, settings: Settings, verify_threshold: float) -> float:
    """The 1:N match threshold: the setting, else the recognizer's calibrated fmr_1e-5 threshold.

    Never below the verification threshold: a face that would not pass 1:1 against an
    identity is not evidence that it belongs to that identity.
    """
    if settings.gallery.duplicate_threshold > 0:
        return max(settings.gallery.duplicate_threshold, verify_threshold)
    calibrated = verify_threshold
    if settings.models.recognizer_file is None:
        entry = manifest.entry(manifest.pack(settings.models.pack)["recognizer"])
        try:
            calibrated = float(entry.thresholds["fmr_1e-5"])  # type: ignore[arg-type]
        except (KeyError, TypeError, ValueError):
            log.warning("no calibrated fmr_1e-5 threshold: 1:N screening uses the verification threshold")
    return max(calibrated, verify_threshold)


def _screening(settings: Settings, manifest: Manifest, vault: ReferenceVault, models: ModelSet,
               verify_threshold: float, stoppers: list[Callable[[], None]]) -> Screening | None:
    """The 1:N gallery, loaded from the store and kept in step with it; None when both policies are off."""
    if not settings.gallery.enabled:
        return None
    embedder = models.embedder
    gallery = Gallery(settings.gallery.index_config(embedder.dimension))
    sync = GallerySync(vault, gallery, embedder.fingerprint, embedder.dimension)
    sync.load()
    sync.start(settings.gallery.refresh_seconds)
    stoppers.append(sync.stop)
    policy = ScreeningPolicy(duplicate_threshold(manifest, settings, verify_threshold),
                             settings.gallery.duplicate_policy, settings.gallery.impersonation_check,
                             settings.gallery.impersonation_margin)
    return Screening(gallery, policy, refresh=sync.refresh)


def _warn_passive_only(settings: Settings) -> None:
    """Issue 14: a purpose allowed without a challenge is weaker (synthetic or injected video passes
    passive liveness); say so at every start, loudest in production."""
    passive = sorted(p.value for p in settings.challenges.passive_purposes)
    if passive:
        level = logging.WARNING if settings.serving.production else logging.INFO
        log.log(level, "challenges: purposes %s are passive-only (no challenge): weaker against recorded, "
                "synthetic and injected video", passive)


def build_service(settings: Settings, models: ModelSet | None = None,
                  capture_base_url: str | None = None) -> AssembledService:
    """Everything a verification needs, opened and checked. Raises on any problem (a model missing
    or altered, a key or store broken), closing what it had opened.

    `models` may be passed in to share one loaded ModelSet between several services (tests,
    benchmarks); by default they are loaded from `settings.models`. `capture_base_url`: where
    capture devices reach this node's device endpoint; with it (and FaceMesh for challenges)
    the service also serves verification sessions.
    """
    manifest = manifest_for(settings.models)
    stoppers: list[Callable[[], None]] = []
    closers: list[Callable[[], None]] = []
    try:
        if models is None:
            models = load_models(manifest, settings.models, liveness=settings.liveness.enabled,
                                 min_face_px=settings.quality.min_face_size,
                                 parallel_calls=settings.serving.frame_pool_threads)
        # A site calibration (`idv eval calibrate --write`) replaces the level's threshold.
        threshold = resolve_threshold(settings.models.site_thresholds_file, settings.store.data_dir,
                                      settings.models.security_level, shipped_thresholds(manifest, settings.models),
                                      "recognizer_threshold" if settings.models.recognizer_file else "manifest",
                                      models.embedder.fingerprint)
        if threshold.site is not None:
            log.info("site thresholds", extra=start_record(threshold, settings.models.security_level))
        log.info("verification thresholds", extra={"security_level": settings.models.security_level,
                                                   "threshold_source": threshold.source,
                                                   "threshold_by_references": threshold.references.shown()})
        if not settings.state.shared:
            # Checked before anything is opened (the store guard writes its marker on a first start):
            # the counters file must not vanish between starts, or lockouts would be forgotten.
            require_existing_file(settings.store.counters_path, settings.store.store_id_path, "counters store")
        _warn_passive_only(settings)
        store = open_reference_store(settings)
        closers.append(store.close)
        vault = open_vault(settings, store)
        shared = _open_shared_state(settings, closers)
        counters, challenge_store = shared.counters, shared.challenges
        # OpenCV's own pool (one thread per core inside every resize, decode and colour conversion)
        # on top of the frame pool and the request workers oversubscribes the cores; parallelism
        # comes from the frame pool, so each OpenCV call runs on its caller's thread.
        cv2.setNumThreads(1)
        # One pool for the work of every request (issue 12): a lone request's frames, embeddings
        # and liveness cues run on all cores; under load the pool is the node's compute queue and
        # the request workers only wait on it, so no more threads compute than the pool has.
        # Shut down by AssembledService.close (the node closes it after it stopped serving).
        frame_pool = None
        if settings.serving.burst_parallel:
            frame_pool = futures.ThreadPoolExecutor(max_workers=settings.serving.frame_pool_threads,
                                                    thread_name_prefix="idv-frame")
            closers.append(frame_pool.shutdown)
        liveness = None
        if settings.liveness.enabled:
            if models.minifasnet_v2 is None or models.minifasnet_v1se is None:
                raise ValueError("liveness is enabled but the model set has no MiniFASNet models")
            liveness = build_liveness_gate(models.minifasnet_v2, models.minifasnet_v1se, settings.liveness, frame_pool)
        actions = issuer = None
        if models.facemesh is not None:
            action_config = ActionConfig()
            actions = ActionVerifier(models.facemesh, action_config)
            issuer = ChallengeIssuer(challenge_store, settings.challenges, action_config)
        # 1:N duplicates are never flagged below the strictest verification threshold in force.
        screening = _screening(settings, manifest, vault, models, threshold.references.strictest, stoppers)
        pipeline = VerificationPipeline(models.detector, models.embedder, threshold.references, settings.limits,
                                        settings.image, settings.quality, settings.burst, liveness=liveness,
                                        actions=actions, screening=screening, frame_pool=frame_pool,
                                        # A presentation-attack check: off with liveness (development only).
                                        duplicates=settings.integrity.duplicates() if settings.liveness.enabled else None)
        audit = AuditLog(settings.store.audit_path,
                         load_audit_key(settings.store.data_dir, create=not settings.serving.production))
        closers.append(audit.close)
        if threshold.site is not None:  # a site calibration in force is audited at start
            audit.append(start_record(threshold, settings.models.security_level))
        throttle = Throttle(counters, settings.throttle)
        # --- issue 18: check-in credentials (shared state) and the person's history (the audit logs)
        credentials = None
        if settings.credentials.issuing_purposes:
            credentials = CheckInCredentials(shared.credentials, vault.keys, settings.credentials, audit,
                                             admit_caller=throttle.admit_caller)
        history = None
        if settings.history.enabled:
            callers_path = settings.store.callers_path
            history = VerificationHistory(settings.store.data_dir, settings.history, audit,
                                          lambda: display_names(callers_path))
        service = VerificationService(pipeline, vault, throttle, audit, settings.challenges, issuer, screening,
                                      fingerprints={"detector": models.fingerprints["detector"],
                                                    "recognizer": models.fingerprints["recognizer"]},
                                      reference_max_age_seconds=settings.store.reference_max_age_seconds,
                                      credentials=credentials, security_level=settings.models.security_level,
                                      # Frames presented before fail, for a challenge's life + margin.
                                      replay_guard=ReplayGuard(
                                          shared.seen_frames, frame_digest_key(vault.keys.pseudonym_key),
                                          settings.challenges.ttl_seconds + settings.integrity.replay_margin_seconds)
                                      if settings.integrity.replay_check else None,
                                      # Terminal signatures (issue 14), checked before any decode; the
                                      # registry rereads terminals.toml when it changes.
                                      attestation=AttestationCheck(TerminalRegistry(settings.store.terminals_path),
                                                                   settings.integrity.attestation_purposes))
        sessions = None
        if capture_base_url is not None and issuer is not None:
            keeper = SessionKeeper(shared.sessions, vault.keys,
                                   SessionPolicy(settings.sessions.result_ttl_seconds, settings.sessions.frame_count,
                                                 capture_base_url.rstrip("/"),
                                                 record_mode=settings.device.record_dir is not None))
            sessions = SessionService(service, keeper, issuer, vault, throttle, audit,
                                      settings.sessions.fixed_challenges, history=history)
        admin = AdminService(vault, throttle, audit,
                             AdminConfig(settings.gallery.refresh_seconds, settings.store.reference_max_age_seconds),
                             screening.refresh if screening is not None else None)
    except BaseException:
        for stop in stoppers:
            stop()
        for close in reversed(closers):
            close()
        raise
    # Readiness probes what requests touch, writes included: the stores and the audit log.
    return AssembledService(service, admin, sessions, pipeline, models, vault, challenge_store, counters, screening,
                           threshold.threshold, threshold.references,
                           (store.ping, counters.ping, audit.probe),
                           stoppers, closers, credentials=credentials, history=history)
