"""Settings: nested frozen sections, each of which *is* the configuration of one component.

    [serving]    ServingSettings   the node: addresses, threads, admission, TLS, metrics, logs
    [limits]     PipelineLimits    frames per request, reference images, bystanders
    [image]      ImageLimits       bytes and pixels of one frame, checked from its header
    [quality]    QualityLimits     the capture-quality gate
    [burst]      BurstPolicy       which frames of a burst are embedded (work per burst, not per frame)
    [throttle]   ThrottlePolicy    lockouts, failure cap, per-caller rates
    [challenges] ChallengePolicy   which purposes need an active challenge, its lifetime
    [store]      StoreSettings     data_dir, the reference store (SQLite or PostgreSQL), readiness
    [state]      StateSettings     shared state for replicas (Redis)
    [gallery]    GallerySettings   1:N screening
    [models]     ModelSettings     model cache, pack, operator models, security level
    [liveness]   LivenessSettings  passive + multi-frame liveness
    [device]     DeviceSettings    the HTTP(S) endpoint for capture devices (page and upload)
    [sessions]   SessionSettings   verification sessions for capture devices
    [credentials] CredentialSettings check-in credentials issued on PASS (issue 18)
    [history]    HistorySettings   a person's own verification history (issue 18)

Each default lives once, in its section's dataclass. Sources, in rising precedence: the
defaults < a TOML file (`--config` / IDV_CONFIG; `[section]` tables, or the flat names of the
first version) < the environment (`IDV_SECTION__FIELD`, or the flat `IDV_NAME`) < explicit
overrides (command-line flags). Every value is validated at start; a bad one stops the process
with a message naming the setting.
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

from idv.capture_integrity import IntegritySettings
from idv.challenges import ChallengePolicy
from idv.credentials import CredentialSettings
from idv.face.burst import BurstPolicy
from idv.face.quality import QualityLimits
from idv.gallery.settings import GallerySettings
from idv.history import HistorySettings
from idv.http.settings import DeviceSettings
from idv.imaging import ImageLimits
from idv.liveness_gate import LivenessSettings
from idv.models.settings import ModelSettings
from idv.pipeline import PipelineLimits
from idv.sessions import SessionSettings
from idv.state.settings import StateSettings
from idv.store.settings import StoreSettings
from idv.throttle import ThrottlePolicy

ENV_PREFIX = "IDV_"
# gRPC's keepalive ping interval plus its answer timeout (idv/node.py server_options): the longest a healthy
# connection can stay silent.
KEEPALIVE_SECONDS = 80.0
_LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


class ConfigError(ValueError):
    """A setting is missing, malformed or unsafe."""



def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, where the platform tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

@dataclass(frozen=True)
class ServingSettings:
    host: str = "127.0.0.1"
    port: int = 50051
    mode: str = "development"  # development | production
    # Requests in the pipeline at once; 4 x intra-op 1 won the sweep in benchmarks/results/latency.json
    # (chosen_default: highest capacity, then lowest unloaded p50).
    worker_threads: int = 4
    # Issue 12: the node's frame pool, shared by every request: it decodes and detects a burst's
    # frames, refines and embeds its k chosen faces and runs its liveness cues, side by side, so
    # a lone request uses every core; under load it is the node's compute queue (request workers
    # only wait on it), so compute threads = frame_threads. 0: one per usable core.
    frame_threads: int = 0
    # false: no frame pool; each request runs every stage in order on its worker thread (then
    # worker_threads x intra_op_threads is what runs at once). Same decisions either way.
    burst_parallel: bool = True
    # In flight beyond this are refused at once with RESOURCE_EXHAUSTED (load shedding).
    max_concurrent_rpcs: int = 8
    # Server-side budget per request; the client's deadline wins when shorter.
    request_budget_seconds: float = 5.0
    grace_seconds: float = 10.0
    # The largest request the API allows: 24 frames x 512 KiB plus 64 KiB for the other fields
    # and the protobuf framing (docs/api.md "Limits"); checked against [limits] and [image].
    max_message_bytes: int = 24 * 512 * 1024 + 64 * 1024
    # --- hostile peers (idv/rpc/intake.py says why each exists) ---
    body_timeout_seconds: float = 5.0  # from a call's HEADERS to its whole request body
    # HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS. Not lower: a client's burst on a fresh connection, sent before
    # it sees the SETTINGS, gets streams refused (UNAVAILABLE); max_streams_per_peer bounds what they hold.
    max_streams_per_connection: int = 32
    max_streams_per_peer: int = 16  # calls open at once from one IP address, all its connections
    # Connections are capped at accept by the node's front (idv/front.py), on the gRPC and the device port
    # each: per IPv4 address (per /64 for IPv6), and in all; excess ones are closed at once.
    connections_per_address: int = 32
    max_connections: int = 1024  # TCP connections a public port keeps at once (each costs three descriptors)
    connection_idle_seconds: float = 60.0  # a connection with no call is closed after this (gRPC)
    # TCP accept to the first byte (the front) and to a finished TLS/HTTP/2 handshake (gRPC).
    handshake_timeout_seconds: float = 10.0
    # A connection on which no byte moved either way for this long is closed by the front. Above gRPC's
    # keepalive (a ping every 60 s, 20 s for its answer), so it never cuts a connection that answers.
    quiet_connection_seconds: float = 120.0
    receive_bodies_per_peer: int = 2  # request bodies being received at once from one IP address
    receive_bodies_per_caller: int = 4  # ... with one API key (from any address)
    receive_bodies_total: int = 12  # ... from all peers (each may buffer up to max_message_bytes)
    reflection: bool = False
    # TLS: both files set -> TLS; plus a client CA -> mutual TLS (client certificates required).
    # Without TLS the node serves plaintext only in development mode on a loopback address.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_client_ca_file: Path | None = None
    # Prometheus /metrics on its own HTTP port (0 picks a free port; -1 disables).
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    # The callers file and TLS certificates are reloaded on SIGHUP and when they change,
    # checked this often (0: on SIGHUP only).
    reload_watch_seconds: float = 2.0
    log_level: str = "INFO"
    # --- verification sessions and the device endpoint (issue 13) --------------
    # HTTP(S) port for capture devices: the capture page and the upload (e.g. 8080; 0 picks a
    # free port; -1, the default, turns it and CreateSession off). TLS with tls_cert_file/tls_key_file.
    device_host: str = "127.0.0.1"
    device_port: int = -1
    # Base of capture_url as devices reach this node (e.g. https://idv.example.com:8443);
    # empty: http(s)://device_host:<bound port>.
    device_public_url: str = ""
    # Origins allowed to upload cross-origin (comma-separated scheme://host[:port]); empty: none.
    device_allowed_origins: str = ""
    device_max_body_bytes: int = 8 * 1024 * 1024
    device_requests_per_minute: int = 30  # per client address
    session_frame_count: int = 24  # frames a device is asked to capture
    session_result_ttl_seconds: float = 600.0  # the result stays readable this long after the capture window
    # Tests only: CreateSession may fix the challenge's actions (gRPC metadata idv-test-fixed-actions).
    session_fixed_challenges: bool = False

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    @property
    def production(self) -> bool:
        return self.mode == "production"

    @property
    def frame_pool_threads(self) -> int:
        """The frame pool's size: `frame_threads`, or the cores this process may run on."""
        return self.frame_threads or usable_cores()

    def problems(self) -> list[str]:
        problems: list[str] = []
        if not (0 <= self.port <= 65535):
            problems.append(f"serving.port {self.port} is not a TCP port")
        if self.mode not in ("development", "production"):
            problems.append(f"serving.mode must be 'development' or 'production', not {self.mode!r}")
        if self.frame_threads < 0:
            problems.append("serving.frame_threads must be 0 (one per usable core) or more")
        for name in ("worker_threads", "max_concurrent_rpcs", "max_streams_per_connection",
                     "max_streams_per_peer", "max_connections", "connections_per_address",
                     "receive_bodies_per_peer", "receive_bodies_per_caller", "receive_bodies_total"):
            if getattr(self, name) < 1:
                problems.append(f"serving.{name} must be at least 1")
        for name in ("body_timeout_seconds", "connection_idle_seconds", "handshake_timeout_seconds"):
            if getattr(self, name) <= 0:
                problems.append(f"serving.{name} must be positive")
        if self.connections_per_address > self.max_connections:
            problems.append("serving.connections_per_address must not exceed serving.max_connections")
        if self.quiet_connection_seconds <= KEEPALIVE_SECONDS:
            problems.append(f"serving.quiet_connection_seconds must exceed {KEEPALIVE_SECONDS:g} s (gRPC's keepalive "
                            "ping interval plus its timeout): a shorter one would cut healthy connections")
        if self.request_budget_seconds <= 0:
            problems.append("serving.request_budget_seconds must be positive")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            problems.append("tls_cert_file and tls_key_file must be set together")
        if self.tls_client_ca_file is not None and self.tls_cert_file is None:
            problems.append("tls_client_ca_file (mutual TLS) needs tls_cert_file and tls_key_file")
        for name in ("tls_cert_file", "tls_key_file", "tls_client_ca_file"):
            path = getattr(self, name)
            if path is not None and not Path(path).is_file():
                problems.append(f"{name} {path} does not exist")
        if not self.tls and (self.mode != "development" or self.host not in _LOOPBACK):
            problems.append("plaintext serving is only for development mode on a loopback address; "
                            "set tls_cert_file and tls_key_file (see `idv tls dev-ca`)")
        if self.reload_watch_seconds < 0:
            problems.append("serving.reload_watch_seconds must be 0 (SIGHUP only) or positive")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            problems.append(f"serving.log_level {self.log_level!r} is not DEBUG, INFO, WARNING or ERROR")
        return problems


@dataclass(frozen=True)
class Settings:
    serving: ServingSettings = field(default_factory=ServingSettings)
    limits: PipelineLimits = field(default_factory=PipelineLimits)
    image: ImageLimits = field(default_factory=ImageLimits)
    quality: QualityLimits = field(default_factory=QualityLimits)
    burst: BurstPolicy = field(default_factory=BurstPolicy)
    throttle: ThrottlePolicy = field(default_factory=ThrottlePolicy)
    challenges: ChallengePolicy = field(default_factory=ChallengePolicy)
    store: StoreSettings = field(default_factory=StoreSettings)
    state: StateSettings = field(default_factory=StateSettings)
    gallery: GallerySettings = field(default_factory=GallerySettings)
    models: ModelSettings = field(default_factory=ModelSettings)
    liveness: LivenessSettings = field(default_factory=LivenessSettings)
    device: DeviceSettings = field(default_factory=DeviceSettings)
    sessions: SessionSettings = field(default_factory=SessionSettings)
    credentials: CredentialSettings = field(default_factory=CredentialSettings)  # issue 18
    history: HistorySettings = field(default_factory=HistorySettings)  # issue 18
    integrity: IntegritySettings = field(default_factory=IntegritySettings)  # issue 14

    def updated(self, **changes: object) -> Settings:
        """A copy with some values changed, by flat name (`port`) or `section__field`; not validated."""
        sections: dict[str, dict[str, object]] = {}
        for key, value in changes.items():
            _set(sections, key, value, "update")
        return dataclasses.replace(self, **{
            section: dataclasses.replace(getattr(self, section), **values) for section, values in sections.items()
        })

    def validate(self) -> Settings:
        problems: list[str] = []
        for section in fields(self):
            problems.extend(getattr(self, section.name).problems())
        problems.extend(self._cross_section_problems())
        if problems:
            raise ConfigError("invalid settings: " + "; ".join(problems))
        return self

    def _cross_section_problems(self) -> list[str]:
        """Rules that relate two sections; a rule about one section lives in that section."""
        problems: list[str] = []
        needed = max(self.limits.max_frames_with_challenge, self.limits.max_reference_images) * self.image.max_bytes \
            + 64 * 1024
        if self.serving.max_message_bytes < needed:
            problems.append(f"serving.max_message_bytes must fit the largest request allowed ({needed} bytes: the "
                            "frame limits times image.max_bytes plus 64 KiB); raise it or lower the frame limits")
        store_call = self.store.postgres_pool_timeout_seconds + self.store.postgres_statement_timeout_ms / 1000
        if self.store.kind == "postgresql" and store_call >= self.serving.request_budget_seconds:
            problems.append("postgres_pool_timeout_seconds + postgres_statement_timeout_ms must stay below "
                            "request_budget_seconds (a slow store must answer UNAVAILABLE within the deadline)")
        if not (0 < self.store.sqlite_busy_timeout_seconds < self.serving.request_budget_seconds):
            problems.append("store.sqlite_busy_timeout_seconds must be positive and below request_budget_seconds "
                            "(a locked store must answer UNAVAILABLE within the deadline)")
        if self.device.enabled:
            if not self.serving.tls and (self.serving.mode != "development" or self.device.host not in _LOOPBACK):
                problems.append("a plaintext device endpoint is only for development mode on a loopback address")
            if self.device.max_body_bytes < self.image.max_bytes:
                problems.append("device.max_body_bytes must hold at least one frame (image.max_bytes)")
            if self.sessions.frame_count > self.limits.max_frames_with_challenge:
                problems.append("sessions.frame_count must not exceed limits.max_frames_with_challenge")
        if self.serving.production:
            if self.sessions.fixed_challenges:
                problems.append("production mode refuses session_fixed_challenges = true")
            if not self.integrity.replay_check:
                problems.append("production mode refuses integrity.replay_check = false")
            if self.device.record_dir is not None:
                problems.append("production mode refuses device.record_dir (record mode saves every capture's "
                                "frames, biometric data, to disk: for calibration sessions in development mode only)")
            if self.serving.reflection:
                problems.append("production mode refuses reflection = true")
            if self.serving.log_level.upper() == "DEBUG":
                problems.append("production mode refuses DEBUG logging")
            if os.environ.get("GRPC_TRACE"):
                problems.append("production mode refuses GRPC_TRACE (it logs request payloads)")
            if not self.liveness.enabled:
                problems.append("production mode refuses liveness = false")
            if self.liveness.allow_single_frame:
                problems.append("production mode refuses liveness_allow_single_frame = true")
            if self.serving.tls_client_ca_file is None:
                problems.append("production mode requires mutual TLS (tls_client_ca_file)")
        return problems


SECTIONS: dict[str, type] = {f.name: typing.get_type_hints(Settings)[f.name] for f in fields(Settings)}

# The flat names of the first version (TOML keys, IDV_<NAME>, overrides), kept as aliases.
_RENAMED: dict[str, tuple[str, str]] = {
    "host": ("serving", "host"),
    "port": ("serving", "port"),
    "store": ("store", "url"),
    "data_dir": ("store", "data_dir"),
    "replica_id": ("store", "replica_id"),
    "postgres_migrate_on_start": ("store", "postgres_migrate_on_start"),
    "store_probe_interval_seconds": ("store", "probe_interval_seconds"),
    "store_probe_failures": ("store", "probe_failures"),
    "max_frame_bytes": ("image", "max_bytes"),
    "max_frame_width": ("image", "max_width"),
    "max_frame_height": ("image", "max_height"),
    "max_frame_pixels": ("image", "max_pixels"),
    "challenge_required_for": ("challenges", "required_for"),
    "challenge_ttl_seconds": ("challenges", "ttl_seconds"),
    "challenge_passive_only_for": ("challenges", "passive_only_for"),  # issue 14
    "gallery_exact_max": ("gallery", "exact_max"),
    "gallery_nprobe": ("gallery", "nprobe"),
    "gallery_refresh_seconds": ("gallery", "refresh_seconds"),
    "model_dir": ("models", "dir"),
    "model_mirror": ("models", "mirror"),
    "model_manifest": ("models", "manifest"),
    "model_pack": ("models", "pack"),
    "liveness": ("liveness", "enabled"),
    "liveness_allow_single_frame": ("liveness", "allow_single_frame"),
    "max_jpeg_scans": ("image", "max_scans"),
    # Settings added with sessions (issue 13), before the sections existed.
    "device_host": ("device", "host"),
    "device_port": ("device", "port"),
    "device_public_url": ("device", "public_url"),
    "device_allowed_origins": ("device", "allowed_origins"),
    "device_max_body_bytes": ("device", "max_body_bytes"),
    "device_requests_per_minute": ("device", "requests_per_minute"),
    "session_frame_count": ("sessions", "frame_count"),
    "session_result_ttl_seconds": ("sessions", "result_ttl_seconds"),
    "session_fixed_challenges": ("sessions", "fixed_challenges"),
}


_FIRST_VERSION_NAMES = (
    "host port mode worker_threads frame_threads max_concurrent_rpcs request_budget_seconds grace_seconds "
    "reflection tls_cert_file tls_key_file tls_client_ca_file metrics_host metrics_port challenge_required_for "
    "challenge_ttl_seconds lockout_after_failures lockout_base_seconds failure_cap caller_requests_per_minute "
    "caller_distinct_identities_per_hour data_dir store replica_id postgres_schema postgres_pool_min "
    "postgres_pool_max postgres_pool_timeout_seconds postgres_statement_timeout_ms "
    "postgres_connect_timeout_seconds postgres_migrate_on_start redis_url redis_prefix redis_timeout_seconds "
    "redis_attempt_ttl_seconds store_probe_interval_seconds store_probe_failures duplicate_policy "
    "duplicate_threshold impersonation_check impersonation_margin gallery_exact_max gallery_nprobe "
    "gallery_refresh_seconds model_dir model_mirror model_manifest model_pack detector_file detector_sha256 "
    "recognizer_file recognizer_sha256 recognizer_threshold intra_op_threads security_level max_frames "
    "max_frames_with_challenge max_reference_images max_frame_bytes max_frame_width max_frame_height "
    "max_frame_pixels max_message_bytes detector_score_threshold bystander_ratio min_face_size min_sharpness "
    "min_brightness max_brightness liveness liveness_allow_single_frame log_level"
).split()


def _flat_aliases() -> dict[str, tuple[str, str]]:
    """Bare names: the first version's flat names, each mapped to the one field it became, and any
    other field whose name is unique across sections and not a single word (`dir`, `url`,
    `enabled` say nothing without their section, so they are reachable only as `section__field`)."""
    owners: dict[str, list[str]] = {}
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            owners.setdefault(f.name, []).append(section)
    aliases = {name: (found[0], name) for name, found in owners.items() if len(found) == 1 and "_" in name}
    aliases.update({name: target for name, target in _RENAMED.items() if name not in _FIRST_VERSION_NAMES})
    for name in _FIRST_VERSION_NAMES:
        if name in _RENAMED:
            aliases[name] = _RENAMED[name]
        elif len(owners.get(name, [])) == 1:
            aliases[name] = (owners[name][0], name)
        else:
            raise AssertionError(f"flat setting {name!r} must map to exactly one section, found {owners.get(name)}")
    return aliases


FLAT_ALIASES = _flat_aliases()


def resolve_name(key: str) -> tuple[str, str]:
    """(section, field) for `section__field`, `section.field` or a flat alias."""
    for separator in ("__", "."):
        section, sep, name = key.partition(separator)
        if sep and section in SECTIONS:
            if name not in {f.name for f in fields(SECTIONS[section])}:
                raise ConfigError(f"unknown setting {key!r}: [{section}] has no {name!r}")
            return section, name
    if key in FLAT_ALIASES:
        return FLAT_ALIASES[key]
    raise ConfigError(f"unknown setting {key!r}")


def _convert(name: str, annotation: object, raw: object) -> object:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)][0]
        if raw is None or raw == "":
            return None
        return _convert(name, inner, raw)
    try:
        if origin is tuple:  # tuple[str, ...]: a TOML list or a comma-separated string
            items = raw if isinstance(raw, (list, tuple)) else str(raw).split(",")
            return tuple(str(item).strip() for item in items if str(item).strip())
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


def _set(values: dict[str, dict[str, object]], key: str, raw: object, origin: str) -> None:
    try:
        section, name = resolve_name(key)
    except ConfigError as exc:
        raise ConfigError(f"{origin}: {exc}") from None
    hint = typing.get_type_hints(SECTIONS[section])[name]
    label = f"{section}.{name}" if key in (f"{section}__{name}", f"{section}.{name}") else f"{key} ({section}.{name})"
    values.setdefault(section, {})[name] = _convert(label, hint, raw)


def _read_file(path: Path, values: dict[str, dict[str, object]]) -> None:
    try:
        with Path(path).open("rb") as fh:
            raw_file = tomllib.load(fh)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"config file {path}: {exc}") from None
    for key, value in raw_file.items():
        if isinstance(value, dict) and key in SECTIONS:
            for name, item in value.items():
                _set(values, f"{key}__{name}", item, f"config file {path}")
        else:
            _set(values, key, value, f"config file {path}")


def load_settings(
    config_file: Path | None = None,
    environ: typing.Mapping[str, str] | None = None,
    overrides: dict[str, object] | None = None,
) -> Settings:
    env = os.environ if environ is None else environ
    values: dict[str, dict[str, object]] = {}
    path = config_file or (Path(env[f"{ENV_PREFIX}CONFIG"]) if env.get(f"{ENV_PREFIX}CONFIG") else None)
    if path is not None:
        _read_file(path, values)
    # Flat names first, then IDV_SECTION__FIELD: the explicit form wins when both are set.
    for alias in FLAT_ALIASES:
        env_key = ENV_PREFIX + alias.upper()
        if env_key in env:
            _set(values, alias, env[env_key], f"environment {env_key}")
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            env_key = f"{ENV_PREFIX}{section.upper()}__{f.name.upper()}"
            if env_key in env:
                _set(values, f"{section}__{f.name}", env[env_key], f"environment {env_key}")
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(values, key, value, "override")
    settings = Settings(**{section: SECTIONS[section](**given) for section, given in values.items()})
    return settings.validate()


_KEYWORD_SECRET = re.compile(r"(?i)\b(password|passwd|sslpassword|pass)\s*=\s*('(?:[^'\\]|\\.)*'|\S*)")
_QUERY_SECRET = re.compile(r"(?i)([?&](?:password|passwd|sslpassword|pass)=)[^&#]*")


def mask_dsn(value: str) -> str:
    """A DSN or URL with every secret replaced by ***: the user-info password of a URL
    (postgresql://user:pw@host, redis://:pw@host), password=... query parameters and the
    password=... of a libpq keyword DSN. Hosts, ports and database names stay readable."""
    masked_value = _QUERY_SECRET.sub(r"\1***", value)
    masked_value = _KEYWORD_SECRET.sub(lambda m: f"{m.group(1)}=***", masked_value)
    scheme, sep, rest = masked_value.partition("://")
    if sep:
        authority, slash, tail = rest.partition("/")
        if "@" in authority:
            userinfo, _, host = authority.rpartition("@")
            user, colon, _ = userinfo.partition(":")
            if colon:  # user:password@ or :password@ (no colon: a user name alone, nothing secret)
                authority = f"{user}:***@{host}" if user else f"***@{host}"
        masked_value = f"{scheme}://{authority}{slash}{tail}"
    return masked_value


SECRET_SETTINGS = frozenset({("store", "url"), ("state", "redis_url")})  # a DSN or URL may carry a password


def masked(settings: Settings) -> dict[str, dict[str, object]]:
    """The effective settings by section as plain values, secrets masked (for `idv config show`)."""
    out: dict[str, dict[str, object]] = {}
    for section in fields(settings):
        plain: dict[str, object] = {}
        for name, value in dataclasses.asdict(getattr(settings, section.name)).items():
            if (section.name, name) in SECRET_SETTINGS and isinstance(value, str):
                value = mask_dsn(value)
            plain[name] = str(value) if isinstance(value, Path) else list(value) if isinstance(value, tuple) else value
        out[section.name] = plain
    return out
