"""One typed settings object, read from an optional TOML file and `IDV_*` environment variables.

Precedence: built-in defaults < TOML file (`--config` / IDV_CONFIG) < environment
< explicit overrides (command-line flags). Every value is validated at start and
a bad one stops the process with a message naming the setting.
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

import platformdirs

ENV_PREFIX = "IDV_"
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class ConfigError(ValueError):
    """A setting is missing, malformed or unsafe."""


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("idv"))


def _default_model_dir() -> Path:
    return Path(platformdirs.user_cache_dir("idv")) / "models"


@dataclass(frozen=True)
class Settings:
    # --- serving -------------------------------------------------------------
    host: str = "127.0.0.1"
    port: int = 50051
    mode: str = "development"  # development | production
    # Requests in the pipeline at once; 4 x intra-op 1 won the sweep in benchmarks/results/latency.json
    # (chosen_default: highest capacity, then lowest unloaded p50).
    worker_threads: int = 4
    # Threads that decode, detect and embed the frames of all requests (about the core count).
    frame_threads: int = 2
    # In flight beyond this are refused at once with RESOURCE_EXHAUSTED (load shedding).
    max_concurrent_rpcs: int = 8
    # Server-side budget per request; the client's deadline wins when shorter.
    request_budget_seconds: float = 5.0
    grace_seconds: float = 10.0
    reflection: bool = False
    # TLS: both files set -> TLS; plus a client CA -> mutual TLS (client certificates required).
    # Without TLS the node serves plaintext only in development mode on a loopback address.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Prometheus /metrics on its own HTTP port (0 picks a free port; -1 disables).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    # --- policy ----------------------------------------------------------------
    # Purposes whose Verify must present an active challenge (comma-separated).
    challenge_required_for: str = "registration"
    challenge_ttl_seconds: float = 120.0
    lockout_after_failures: int = 5
    lockout_base_seconds: float = 30.0
    failure_cap: int = 50
    caller_requests_per_minute: int = 120
    caller_distinct_identities_per_hour: int = 300
    # --- storage -------------------------------------------------------------
    data_dir: Path = field(default_factory=_default_data_dir)
    store: str = "sqlite"  # sqlite (file in data_dir) | postgresql://...
    # Replicas sharing a data_dir each need their own audit log (one hash chain per writer):
    # a non-empty replica_id writes <data_dir>/audit-<replica_id>.log and is named in the logs.
    replica_id: str = ""
    # PostgreSQL (store = postgresql://...): tables live in this schema, created if missing.
    postgres_schema: str = "public"
    postgres_pool_min: int = 1
    postgres_pool_max: int = 10
    # Both bound a store call well inside request_budget_seconds, so a slow or stopped
    # database answers UNAVAILABLE before the caller's deadline, never a verdict.
    postgres_pool_timeout_seconds: float = 1.0  # waiting for a pooled connection
    postgres_statement_timeout_ms: int = 1500  # per statement, enforced by the server
    postgres_connect_timeout_seconds: int = 2  # libpq's minimum useful value is 2
    # Apply pending schema migrations on start (else `idv db migrate` must have run).
    postgres_migrate_on_start: bool = True
    # Shared state for several replicas (challenges, throttling counters, lockouts); empty:
    # this process keeps them itself (counters in a SQLite file in data_dir, challenges in memory).
    redis_url: str = ""
    redis_prefix: str = "idv:"
    redis_timeout_seconds: float = 0.5
    # Failure counts and the failure cap are forgotten this long after an identity's last attempt.
    redis_attempt_ttl_seconds: float = 30 * 86400.0
    # Readiness: the store is pinged this often; after this many failures in a row health turns
    # NOT_SERVING, and back to SERVING at the first answer.
    store_probe_interval_seconds: float = 1.0
    store_probe_failures: int = 3
    # --- 1:N screening (idv.gallery) ------------------------------------------
    # An enrolment whose face matches another identity at or above duplicate_threshold
    # (0: the recognizer's calibrated fmr_1e-5 threshold) is refused (ALREADY_EXISTS,
    # DUPLICATE_FACE), or stored and flagged for review; off: no gallery for enrolment.
    duplicate_policy: str = "refuse"  # refuse | flag | off
    duplicate_threshold: float = 0.0
    # Verify fails IMPERSONATION_SUSPECTED when the live face, although matching the
    # claimed identity, matches another enrolled identity at or above duplicate_threshold
    # and by at least impersonation_margin more than the claimed one.
    impersonation_check: bool = False
    impersonation_margin: float = 0.1
    # Exact search up to this many templates; above, an IVF index (nprobe lists searched).
    # Exact is the default up to 1M: an approximate index misses near-threshold duplicates
    # (recall measured in benchmarks/results/scale.json, see docs/scaling.md).
    gallery_exact_max: int = 1_000_000
    gallery_nprobe: int = 256
    # Other replicas' enrolments reach this replica's gallery within this period.
    gallery_refresh_seconds: float = 2.0
    # --- models --------------------------------------------------------------
    model_dir: Path = field(default_factory=_default_model_dir)
    model_mirror: Path | None = None
    model_manifest: Path | None = None
    model_pack: str = "permissive"
    # An insightface SCRFD detector instead of the pack's (licensed by the operator, e.g. buffalo_l).
    detector_file: Path | None = None
    detector_sha256: str = ""
    # An insightface ArcFace-format recognizer instead of the pack's (licensed by the operator).
    recognizer_file: Path | None = None
    recognizer_sha256: str = ""
    recognizer_threshold: float = 0.0
    intra_op_threads: int = 1
    # --- per-burst work (issue 12; defaults from benchmarks/results/burst_sweep.json) ---
    # Frames of a burst the recognizer embeds (the k best, spread over the burst; one call).
    embed_frames: int = 3
    # Detection runs on a copy scaled so a face of min_face_size pixels is this many pixels
    # (>= min_face_size: no downscaling; 24 is several times cheaper but moves liveness, see
    # idv/face/detector.py DetectionScale).
    detection_face_px: float = 60.0
    # Operating point from the manifest's calibrated thresholds: fmr_1e-3 | fmr_1e-4 | fmr_1e-5
    security_level: str = "fmr_1e-4"
    # --- request limits --------------------------------------------------------
    max_frames: int = 8
    max_frames_with_challenge: int = 24
    max_reference_images: int = 8
    max_frame_bytes: int = 512 * 1024
    max_frame_width: int = 1920
    max_frame_height: int = 1920
    max_frame_pixels: int = 1920 * 1080
    max_message_bytes: int = 4 * 1024 * 1024
    # --- quality gate --------------------------------------------------------
    detector_score_threshold: float = 0.6
    # A second face at least this fraction of the subject's size fails MULTIPLE_FACES; smaller ones are bystanders.
    bystander_ratio: float = 0.5
    min_face_size: int = 60  # pixels, the face box's shorter side
    min_sharpness: float = 15.0  # variance of the Laplacian on the aligned 112x112 crop
    min_brightness: float = 40.0  # mean grey level of the aligned crop
    max_brightness: float = 220.0
    # --- liveness --------------------------------------------------------------
    liveness: bool = True
    # A 1-frame burst cannot show motion or 3-D structure: refused (FRAME_COUNT) unless this
    # allows a passive-only check for it (weaker against a still photo; an operator's choice).
    liveness_allow_single_frame: bool = False
    # --- logging ---------------------------------------------------------------
    log_level: str = "INFO"

    @property
    def store_path(self) -> Path:
        return self.data_dir / "references.sqlite3"

    @property
    def counters_path(self) -> Path:
        return self.data_dir / "counters.sqlite3"

    @property
    def audit_path(self) -> Path:
        return self.data_dir / (f"audit-{self.replica_id}.log" if self.replica_id else "audit.log")

    @property
    def store_kind(self) -> str:
        return "postgresql" if self.store.startswith(("postgresql://", "postgres://")) else self.store

    @property
    def gallery_enabled(self) -> bool:
        return self.duplicate_policy != "off" or self.impersonation_check

    @property
    def callers_path(self) -> Path:
        return self.data_dir / "callers.toml"

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def challenge_purposes(self) -> frozenset[str]:
        return frozenset(p.strip().upper() for p in self.challenge_required_for.split(",") if p.strip())

    def validate(self) -> Settings:
        problems: list[str] = []
        if not (0 <= self.port <= 65535):
            problems.append(f"port {self.port} is not a TCP port")
        if self.mode not in ("development", "production"):
            problems.append(f"mode must be 'development' or 'production', not {self.mode!r}")
        for name in ("worker_threads", "frame_threads", "max_concurrent_rpcs", "intra_op_threads", "max_frames",
                     "max_frames_with_challenge", "max_reference_images", "max_frame_bytes"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.embed_frames < 1 or not (8 <= self.detection_face_px <= 640):
            problems.append("embed_frames must be at least 1 and detection_face_px in [8, 640]")
        if self.max_frames > self.max_frames_with_challenge:
            problems.append("max_frames must not exceed max_frames_with_challenge")
        needed = self.max_frames_with_challenge * self.max_frame_bytes
        if self.max_message_bytes < min(needed, 64 * 1024 * 1024) // 8:
            problems.append("max_message_bytes is too small to carry even a single frame burst")
        if self.security_level not in ("fmr_1e-3", "fmr_1e-4", "fmr_1e-5"):
            problems.append(f"security_level must be fmr_1e-3, fmr_1e-4 or fmr_1e-5, not {self.security_level!r}")
        if self.detector_file is not None and not self.detector_sha256:
            problems.append("detector_file needs detector_sha256")
        if self.recognizer_file is not None and (not self.recognizer_sha256 or self.recognizer_threshold <= 0):
            problems.append("recognizer_file needs recognizer_sha256 and a calibrated recognizer_threshold")
        if self.request_budget_seconds <= 0:
            problems.append("request_budget_seconds must be positive")
        if not (0 < self.min_brightness < self.max_brightness <= 255):
            problems.append("brightness limits must satisfy 0 < min_brightness < max_brightness <= 255")
        if not (0 < self.bystander_ratio <= 1):
            problems.append("bystander_ratio must be in (0, 1]")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            problems.append("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        for path_name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, path_name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{path_name} {path} does not exist")
        if not self.tls and (self.mode != "development" or self.host not in _LOOPBACK):
            problems.append("plaintext serving is only for development mode on a loopback address; "
                            "set tls_cert_file and tls_key_file (see `idv tls dev-ca`)")
        unknown = self.challenge_purposes - {"REGISTRATION", "LICENCE_RENEWAL", "CHECK_IN"}
        if unknown:
            problems.append(f"challenge_required_for names unknown purposes {sorted(unknown)}")
        for name in ("lockout_after_failures", "failure_cap", "caller_requests_per_minute",
                     "caller_distinct_identities_per_hour"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.failure_cap < self.lockout_after_failures:
            problems.append("failure_cap must be at least lockout_after_failures")
        if self.store_kind not in ("sqlite", "postgresql"):
            problems.append("store must be 'sqlite' or a postgresql://... DSN")
        if self.replica_id and not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", self.replica_id):
            problems.append("replica_id may hold only letters, digits, '_', '.' and '-' (at most 64)")
        if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.postgres_schema):
            problems.append("postgres_schema must be a lower-case SQL identifier")
        if not (1 <= self.postgres_pool_min <= self.postgres_pool_max):
            problems.append("postgres pool sizes must satisfy 1 <= postgres_pool_min <= postgres_pool_max")
        store_call = self.postgres_pool_timeout_seconds + self.postgres_statement_timeout_ms / 1000
        if self.store_kind == "postgresql" and store_call >= self.request_budget_seconds:
            problems.append("postgres_pool_timeout_seconds + postgres_statement_timeout_ms must stay below "
                            "request_budget_seconds (a slow store must answer UNAVAILABLE within the deadline)")
        if self.postgres_statement_timeout_ms < 1 or self.postgres_pool_timeout_seconds <= 0:
            problems.append("postgres timeouts must be positive")
        if self.postgres_connect_timeout_seconds < 2:
            problems.append("postgres_connect_timeout_seconds must be at least 2")
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            problems.append("redis_url must be a redis://, rediss:// or unix:// URL")
        if self.redis_timeout_seconds <= 0 or self.redis_attempt_ttl_seconds < 3600:
            problems.append("redis_timeout_seconds must be positive and redis_attempt_ttl_seconds at least 3600")
        if self.store_probe_interval_seconds <= 0 or self.store_probe_failures < 1:
            problems.append("store_probe_interval_seconds must be positive and store_probe_failures at least 1")
        if self.duplicate_policy not in ("refuse", "flag", "off"):
            problems.append(f"duplicate_policy must be refuse, flag or off, not {self.duplicate_policy!r}")
        if not (0 <= self.duplicate_threshold < 1):
            problems.append("duplicate_threshold must be in [0, 1) (0: the manifest's fmr_1e-5 threshold)")
        if not (0 <= self.impersonation_margin < 1):
            problems.append("impersonation_margin must be in [0, 1)")
        if self.gallery_exact_max < 1 or self.gallery_nprobe < 1 or self.gallery_refresh_seconds <= 0:
            problems.append("gallery_exact_max and gallery_nprobe must be at least 1, gallery_refresh_seconds positive")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"log_level {self.log_level!r} is not DEBUG, INFO, WARNING or ERROR")
        if self.mode == "production":
            if self.reflection:
                problems.append("production mode refuses reflection = true")
            if self.log_level.upper() == "DEBUG":
                problems.append("production mode refuses DEBUG logging")
            if os.environ.get("GRPC_TRACE"):
                problems.append("production mode refuses GRPC_TRACE (it logs request payloads)")
            if not self.liveness:
                problems.append("production mode refuses liveness = false")
            if self.liveness_allow_single_frame:
                problems.append("production mode refuses liveness_allow_single_frame = true")
            if self.tls_client_ca_file is None:
                problems.append("production mode requires mutual TLS (tls_client_ca_file)")
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))
        return self


def _convert(name: str, annotation: object, raw: object) -> object:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)][0]
        if raw is None or raw == "":
            return None
        return _convert(name, inner, raw)
    try:
        if annotation is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if annotation is int:
            if isinstance(raw, bool):
                raise ValueError(raw)
            return int(raw)
        if annotation is float:
            return float(raw)
        if annotation is Path:
            return Path(str(raw)).expanduser()
        return str(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"setting {name}: {raw!r} is not a valid {getattr(annotation, '__name__', annotation)}") from None


def load_settings(
    config_file: Path | None = None,
    environ: typing.Mapping[str, str] | None = None,
    overrides: dict[str, object] | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    hints = typing.get_type_hints(Settings)
    known = {f.name for f in fields(Settings)}
    values: dict[str, object] = {}

    path = config_file or (Path(env[f"{ENV_PREFIX}CONFIG"]) if env.get(f"{ENV_PREFIX}CONFIG") else None)
    if path is not None:
        try:
            with Path(path).open("rb") as fh:
                raw_file = tomllib.load(fh)
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"config file {path}: {exc}") from None
        for key, value in raw_file.items():
            if key not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _convert(key, hints[key], value)
    for name in known:
        env_key = ENV_PREFIX + name.upper()
        if env_key in env:
            values[name] = _convert(name, hints[name], env[env_key])
    for key, value in (overrides or {}).items():
        if value is not None:
            if key not in known:
                raise ConfigError(f"unknown setting {key!r}")
            values[key] = _convert(key, hints[key], value)
    return Settings(**values).validate()


SECRET_SETTINGS = frozenset({"store", "redis_url"})  # a DSN or URL may carry a password


def masked(settings: Settings) -> dict[str, object]:
    """The effective settings as plain values, secrets masked (for `idv config show`)."""
    out: dict[str, object] = {}
    for name, value in dataclasses.asdict(settings).items():
        if name in SECRET_SETTINGS and isinstance(value, str) and "@" in value:
            scheme, _, rest = value.partition("://")
            value = f"{scheme}://***@{rest.rpartition('@')[2]}"
        out[name] = str(value) if isinstance(value, Path) else value
    return out
