"""Reload without a restart: the callers file and the TLS certificates, on SIGHUP and on change.

New connections get the new certificates and new calls the new callers; calls and
connections already in flight keep what they started with. A new file that does not
load (bad TOML, an unknown scope, a key that does not match its certificate, an expired
certificate) is refused with a log line naming it, and the old one stays in force.

TLS goes through gRPC's dynamic credentials: gRPC asks `fetch()` before every new
handshake, so the same credentials work for the sync and the grpc.aio server.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from idv.security.callers import CallerRegistry

log = logging.getLogger("idv.reload")


class TlsFileError(ValueError):
    """A certificate or key file is missing or malformed; the message names the file."""


@dataclass(frozen=True)
class TlsFiles:
    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None  # mutual TLS when set


@dataclass(frozen=True)
class ReloadConfig:
    callers_path: Path
    tls: TlsFiles | None = None
    # Files are also checked for changes this often (0: only on SIGHUP).
    watch_seconds: float = 2.0


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise TlsFileError(f"{what} {path} cannot be read: {exc.strerror}") from None


def load_certificate_configuration(files: TlsFiles, now: dt.datetime | None = None):
    """The files as a gRPC certificate configuration, after checking they hold what they should."""
    cert_pem, key_pem = _read(files.cert_file, "TLS certificate"), _read(files.key_file, "TLS key")
    try:
        chain = x509.load_pem_x509_certificates(cert_pem)
    except ValueError:
        raise TlsFileError(f"TLS certificate {files.cert_file} is not a PEM certificate") from None
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise TlsFileError(f"TLS key {files.key_file} is not an unencrypted PEM private key") from None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if (chain[0].public_key().public_bytes(serialization.Encoding.DER, public)
            != key.public_key().public_bytes(serialization.Encoding.DER, public)):
        raise TlsFileError(f"TLS key {files.key_file} does not belong to the certificate {files.cert_file}")
    moment = now or dt.datetime.now(dt.timezone.utc)
    if chain[0].not_valid_after_utc < moment:
        raise TlsFileError(f"TLS certificate {files.cert_file} expired on {chain[0].not_valid_after_utc:%Y-%m-%d}")
    roots = None
    if files.client_ca_file is not None:
        roots = _read(files.client_ca_file, "TLS client CA")
        try:
            x509.load_pem_x509_certificates(roots)
        except ValueError:
            raise TlsFileError(f"TLS client CA {files.client_ca_file} is not a PEM certificate") from None
    return grpc.ssl_server_certificate_configuration([(key_pem, cert_pem)], root_certificates=roots)


def _stamp(path: Path | None) -> tuple | None:
    if path is None:
        return None
    try:
        info = os.stat(path)
    except OSError:
        return ("missing",)
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class Reloader:
    def __init__(self, config: ReloadConfig, apply_callers: Callable[[CallerRegistry], None]):
        self._config = config
        self._apply_callers = apply_callers
        self._lock = threading.Lock()
        self._pending_tls = None  # a validated configuration for the next handshake
        self._initial_tls = load_certificate_configuration(config.tls) if config.tls is not None else None
        self._stamps = self._current_stamps()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _files(self) -> list[Path | None]:
        tls = self._config.tls
        return [self._config.callers_path, tls.cert_file if tls else None, tls.key_file if tls else None,
                tls.client_ca_file if tls else None]

    def _current_stamps(self) -> list[tuple | None]:
        return [_stamp(path) for path in self._files()]

    def server_credentials(self) -> grpc.ServerCredentials:
        tls = self._config.tls
        assert tls is not None and self._initial_tls is not None
        return grpc.dynamic_ssl_server_credentials(self._initial_tls, self._fetch,
                                                   require_client_authentication=tls.client_ca_file is not None)

    def _fetch(self):
        """gRPC, before each new handshake: a new configuration once after a reload, else None (no change)."""
        with self._lock:
            pending, self._pending_tls = self._pending_tls, None
        return pending

    def reload(self) -> None:
        """Load both files again; each one that fails is refused (logged) and its old version stays."""
        self._stamps = self._current_stamps()
        try:
            callers = CallerRegistry.load(self._config.callers_path)
        except Exception as exc:  # noqa: BLE001  (any problem: keep the old file, say why)
            log.error(f"callers file {self._config.callers_path} refused, the previous callers stay: {exc}")
        else:
            self._apply_callers(callers)
            log.info("callers reloaded", extra={"path": str(self._config.callers_path), "callers": callers.count})
        if self._config.tls is not None:
            try:
                configuration = load_certificate_configuration(self._config.tls)
            except TlsFileError as exc:
                log.error(f"TLS certificates refused, the previous ones stay: {exc}")
            else:
                with self._lock:
                    self._pending_tls = configuration
                log.info("TLS certificates reloaded: new connections use them",
                         extra={"path": str(self._config.tls.cert_file)})

    def request(self) -> None:
        """From a signal handler: only wakes the reload thread."""
        self._wake.set()

    def start(self) -> None:
        def run() -> None:
            interval = self._config.watch_seconds if self._config.watch_seconds > 0 else None
            while not self._stop.is_set():
                signalled = self._wake.wait(interval)
                if self._stop.is_set():
                    return
                self._wake.clear()
                if signalled or self._current_stamps() != self._stamps:
                    self.reload()

        self._thread = threading.Thread(target=run, name="idv-reload", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
