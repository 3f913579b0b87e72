"""``keyherald issuer run --workers N``: one port, N processes, one of them the replica proper.

Real processes, as deployed: the supervisor and its workers, the operator's command in
another process. Connections are spread by the kernel (SO_REUSEPORT), so each test opens
connections until it holds one to every worker (/healthz names the worker that answered).
"""

from __future__ import annotations

import http.client
import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from tests.e2e.deployment import Deployment
from tests.procs import Fleet, IssuerProcess, wait_for
from tests.tokenservice import basic

pytestmark = pytest.mark.redis

FORM = "grant_type=client_credentials"


@pytest.fixture
def deployment(redis_url: str, namespace: str, kek: str, tmp_path: Path) -> Deployment:
    return Deployment(redis_url, namespace, kek, tmp_path)


class Worker:
    """A keep-alive connection that one worker holds."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        health = self.get("/healthz")
        self.index: int = health["worker"]
        self.role: str = health["role"]

    def get(self, path: str) -> Any:
        self.conn.request("GET", path)
        response = self.conn.getresponse()
        return json.loads(response.read())

    def token(self, client_id: str, secret: str) -> tuple[int, dict[str, Any]]:
        headers = {**basic(client_id, secret), "Content-Type": "application/x-www-form-urlencoded"}
        self.conn.request("POST", "/token", body=FORM, headers=headers)
        response = self.conn.getresponse()
        return response.status, json.loads(response.read())

    def close(self) -> None:
        self.conn.close()


def each_worker(port: int, count: int, tries: int = 64) -> dict[int, Worker]:
    """One connection to each of ``count`` workers (2**-63 to miss one of two by chance)."""
    found: dict[int, Worker] = {}
    for _ in range(tries):
        worker = Worker(port)
        if worker.index in found:
            worker.close()
        else:
            found[worker.index] = worker
        if len(found) == count:
            break
    return found


def worker_pids(supervisor: int) -> dict[int, int]:
    """Worker index -> pid, from the supervisor's children's command lines."""
    found: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == supervisor and b"--worker" in argv:
            found[int(argv[argv.index(b"--worker") + 1].split(b":")[0])] = int(entry.name)
    return found


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.fixture
def two_workers(deployment: Deployment, fleet: Fleet) -> Iterator[IssuerProcess]:
    deployment.init()
    issuer = fleet.issuer(deployment.host("issuer-1", KEYHERALD_WORKERS="2"))
    issuer.wait_healthy()
    wait_for(lambda: len(worker_pids(issuer.proc.pid)) == 2, 20, "two workers")
    wait_for(lambda: _leading(issuer.port), 20, "worker 0 to lead")  # /healthz may come from worker 1 first
    yield issuer


def _leading(port: int) -> bool:
    workers = each_worker(port, 2)
    try:
        return 0 in workers and workers[0].role == "leader"
    finally:
        for worker in workers.values():
            worker.close()


def test_two_workers_serve_tokens_and_one_killed_leaves_the_other_serving(
    deployment: Deployment, two_workers: IssuerProcess
) -> None:
    secret = deployment.client("orders")
    workers = each_worker(two_workers.port, 2)
    assert sorted(workers) == [0, 1]
    # One leader election per host: worker 0 takes part, worker 1 only serves.
    assert workers[0].role == "leader" and workers[1].role == "follower"
    jwks = jwt.PyJWKSet.from_dict(httpx.get(f"{two_workers.url}/.well-known/jwks.json").json())
    for worker in workers.values():
        status, body = worker.token("orders", secret)
        assert status == 200, body
        token = body["access_token"]
        key = next(k for k in jwks.keys if k.key_id == jwt.get_unverified_header(token)["kid"])
        claims = jwt.decode(token, key=key, algorithms=["ES256"], audience="inventory", issuer=deployment.issuer)
        assert claims["sub"] == "orders"
        worker.close()

    pids = worker_pids(two_workers.proc.pid)
    os.kill(pids[1], signal.SIGKILL)
    wait_for(lambda: gone(pids[1]), 10, "worker 1 to be gone")
    for attempt in range(20):  # new connections: the living worker takes them all
        try:
            response = two_workers.token("orders", secret)
        except httpx.HTTPError as exc:
            two_workers.stop()
            raise AssertionError(f"request {attempt} after the kill: {exc!r}\n{two_workers.stderr()}") from None
        assert response.status_code == 200, response.text
    # The supervisor starts it again, and the port is served by two workers once more.
    wait_for(lambda: len(worker_pids(two_workers.proc.pid)) == 2, 20, "worker 1 started again")
    wait_for(lambda: sorted(each_worker(two_workers.port, 2)) == [0, 1], 20, "both workers serving")
    assert two_workers.proc.poll() is None


def test_every_worker_refuses_a_rotated_or_disabled_client_on_its_next_request(
    deployment: Deployment, two_workers: IssuerProcess
) -> None:
    """Each worker has checked and kept the client's record for its first token; the
    operator's command (another process) changes the client; every worker's next request
    sees the change, whatever it holds."""
    old = deployment.client("orders")
    workers = each_worker(two_workers.port, 2)
    assert sorted(workers) == [0, 1]
    for worker in workers.values():
        assert worker.token("orders", old)[0] == 200

    code, out, err = deployment.operator("clients", "rotate-secret", "orders", "--json")
    assert code == 0, err
    new = json.loads(out)["client_secret"]
    for worker in workers.values():
        status, body = worker.token("orders", old)
        assert (status, body["error"]) == (401, "invalid_client")
        assert worker.token("orders", new)[0] == 200

    code, _, err = deployment.operator("clients", "disable", "orders")
    assert code == 0, err
    for worker in workers.values():
        status, body = worker.token("orders", new)
        assert (status, body["error"]) == (400, "unauthorized_client")

    code, _, err = deployment.operator("clients", "enable", "orders")
    assert code == 0, err
    for worker in workers.values():
        assert worker.token("orders", new)[0] == 200
        worker.close()


def test_sigterm_stops_every_worker_and_a_bad_setting_stops_the_supervisor(
    deployment: Deployment, two_workers: IssuerProcess, fleet: Fleet
) -> None:
    pids = worker_pids(two_workers.proc.pid)
    two_workers.proc.send_signal(signal.SIGTERM)
    assert two_workers.proc.wait(20) == 0
    assert all(gone(pid) for pid in pids.values())

    broken = fleet.issuer(deployment.host("issuer-2", KEYHERALD_WORKERS="2", KEYHERALD_KEK="not-a-kek"))
    assert broken.proc.wait(30) == 2
    assert "KEYHERALD_KEK" in broken.stderr()
