"""The `idv` command line: serve, models, enroll, verify, config."""

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
def serve(config: Path | None, host: str | None, port: int | None, data_dir: Path | None) -> None:
    """Serve the gRPC API until SIGTERM/SIGINT."""
    from idv.logs import configure_logging
    from idv.node import serve as run

    settings = _settings(config, host=host, port=port, data_dir=data_dir)
    configure_logging(settings.log_level)
    sys.exit(run(settings))


# ---------------------------------------------------------------------- models
@main.group()
def models() -> None:
    """Pull, verify and list the pinned models."""


def _manifest(settings: Settings):
    from idv.models.manifest import DEFAULT_MANIFEST, load_manifest

    return load_manifest(settings.model_manifest or DEFAULT_MANIFEST)


def _served_names(settings: Settings) -> list[str]:
    manifest = _manifest(settings)
    names = list(manifest.pack(settings.model_pack).values())
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
            pulled = pull_models(manifest, names, settings.model_dir, settings.model_mirror,
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
        path = settings.model_dir / entry.file
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
def _client(target: str, timeout: float):
    from idv.client import IdvClient

    return IdvClient(target, timeout=timeout, api_key=os.environ.get("IDV_API_KEY"))


def _rpc_failure(error) -> click.ClickException:
    from idv.rpc.status import error_info

    info = error_info(error)
    reason = f" [{info.reason}]" if info else ""
    return click.ClickException(f"{error.code().name}{reason}: {error.details()}")


@main.command()
@click.option("--target", default="127.0.0.1:50051", show_default=True)
@click.option("--id", "id_number", required=True, help="18-character ID number.")
@click.option("--name", required=True)
@click.option("--replace", is_flag=True, help="Replace an existing enrolment.")
@click.option("--timeout", default=30.0, show_default=True)
@click.argument("images", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def enroll(target: str, id_number: str, name: str, replace: bool, timeout: float, images: tuple[Path, ...]) -> None:
    """Enroll an identity from reference photos."""
    import grpc

    with _client(target, timeout) as client:
        try:
            result = client.enroll(id_number, name, [p.read_bytes() for p in images], replace=replace)
        except grpc.RpcError as error:
            raise _rpc_failure(error) from None
    click.echo(f"enrolled: {result.template_count} template(s), request {result.request_id}")


@main.command()
@click.option("--target", default="127.0.0.1:50051", show_default=True)
@click.option("--id", "id_number", required=True)
@click.option("--name", required=True)
@click.option("--purpose", type=click.Choice(["registration", "licence_renewal", "check_in"]),
              default="check_in", show_default=True)
@click.option("--challenge", "challenge_id", default="", help="Challenge id from `idv challenge`.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--timeout", default=30.0, show_default=True)
@click.argument("frames", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify(target: str, id_number: str, name: str, purpose: str, challenge_id: str, as_json: bool, timeout: float,
           frames: tuple[Path, ...]) -> None:
    """Verify live frames against an enrolled identity. Exit 0 on PASS, 1 on FAIL."""
    import grpc

    with _client(target, timeout) as client:
        try:
            result = client.verify(id_number, name, [p.read_bytes() for p in frames], purpose, challenge_id)
        except grpc.RpcError as error:
            raise _rpc_failure(error) from None
    if as_json:
        click.echo(json.dumps(result.as_dict()))
    else:
        click.echo(f"{result.verdict} ({result.reason}) request {result.request_id}")
    sys.exit(0 if result.verdict == "PASS" else 1)


# ---------------------------------------------------------------------- config
@main.group()
def config() -> None:
    """Inspect the effective configuration."""


@config.command("show")
@click.option("--config", "config_file", type=click.Path(path_type=Path, dir_okay=False))
def config_show(config_file: Path | None) -> None:
    """Print the effective settings (defaults < file < IDV_* environment), secrets masked."""
    settings = _settings(config_file)
    click.echo(json.dumps(masked(settings), indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
