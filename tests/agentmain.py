"""A VerifierAgent in a process of its own, for tests that run a fleet the way services do.

    python -m tests.agentmain            # settings from KEYHERALD_* variables

It prints one JSON line when it is ready (``{"ready": true}``) or could not start
(``{"ready": false, "error": ...}``), then answers one JSON line per request line on stdin:
``{"verify": TOKEN}`` -> ``{"ok": true, "jti": ...}`` or ``{"ok": false, "reason": ...}``;
``{"status": true}`` -> the agent's status; ``{"metrics": true}`` -> ``{"text": ...}``, the
Prometheus exposition of its AgentCollector; ``{"stop": true}`` stops it. Logs go to stderr
in the format KEYHERALD_LOG_FORMAT names.
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest

from keyherald.verifier import BootstrapError, InvalidToken, VerifierAgent, VerifierSettings, configure_logging
from keyherald.verifier.metrics import AgentCollector


def _say(doc: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(doc, default=str) + "\n")
    sys.stdout.flush()


async def main() -> None:
    configure_logging()
    agent = VerifierAgent(VerifierSettings())
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    try:
        await agent.start()
    except BootstrapError as exc:
        _say({"ready": False, "error": str(exc)})
        return
    _say({"ready": True})
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        while line := await reader.readline():
            request = json.loads(line)
            if "verify" in request:
                try:
                    claims = agent.verify(request["verify"])
                    _say({"ok": True, "jti": claims.get("jti"), "sub": claims.get("sub")})
                except InvalidToken as exc:
                    _say({"ok": False, "reason": exc.reason})
            elif "status" in request:
                status = agent.status().as_dict()
                status["max_staleness"] = None if status["max_staleness"] in (None, float("inf")) else \
                    status["max_staleness"]
                _say(status)
            elif "metrics" in request:
                _say({"text": generate_latest(registry).decode()})
            elif "stop" in request:
                break
    finally:
        await agent.stop()
        _say({"stopped": True})


if __name__ == "__main__":
    asyncio.run(main())
