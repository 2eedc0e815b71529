"""The `idv` command line: serve, models, enroll, verify, config.

Heavy modules (onnxruntime, OpenCV, grpc, the node) are imported inside the commands that
need them: `idv verify` or `idv config show` should not pay for loading the model stack.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from idv.config import ConfigError, Settings, load_settings, masked


def _settings(config: Path | None, **overrides: object) -> Settings:
    try:
        return load_settings(config_file=config, overrides=overrides)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="idv")
def main() -> None:
    """idv: real-name + real-person verification node."""


# ----------------------------------------------------------------------- serve
@main.command()
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False), help="TOML settings file.")
@click.option("--host", default=None, help="Listen address (IDV_HOST).")
@click.option("--port", type=int, default=None, help="Listen port (IDV_PORT, default 50051).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="Store and keys (IDV_DATA_DIR).")
@click.option("--device-port", type=int, default=None,
              help="Serve the capture page and uploads for sessions on this port (IDV_DEVICE_PORT; off by default).")
def serve(config: Path | None, host: str | None, port: int | None, data_dir: Path | None,
          device_port: int | None) -> None:
    """Serve the gRPC API (and, with --device-port, the device endpoint) until SIGTERM/SIGINT."""
    from idv.logs import configure_logging
    from idv.node import serve as run

    settings = _settings(config, host=host, port=port, data_dir=data_dir, device_port=device_port)
    configure_logging(settings.serving.log_level)
    sys.exit(run(settings))


# ---------------------------------------------------------------------- models
@main.group()
def models() -> None:
    """Pull, verify and list the pinned models."""


def _manifest(settings: Settings):
    from idv.models.manifest import DEFAULT_MANIFEST, load_manifest

    return load_manifest(settings.models.manifest or DEFAULT_MANIFEST)


def _served_names(settings: Settings) -> list[str]:
    manifest = _manifest(settings)
    names = list(manifest.pack(settings.models.pack).values())
    names += [v.name for name in list(names) for v in manifest.variants(name)]  # faster builds, chosen at start
    # Liveness and landmark models are pulled with the pack when the manifest has them.
    names += [n for n, e in manifest.models.items() if e.role in ("liveness", "landmarks")]
    return names


@models.command("pull")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--mirror", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Local mirror directory (IDV_MODEL_MIRROR).")
@click.option("--model-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Cache to fill (IDV_MODEL_DIR).")
@click.option("--offline", is_flag=True, help="Never contact upstream sources.")
def models_pull(config: Path | None, mirror: Path | None, model_dir: Path | None, offline: bool) -> None:
    """Fetch every model the node serves, verify its SHA-256 and install it atomically."""
    from tqdm import tqdm

    from idv.models.pull import ModelPullError, pull_models

    settings = _settings(config, model_mirror=mirror, model_dir=model_dir)
    manifest = _manifest(settings)
    names = _served_names(settings)
    total = len(manifest.closure(names))
    with tqdm(total=total, desc="models", unit="file", file=sys.stderr) as bar:
        def progress(pulled) -> None:
            bar.set_postfix_str(f"{pulled.name} ({pulled.source})")
            bar.update(1)

        try:
            pulled = pull_models(manifest, names, settings.models.dir, settings.models.mirror,
                                 allow_network=not offline, on_progress=progress)
        except ModelPullError as exc:
            raise click.ClickException(str(exc)) from None
    for item in pulled:
        click.echo(f"{item.name:20s} {item.source:8s} {item.path}")


@models.command("verify")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
def models_verify(config: Path | None) -> None:
    """Check every served model in the cache against its pinned digest."""
    from idv.models.pull import sha256_of

    settings = _settings(config)
    manifest = _manifest(settings)
    bad = 0
    for entry in manifest.closure(_served_names(settings)):
        path = settings.models.dir / entry.file
        if not path.is_file():
            state, bad = "MISSING", bad + 1
        elif sha256_of(path) != entry.sha256:
            state, bad = "ALTERED", bad + 1
        else:
            state = "ok"
        click.echo(f"{entry.name:20s} {state:8s} {path}")
    if bad:
        raise click.ClickException(f"{bad} model file(s) missing or altered; run `idv models pull`")


@models.command("list")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
def models_list(config: Path | None) -> None:
    """Every model in the manifest with its role, licence and pin."""
    settings = _settings(config)
    for entry in _manifest(settings).models.values():
        click.echo(f"{entry.name:20s} {entry.role:10s} {entry.licence:18s} {entry.sha256[:16]}  {entry.file}")


# ------------------------------------------------------------- client commands
def client_options(command):
    """--target, --timeout, credentials and TLS for every command that calls a node."""
    options = [
        click.option("--target", default="127.0.0.1:50051", show_default=True, envvar="IDV_TARGET"),
        click.option("--timeout", default=30.0, show_default=True, help="Deadline per call, seconds."),
        click.option("--api-key", envvar="IDV_API_KEY", default=None, help="Caller key (IDV_API_KEY)."),
        click.option("--tls-ca", envvar="IDV_TLS_CA", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="CA certificate: use TLS."),
        click.option("--tls-cert", envvar="IDV_TLS_CERT", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="Client certificate (mutual TLS)."),
        click.option("--tls-key", envvar="IDV_TLS_KEY", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     default=None, help="Client key (mutual TLS)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _client(target: str, timeout: float, api_key: str | None = None, tls_ca: Path | None = None,
            tls_cert: Path | None = None, tls_key: Path | None = None):
    from idv.client import IdvClient, TlsConfig

    tls = TlsConfig(tls_ca, tls_cert, tls_key) if tls_ca else None
    return IdvClient(target, timeout=timeout, api_key=api_key, tls=tls)


def _rpc_failure(error) -> click.ClickException:
    from idv.rpc.status import error_info

    info = error_info(error)
    reason = f" [{info.reason}]" if info else ""
    return click.ClickException(f"{error.code().name}{reason}: {error.details()}")


@main.command()
@client_options
@click.option("--id", "id_number", required=True, help="18-character ID number.")
@click.option("--name", required=True)
@click.option("--replace", is_flag=True, help="Replace an existing enrolment.")
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def enroll(id_number: str, name: str, replace: bool, images: tuple[Path, ...], **conn) -> None:
    """Enroll an identity from reference photos."""
    import grpc

    with _client(**conn) as client:
        try:
            result = client.enroll(id_number, name, [p.read_bytes() for p in images], replace=replace)
        except grpc.RpcError as error:
            raise _rpc_failure(error) from None
    click.echo(f"enrolled: {result.template_count} template(s), request {result.request_id}")


@main.command()
@client_options
@click.option("--id", "id_number", required=True)
@click.option("--name", required=True)
@click.option("--purpose", type=click.Choice(["registration", "licence_renewal", "check_in"]),
              default="check_in", show_default=True)
@click.option("--challenge", "challenge_id", default="", help="Challenge id from `idv challenge`.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--terminal-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="An attested terminal's private key (`idv keys new-terminal`): sign the capture with it.")
@click.option("--terminal-id", default="", help="The id the terminal was registered under (with --terminal-key).")
@click.argument("frames", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify(id_number: str, name: str, purpose: str, challenge_id: str, as_json: bool, frames: tuple[Path, ...],
           terminal_key: Path | None, terminal_id: str, **conn) -> None:
    """Verify live frames against an enrolled identity. Exit 0 on PASS, 1 on FAIL."""
    import grpc

    from idv.security.terminals import TerminalsFileError, load_private_key

    if bool(terminal_key) != bool(terminal_id):
        raise click.ClickException("--terminal-key and --terminal-id go together")
    try:
        private = load_private_key(terminal_key) if terminal_key else None
    except TerminalsFileError as exc:
        raise click.ClickException(str(exc)) from None
    with _client(**conn) as client:
        try:
            result = client.verify(id_number, name, [p.read_bytes() for p in frames], purpose, challenge_id,
                                   terminal_id=terminal_id, terminal_key=private)
        except grpc.RpcError as error:
            raise _rpc_failure(error) from None
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        click.echo(f"{result.verdict} ({result.reason}) request {result.request_id}")
    sys.exit(0 if result.verdict == "PASS" else 1)


@main.command()
@client_options
@click.option("--id", "id_number", required=True)
@click.option("--purpose", type=click.Choice(["", "registration", "licence_renewal", "check_in"]), default="",
              help="The purpose the challenge is for: its kind (actions, light, both) follows the node's policy.")
def challenge(id_number: str, purpose: str, **conn) -> None:
    """Ask for a one-time challenge; prints its id, actions, light steps and expiry as JSON."""
    import grpc

    with _client(**conn) as client:
        try:
            issued = client.create_challenge(id_number, purpose)
        except grpc.RpcError as error:
            raise _rpc_failure(error) from None
    click.echo(json.dumps({"challenge_id": issued.challenge_id, "actions": list(issued.actions),
                           "light": [{"colour": c, "duration_ms": d} for c, d in issued.light],
                           "expires_at_unix": issued.expires_at_unix}))


# ----------------------------------------------------------------------- admin
@main.group()
def admin() -> None:
    """Operator actions on one identity (caller scope `admin`; every call is audited)."""


@admin.command("delete")
@client_options
@click.option("--id", "id_number", required=True)
def admin_delete(id_number: str, **conn) -> None:
    """Erase an identity's reference (templates and gallery entries, on every replica)."""
    import grpc

    with _client(**conn) as client:
        try:
            deleted, bound = client.delete_identity(id_number)
        except grpc.RpcError as error:
            raise _rpc_failure(error) from None
    if deleted:
        click.echo(f"deleted; every replica's gallery forgets it within {bound:g} s")
    else:
        click.echo("not enrolled: nothing to delete")


@admin.command("unlock")
@client_options
@click.option("--id", "id_number", required=True)
def admin_unlock(id_number: str, **conn) -> None:
    """Reset an identity's lockout and failure cap."""
    import grpc

    with _client(**conn) as client:
        try:
            was_locked = client.unlock_identity(id_number)
        except grpc.RpcError as error:
            raise _rpc_failure(error) from None
    click.echo("unlocked" if was_locked else "was not locked; counters reset")


@admin.command("status")
@client_options
@click.option("--id", "id_number", required=True)
def admin_status(id_number: str, **conn) -> None:
    """Print an identity's status as JSON (`enrolled`, templates, model, lock), or "not enrolled"."""
    import grpc

    with _client(**conn) as client:
        try:
            status = client.identity_status(id_number)
        except grpc.RpcError as error:
            raise _rpc_failure(error) from None
    if not status.enrolled and not status.consecutive_failures and not status.failure_cap_reached:
        click.echo("not enrolled")
        return
    click.echo(json.dumps(status.as_dict()))


# ----------------------------------------------------- sessions (issue 13)
@main.group()
def session() -> None:
    """Verification sessions for capture devices (the node needs device_port set)."""


@session.command("create")
@client_options
@click.option("--id", "id_number", required=True, help="18-character ID number (stays on the server).")
@click.option("--name", required=True, help="Name as on the ID document (stays on the server).")
@click.option("--purpose", type=click.Choice(["registration", "licence_renewal", "check_in"]),
              default="check_in", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (with the token and actions).")
def session_create(id_number: str, name: str, purpose: str, as_json: bool, **conn) -> None:
    """Open a session; prints its id and the capture URL to open on the device."""
    import grpc

    with _client(**conn) as client:
        try:
            opened = client.create_session(id_number, name, purpose)
        except grpc.RpcError as error:
            raise _rpc_failure(error) from None
    if as_json:
        click.echo(json.dumps({"session_id": opened.session_id, "capture_url": opened.capture_url,
                               "capture_token": opened.capture_token, "actions": list(opened.actions),
                               "expires_at_unix": opened.expires_at_unix, "frame_count": opened.frame_count}))
        return
    click.echo(f"session {opened.session_id}")
    click.echo(f"open on the device before it expires: {opened.capture_url}")


@session.command("result")
@client_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.argument("session_id")
def session_result(session_id: str, as_json: bool, **conn) -> None:
    """The session's state and verdict. Exit 0 on PASS, 1 on FAIL, 2 while pending, 3 expired/refused."""
    import grpc

    with _client(**conn) as client:
        try:
            result = client.session_result(session_id)
        except grpc.RpcError as error:
            raise _rpc_failure(error) from None
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    elif result.state == "COMPLETED":
        click.echo(f"{result.verdict} ({result.reason}) request {result.request_id}")
    else:
        click.echo(result.state + (f" ({result.refusal})" if result.refusal else ""))
    codes = {"COMPLETED": 0 if result.verdict == "PASS" else 1, "PENDING": 2}
    sys.exit(codes.get(result.state, 3))


# ------------------------------------------------- check-in credentials (issue 18)
@main.group()
def credential() -> None:
    """Check-in credentials: the QR code a person shows at a hotel or internet-café desk."""


@credential.command("redeem")
@client_options
@click.option("--image", "image", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A photo or screenshot of the QR code, instead of CODE.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.argument("code", required=False)
def credential_redeem(code: str | None, image: Path | None, as_json: bool, **conn) -> None:
    """Exchange a check-in code, once, for the verified identity (caller scope `redeem`).

    Exit 0 with the identity; 1 when the code is not valid (unknown, used or expired alike)."""
    import grpc

    from idv.credential_qr import QrNotFound, decode_qr_image

    if (code is None) == (image is None):
        raise click.UsageError("give either CODE or --image")
    if image is not None:
        try:
            code = decode_qr_image(image)
        except QrNotFound as exc:
            raise click.ClickException(str(exc)) from None
    with _client(**conn) as client:
        try:
            redeemed = client.redeem_credential(code or "")
        except grpc.RpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                click.echo("not valid: unknown, already used or expired", err=True)
                sys.exit(1)
            raise _rpc_failure(error) from None
    if as_json:
        click.echo(json.dumps(redeemed.as_dict(), ensure_ascii=False))
        return
    click.echo(f"{redeemed.name} {redeemed.id_number} {redeemed.purpose} level {redeemed.level} "
               f"verified at {redeemed.verified_at_unix:.0f} (verification {redeemed.verification_request_id})")


def _bulk_items(source: Path) -> list[tuple[str, str, list[Path]]]:
    """(id, name, images) from a CSV (id_number,name,image[;image...]) or a folder of
    `<ID>_<name>.<jpg|png>` files or `<ID>_<name>/` sub-folders."""
    import csv

    items: list[tuple[str, str, list[Path]]] = []
    if source.is_file():
        with source.open(newline="", encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                images = [(source.parent / p.strip()) for p in row["image"].split(";") if p.strip()]
                items.append((row["id_number"], row["name"], images))
        return items
    for entry in sorted(source.iterdir()):
        stem = entry.stem if entry.is_file() else entry.name
        id_number, sep, name = stem.partition("_")
        if not sep:
            continue
        if entry.is_dir():
            images = sorted(p for p in entry.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        elif entry.suffix.lower() in (".jpg", ".jpeg", ".png"):
            images = [entry]
        else:
            continue
        items.append((id_number, name, images))
    return items


@main.command("enroll-bulk")
@client_options
@click.option("--replace", is_flag=True, help="Replace existing enrolments.")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
def enroll_bulk(source: Path, replace: bool, **conn) -> None:
    """Enroll many identities from a folder or a CSV, with progress; prints a summary of failures."""
    import grpc
    from tqdm import tqdm

    from idv.rpc.status import error_info

    items = _bulk_items(source)
    failures: list[tuple[str, str]] = []
    with _client(**conn) as client:
        for index, (id_number, name, images) in enumerate(tqdm(items, desc="enrolling", unit="id", file=sys.stderr)):
            try:
                client.enroll(id_number, name, [p.read_bytes() for p in images], replace=replace)
            except grpc.RpcError as error:
                info = error_info(error)
                # The row number, not the ID or name: the summary may be pasted into a ticket.
                failures.append((f"row {index + 1}", info.reason if info else error.code().name))
            except OSError as error:
                failures.append((f"row {index + 1}", f"unreadable image ({error.strerror})"))
    click.echo(f"enrolled {len(items) - len(failures)} of {len(items)}")
    for where, why in failures:
        click.echo(f"  {where}: {why}")
    if failures:
        sys.exit(1)


@main.command()
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--every", default=1, show_default=True, help="Use every n-th frame.")
@click.argument("video", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def signals(config: Path | None, every: int, video: Path) -> None:
    """Print the per-frame action signals (yaw, pitch, eyes, mouth) of a video file."""
    from idv.models.model_set import load_models
    from liveness.actions import ActionConfig, find_events
    from liveness.video_signals import signals_for_video

    settings = _settings(config)
    models = load_models(_manifest(settings), settings.models, liveness=False, actions=True)
    if models.facemesh is None:
        raise click.ClickException("the model manifest has no FaceMesh model: action signals need it")
    rows = signals_for_video(video, models.detector, models.facemesh, every_nth=every)
    click.echo(f"{'frame':>6} {'yaw':>7} {'pitch':>7} {'eyes':>6} {'mouth':>6}")
    for row in rows:
        if not row.face_found:
            click.echo(f"{row.frame_index:>6}   no face")
            continue
        click.echo(f"{row.frame_index:>6} {row.yaw:>7.3f} {row.pitch:>7.3f} {row.eye_openness:>6.3f} "
                   f"{row.mouth_opening:>6.3f}")
    events = find_events(rows, ActionConfig())
    # Event positions index the sampled rows; print the video's own frame numbers.
    spans = [f"{e.action.value}@{rows[e.start].frame_index}-{rows[e.end].frame_index}" for e in events]
    click.echo("events (frames): " + (", ".join(spans) or "none"))


# ------------------------------------------------------------------ keys, tls
@main.group()
def keys() -> None:
    """Caller credentials, attested terminals and data-at-rest keys."""


@keys.command("add-caller")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--scope", "scopes", multiple=True, required=True,
              help="verify:registration | verify:licence_renewal | verify:check_in | verify:* | enroll | admin | redeem")
@click.option("--display-name", default="", help="What people see in their verification history (issue 18).")
@click.argument("name")
def keys_add_caller(config: Path | None, data_dir: Path | None, scopes: tuple[str, ...], name: str,
                    display_name: str) -> None:
    """Create a caller and print its API key once (only its hash is stored). Restart the node to load it."""
    from idv.security.callers import add_caller

    settings = _settings(config, data_dir=data_dir)
    try:
        key = add_caller(settings.store.callers_path, name, list(scopes), display_name)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(key)


@keys.command("new-terminal")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True,
              help="Folder for <name>.key (private, 0600) and <name>.pub (public, PEM).")
@click.argument("name")
def keys_new_terminal(out: Path, name: str) -> None:
    """Make an Ed25519 key pair for an attested terminal (issue 14). The private key stays on the
    terminal; register the public one on the node with `idv keys add-terminal`."""
    from idv.security.terminals import TerminalsFileError, new_terminal_keypair

    try:
        new_terminal_keypair(out / f"{name}.key", out / f"{name}.pub")
    except TerminalsFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"private key {out / f'{name}.key'}")
    click.echo(f"public key  {out / f'{name}.pub'}")


@keys.command("add-terminal")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--caller", required=True, help="The caller whose Verify calls (or sessions) the terminal signs.")
@click.option("--terminal-id", required=True, help="The id the terminal sends with its signature.")
@click.argument("pubkey_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def keys_add_terminal(config: Path | None, data_dir: Path | None, caller: str, terminal_id: str,
                      pubkey_file: Path) -> None:
    """Register an attested terminal's Ed25519 public key (PEM or base64). A running node picks it up
    when the terminals file changes; no restart."""
    from idv.security.terminals import TerminalsFileError, add_terminal, read_public_key

    settings = _settings(config, data_dir=data_dir)
    try:
        added = add_terminal(settings.store.terminals_path, caller, terminal_id, read_public_key(pubkey_file))
    except TerminalsFileError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"terminal {added.terminal_id} of caller {added.caller} registered (key {added.fingerprint})")


@keys.command("list-terminals")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def keys_list_terminals(config: Path | None, data_dir: Path | None) -> None:
    """The registered terminals: caller, terminal id and key fingerprint."""
    from idv.security.terminals import TerminalsFileError, parse_terminals

    settings = _settings(config, data_dir=data_dir)
    try:
        terminals = parse_terminals(settings.store.terminals_path)
    except TerminalsFileError as exc:
        raise click.ClickException(str(exc)) from None
    for t in terminals:
        click.echo(f"{t.caller}\t{t.terminal_id}\t{t.fingerprint}")
    if not terminals:
        click.echo("no terminals registered")


@keys.command("remove-terminal")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--caller", required=True)
@click.option("--terminal-id", required=True)
def keys_remove_terminal(config: Path | None, data_dir: Path | None, caller: str, terminal_id: str) -> None:
    """Unregister a terminal; a running node refuses its signatures once the file changes."""
    from idv.security.terminals import TerminalsFileError, remove_terminal

    settings = _settings(config, data_dir=data_dir)
    try:
        removed = remove_terminal(settings.store.terminals_path, caller, terminal_id)
    except TerminalsFileError as exc:
        raise click.ClickException(str(exc)) from None
    if not removed:
        raise click.ClickException(f"no terminal {terminal_id!r} of caller {caller!r}")
    click.echo(f"terminal {terminal_id} of caller {caller} removed")


@keys.command("rotate")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
def keys_rotate(config: Path | None, data_dir: Path | None) -> None:
    """Add a new data key and re-encrypt every template under it, while the node keeps serving."""
    from idv.keys import add_data_key, load_keyring
    from idv.assemble import open_reference_store
    from idv.references import ReferenceVault

    settings = _settings(config, data_dir=data_dir)
    key_id = add_data_key(settings.store.data_dir)
    store = open_reference_store(settings)
    try:
        touched = ReferenceVault(store, load_keyring(settings.store.data_dir, create=False)).reencrypt_all()
    finally:
        store.close()
    click.echo(f"data key {key_id} is current; re-encrypted {touched} identities")


@main.group()
def tls() -> None:
    """TLS certificates."""


@tls.command("dev-ca")
@click.option("--out", type=click.Path(path_type=Path, file_okay=False), required=True)
@click.option("--host", "hosts", multiple=True, default=("127.0.0.1", "localhost"), show_default=True)
@click.option("--days", default=30, show_default=True)
def tls_dev_ca(out: Path, hosts: tuple[str, ...], days: int) -> None:
    """Make a development CA with a server and a client certificate (for TLS and mutual TLS)."""
    from idv.security.devca import make_dev_pki

    pki = make_dev_pki(out, list(hosts), days=days)
    for label, path in (("CA", pki.ca_cert), ("server certificate", pki.server_cert), ("server key", pki.server_key),
                        ("client certificate", pki.client_cert), ("client key", pki.client_key)):
        click.echo(f"{label:20s} {path}")


# -------------------------------------------------------------------------- db
@main.group()
def db() -> None:
    """The reference store's schema (PostgreSQL)."""


@db.command("migrate")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
def db_migrate(config: Path | None) -> None:
    """Apply pending schema migrations to the PostgreSQL store named by the `store` setting."""
    from idv.errors import StoreUnavailable
    from idv.store.postgres import PostgresReferenceStore

    settings = _settings(config)
    if settings.store.kind != "postgresql":
        click.echo("store is the embedded SQLite file: its schema is created and upgraded on start")
        return
    try:
        store = PostgresReferenceStore(settings.store.postgres(), migrate=False, require_current=False)
        try:
            applied = store.migrate()
            version = store.schema_version()
        finally:
            store.close()
    except StoreUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    for name in applied:
        click.echo(f"applied {name}")
    click.echo(f"schema {settings.store.postgres_schema} is at version {version}")


# ----------------------------------------------------------------------- audit
@main.group()
def audit() -> None:
    """The decision audit log."""


@audit.command("verify")
@click.option("--config", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None)
@click.option("--log", "log_path", type=click.Path(path_type=Path, dir_okay=False), default=None)
def audit_verify(config: Path | None, data_dir: Path | None, log_path: Path | None) -> None:
    """Check the audit log's hash chain; exit 1 and name the first bad line if it was tampered with."""
    from idv.audit import verify_audit_log
    from idv.keys import load_audit_key

    settings = _settings(config, data_dir=data_dir)
    path = log_path or settings.store.audit_path
    if not path.exists():
        raise click.ClickException(f"no audit log at {path}")
    result = verify_audit_log(path, load_audit_key(settings.store.data_dir, create=False))
    if result.ok:
        click.echo(f"ok: {result.records} records, chain intact")
        return
    click.echo(f"TAMPERED: line {result.first_bad_line}: {result.problem} ({result.records} records verified before it)")
    sys.exit(1)


# ------------------------------------------------------------------------ eval
@main.group()
def eval() -> None:  # noqa: A001 (the command is called `idv eval`)
    """Accuracy evaluations; results as JSON and plots (see benchmarks/README.md)."""


_PASSTHROUGH = {"ignore_unknown_options": True, "help_option_names": []}


@eval.command("verification", context_settings=_PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def eval_verification(args: tuple[str, ...]) -> None:
    """LFW (folds, all-vs-all FNMR at FMR 1e-3..1e-5) and NUAA ID-photo vs live; --help for options."""
    from idv.evaluation.verification_run import main as run

    sys.exit(run(list(args), echo=click.echo))


@eval.command("demographics", context_settings=_PASSTHROUGH)
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def eval_demographics(args: tuple[str, ...]) -> None:
    """East-Asian / ID-photo calibration and FMR/FNMR per group (issue 15); --help for options."""
    from idv.evaluation.demographics_run import main as run

    sys.exit(run(list(args), echo=click.echo))


@eval.command("light")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--model-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Where the pulled models are (IDV_MODEL_DIR).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_light(directory: Path, config_file: Path | None, model_dir: Path | None, as_json: bool) -> None:
    """The light check on record-mode captures (issue 14): BPCER on the genuine ones, APCER per attack
    species, with counts and 95% Clopper-Pearson intervals."""
    from idv.evaluation.light_recordings import (
        LightRecordingError,
        build_pipeline,
        evaluate,
        load_recordings,
        report_json,
        report_lines,
    )
    from idv.models.runtime import ModelLoadError

    settings = _settings(config_file, model_dir=model_dir)
    try:
        recordings = load_recordings(directory)  # every recording checked before the models load
        report = evaluate(recordings, build_pipeline(settings))
    except (LightRecordingError, ModelLoadError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report_json(report), indent=2))
    else:
        for line in report_lines(report):
            click.echo(line)


@eval.command("calibrate")
@click.argument("sample", type=click.Path(path_type=Path, exists=True))
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False))
@click.option("--data-dir", type=click.Path(path_type=Path), default=None, help="The node's data dir (IDV_DATA_DIR).")
@click.option("--write", is_flag=True, help="Write the proposed thresholds to the node's site thresholds file.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def eval_calibrate(sample: Path, config_file: Path | None, data_dir: Path | None, write: bool, as_json: bool) -> None:
    """Rates at the current thresholds on SAMPLE (a folder per person, or a CSV of id_photo,live pairs)
    and per-level thresholds proposed from it; --write makes the node use them (never the manifest)."""
    from idv.evaluation.site_calibration import (
        calibrate,
        load_site_models,
        report_json,
        report_lines,
        site_thresholds_from,
    )
    from idv.evaluation.site_sample import SiteSampleError, load_sample
    from idv.models.runtime import ModelLoadError
    from idv.site_thresholds import SiteThresholdsError, site_thresholds_path, write_site_thresholds

    import warnings

    # insightface's aligner warns about a skimage deprecation on every photo; it says nothing about results.
    warnings.filterwarnings("ignore", category=FutureWarning)
    settings = _settings(config_file, data_dir=data_dir)
    try:
        loaded = load_sample(sample)
        models = load_site_models(settings)
        report = calibrate(loaded, models)
    except (SiteSampleError, SiteThresholdsError, ModelLoadError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(report_json(report), indent=2))
    else:
        for line in report_lines(report):
            click.echo(line)
    if write:
        proposed = report.proposed()
        if settings.models.security_level not in proposed:
            need = next(lv for lv in report.levels if lv.level == settings.models.security_level)
            raise click.ClickException(f"not written: the node's security level {settings.models.security_level} "
                                       f"has no proposal ({need.note})")
        target = site_thresholds_path(settings.models.site_thresholds_file, settings.store.data_dir)
        write_site_thresholds(target, site_thresholds_from(report, models))
        click.echo(f"wrote {', '.join(f'{k}={v:.4f}' for k, v in proposed.items())} to {target}; "
                   "the node uses them from its next start")


# ---------------------------------------------------------------------- config
@main.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False))
def config_show(config_file: Path | None) -> None:
    """Print the effective settings by section (defaults < file < IDV_* environment), secrets masked."""
    from dataclasses import asdict

    from idv.models.manifest import ManifestError
    from idv.models.model_set import manifest_for
    from idv.site_thresholds import (
        SiteThresholdsError,
        effective_threshold,
        load_site_thresholds,
        shipped_thresholds,
        site_thresholds_path,
    )

    settings = _settings(config_file)
    shown = masked(settings)
    # issue 15: the site calibration the node will apply at start, if any.
    site_path = site_thresholds_path(settings.models.site_thresholds_file, settings.store.data_dir)
    site = None
    try:
        site = load_site_thresholds(site_path)
        shown["site_thresholds"] = {"file": str(site_path), **asdict(site)} if site else None
    except SiteThresholdsError as exc:
        shown["site_thresholds"] = {"file": str(site_path), "error": str(exc)}
    # The thresholds the node compares at for its security level, per number of reference photos
    # an identity was enrolled with (idv/reference_thresholds.py). The site file's recognizer is
    # checked against the loaded model at start, not here.
    level = settings.models.security_level
    try:
        shipped = shipped_thresholds(manifest_for(settings.models), settings.models)
        effective = effective_threshold(shipped, "recognizer_threshold" if settings.models.recognizer_file
                                        else "manifest", level, site.recognizer if site else "", site)
        shown["thresholds"] = {"security_level": level, "source": effective.source,
                               "by_reference_photos": effective.references.shown(),
                               "shipped_by_reference_photos": shipped.shown()}
    except (ManifestError, SiteThresholdsError, OSError) as exc:
        shown["thresholds"] = {"security_level": level, "error": str(exc)}
    click.echo(json.dumps(shown, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
