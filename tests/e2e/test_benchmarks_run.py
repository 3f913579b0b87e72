"""The propagation and issuing benchmarks must not rot (their timings are not asserted here)."""

from __future__ import annotations

import asyncio

import pytest

pytestmark = pytest.mark.redis


def test_the_propagation_benchmark_measures_agents_and_bare_loops(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bench import propagation

    monkeypatch.setenv("KEYHERALD_TEST_REDIS_URL", redis_url)
    table = asyncio.run(propagation.run([1, 3], 0.01))
    rows = [line for line in table.splitlines() if line.startswith("| 1 ") or line.startswith("| 3 ")]
    assert len(rows) == 2, table
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        bare_p50, lean_p50, agent_p50 = (float(cells[i].split(" / ")[0]) for i in (2, 3, 4))
        assert 0 < bare_p50 < 1000 and 0 < lean_p50 < 1000 and 0 < agent_p50 < 1000


def test_the_cli_startup_benchmark_runs_the_real_command(redis_url: str) -> None:
    """One run of each command; the bench itself refuses a revoke that loads FastAPI,
    uvicorn or FastStream, or that fails."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    bench = Path(__file__).resolve().parents[2] / "bench" / "cli_startup.py"
    done = subprocess.run([sys.executable, str(bench), "--runs", "1"], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "KEYHERALD_TEST_REDIS_URL": redis_url}, check=False)
    assert done.returncode == 0, done.stderr
    assert "keyherald revoke subject orders" in done.stdout and "python -c pass" in done.stdout
    assert "keyherald.issuer" in done.stdout  # the heaviest imports are listed


def test_the_issuing_benchmark_drives_the_real_command_with_wrk() -> None:
    """One short block of the free-core scenario, keyherald alone (the peer needs Node 22 from
    the registry); the bench itself fails on any answer but a 200. Then the step profile."""
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    if shutil.which("wrk") is None:
        pytest.fail("needs wrk (apt-get install wrk; .ci/run installs it)")
    bench = Path(__file__).resolve().parents[2] / "bench"
    done = subprocess.run([sys.executable, str(bench / "issue.py"), "--scenarios", "free-16", "--seconds", "1",
                           "--rounds", "1"], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| free-16 | keyherald")]
    assert len(rows) == 1, done.stdout
    assert "µs" in rows[0] and "Redis" in rows[0]
    profile = subprocess.run([sys.executable, str(bench / "issue_profile.py"), "--rounds", "1", "--seconds", "0.02",
                              "--load-seconds", "1"], capture_output=True, text=True, timeout=120, check=False)
    assert profile.returncode == 0, profile.stderr
    assert "ES256 signature" in profile.stdout and "served, 16 connections" in profile.stdout


def test_the_revocations_benchmark_measures_issuer_and_agent_store(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A smoke size of each figure (timings are not asserted): the agent figures come from
    fresh processes, beside the previous store."""
    from bench import revocations

    monkeypatch.setenv("KEYHERALD_TEST_REDIS_URL", redis_url)
    table = asyncio.run(revocations.run([500], 6, runs=1))
    rows = [line for line in table.splitlines() if line.startswith("| 500")]
    assert len(rows) == 2, table
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[1].count(" / ") == 1 and "s (" in cells[2] and cells[3].endswith(" ms") and " MB, " in cells[3]
    assert cells[4].endswith("ms") and " B / " in cells[5] and cells[6].endswith("ns")
    assert "previous agent store" in rows[1]


def test_the_fleet_scale_benchmark_runs_agents_in_processes_on_the_primary_and_on_replicas() -> None:
    """A small fleet (8 agents in 4 processes), both layouts: every agent applies every
    revocation, and the servers' figures are read (their values are not asserted)."""
    from bench import fleet_scale

    results = asyncio.run(fleet_scale.run(8, 4, 3, quick=True))
    assert [r["layout"] for r in results] == ["primary", "2 replicas"]
    for result in results:
        assert result["missing"] == 0 and result["p50_ms"] > 0
        servers = result["servers"]
        assert set(servers) == {"primary", "replica-0", "replica-1"}
    on_primary, on_replicas = (r["servers"] for r in results)
    # Where the agents' connections are is what the layouts differ by: all on the primary,
    # then none there (the issuer's and this bench's own remain).
    assert on_primary["primary"]["connections"] >= 8 > on_replicas["primary"]["connections"]
    assert on_replicas["replica-0"]["connections"] + on_replicas["replica-1"]["connections"] >= 8
    assert "| 2 replicas | 8 / 4 |" in fleet_scale.table(results)
