"""Real processes for tests that run keyherald as it is deployed: issuer replicas
(``keyherald issuer run``), agents (``tests.agentmain``) and the ``keyherald`` command.

Each is a child of the test, started from KEYHERALD_* variables, stopped (or killed) when
the test ends: the fixtures ``fleet`` below keeps the list.
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

__all__ = [
    "AgentProcess",
    "Fleet",
    "IssuerProcess",
    "cli",
    "free_port",
    "wait_for",
]

T = TypeVar("T")
_CLI = [sys.executable, "-c", "from keyherald.issuer.cli import run; run()"]
FAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_for(predicate: Callable[[], T | None], timeout: float, what: str, every: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


def skewed(env: dict[str, str], seconds: float) -> dict[str, str]:
    """``env`` for a process whose wall clock runs ``seconds`` off (libfaketime); the
    monotonic clock is left alone."""
    if not os.path.exists(FAKETIME):
        pytest.fail("needs libfaketime (apt-get install faketime; .ci/run installs it)")
    return {**env, "LD_PRELOAD": FAKETIME, "FAKETIME": f"{seconds:+g}s", "FAKETIME_DONT_FAKE_MONOTONIC": "1",
            "FAKETIME_NO_CACHE": "1"}


def cli(
    env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``keyherald ARGS...`` as an operator runs it."""
    return subprocess.run([*_CLI, *args], env=env, input=stdin, capture_output=True, text=True, timeout=timeout,
                          check=False)


class IssuerProcess:
    """``keyherald issuer run``; ``url`` is its HTTP API. One worker process unless ``env``
    says otherwise (KEYHERALD_WORKERS): tests that pause or kill "the replica" mean one
    process."""

    def __init__(self, env: dict[str, str], *, port: int | None = None) -> None:
        self.port = port or free_port()
        self.env = {"KEYHERALD_WORKERS": "1", **env, "KEYHERALD_HTTP_PORT": str(self.port)}
        # Its logs go to a file: a pipe nobody reads would block the process once full.
        self._log = tempfile.NamedTemporaryFile(prefix="keyherald-issuer-", suffix=".log")
        self.proc = subprocess.Popen([*_CLI, "issuer", "run"], env=self.env,
                                     stdout=subprocess.DEVNULL, stderr=self._log)
        self.url = f"http://127.0.0.1:{self.port}"

    def health(self) -> tuple[int, dict[str, Any]] | None:
        try:
            response = httpx.get(f"{self.url}/healthz", timeout=2)
        except httpx.HTTPError:
            return None
        return response.status_code, response.json()

    def wait_healthy(self, timeout: float = 20) -> dict[str, Any]:
        def healthy() -> dict[str, Any] | None:
            if self.proc.poll() is not None:
                raise AssertionError(f"the issuer exited: {self.stderr()[-3000:]}")
            found = self.health()
            return found[1] if found and found[0] == 200 else None

        return wait_for(healthy, timeout, "a healthy issuer")

    def token(self, client_id: str, secret: str, **form: str) -> httpx.Response:
        return httpx.post(f"{self.url}/token", data={"grant_type": "client_credentials", **form},
                          auth=(client_id, secret), timeout=5)

    def stderr(self) -> str:
        """Its logs so far."""
        with open(self._log.name, "rb") as handle:
            return handle.read().decode(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class AgentProcess:
    """A VerifierAgent in a process of its own (tests.agentmain), driven one JSON line at a time."""

    def __init__(self, env: dict[str, str], *, wait: bool = True, timeout: float = 30) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.agentmain"], env=env, stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
        )
        self.ready: dict[str, Any] | None = None
        if wait:
            self.ready = self._read(timeout)

    @property
    def started(self) -> bool:
        return bool(self.ready and self.ready.get("ready"))

    def wait_ready(self, timeout: float) -> bool:
        """For an agent started with ``wait=False``: its start-up answer, within ``timeout``."""
        if self.ready is None:
            self.ready = self._read(timeout)
        return self.started

    def starting(self) -> bool:
        """Still starting: it has said nothing yet (ready or not)."""
        assert self.proc.stdout is not None
        return self.ready is None and not select.select([self.proc.stdout], [], [], 0)[0]

    def _read(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        readable, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not readable:
            raise AssertionError(f"the agent process said nothing within {timeout}s")
        line = self.proc.stdout.readline()
        if not line:
            raise AssertionError(f"the agent process ended: {self.proc.stderr.read() if self.proc.stderr else ''}")
        doc: dict[str, Any] = json.loads(line)
        return doc

    def ask(self, request: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return self._read(timeout)

    def refuses(self, token: str) -> str | None:
        """The refusal reason, or None when the token is accepted."""
        answer = self.ask({"verify": token})
        return None if answer["ok"] else str(answer["reason"])

    def status(self) -> dict[str, Any]:
        return self.ask({"status": True})

    def metrics(self) -> str:
        return str(self.ask({"metrics": True})["text"])

    def stderr(self) -> str:
        """What the process wrote to stderr (its logs), once it has ended."""
        if self.proc.poll() is None or self.proc.stderr is None:
            return ""
        return self.proc.stderr.read()

    def pause(self) -> None:
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.proc.poll() is not None:
            return
        self.resume()
        try:
            if self.started:
                self.ask({"stop": True}, timeout=10)
            self.proc.wait(10)
        except (AssertionError, OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait()


class Fleet:
    """Every process a test started; all stopped at its end."""

    def __init__(self) -> None:
        self.processes: list[IssuerProcess | AgentProcess] = []

    def issuer(self, env: dict[str, str], **kwargs: Any) -> IssuerProcess:
        process = IssuerProcess(env, **kwargs)
        self.processes.append(process)
        return process

    def agent(self, env: dict[str, str], **kwargs: Any) -> AgentProcess:
        process = AgentProcess(env, **kwargs)
        self.processes.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self.processes):
            process.stop()

