"""A connection that dies without a word (a partition: no RST, no FIN) is noticed quickly.

A TCP relay between the agent and the server goes silent (bytes dropped, sockets left open),
then the network heals: old sessions are dead, new ones work. redis-py's defaults would wait
on the dead socket; the agent's client times out shortly after its block time and its own
backoff reconnects. Block and margin are shortened here so that the test takes a second.
"""

from __future__ import annotations

import asyncio
import contextlib

import pytest

from keyherald.issuer.admin import Admin
from keyherald.issuer.context import IssuerContext
from keyherald.shared.clock import ManualClock
from keyherald.verifier import follower, source

from .agent_kit import eventually, genesis, mint, refuses, running_agent

pytestmark = pytest.mark.redis


class Relay:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.silent = False
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return int(self._server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(ConnectionError, OSError):
                while data := await src.read(65536):
                    if not self.silent:
                        dst.write(data)
                        await dst.drain()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    def heal(self) -> None:
        """The partition ends: sessions that lived through it are gone, new ones work."""
        for writer in self._writers:
            writer.transport.abort()
        self._writers.clear()
        self.silent = False

    async def close(self) -> None:
        self.heal()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


async def test_a_silent_partition_is_noticed_and_healed(
    issuer_ctx: IssuerContext, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(follower, "BLOCK_MS", 200)
    monkeypatch.setattr(source, "BLOCK_MS", 200)
    monkeypatch.setattr(source, "SOCKET_MARGIN", 0.3)
    await genesis(issuer_ctx)
    host_port = issuer_ctx.settings.redis_url.split("//", 1)[1].split("/", 1)[0]
    host, _, port = host_port.rpartition(":")
    relay = Relay(host, int(port))
    relay_port = await relay.start()
    token = await mint(issuer_ctx, clock, jti="partitioned")
    try:
        async with running_agent(issuer_ctx, clock, redis_url=f"redis://127.0.0.1:{relay_port}/0") as agent:
            assert agent.status().connected
            relay.silent = True
            await eventually(lambda: not agent.status().connected, within=2, what="silent death noticed")
            assert refuses(agent, token) is None  # still validating from memory
            await Admin(issuer_ctx).revoke_token("partitioned", int(clock()) + 300)
            relay.heal()
            await eventually(lambda: refuses(agent, token) == "revoked", within=3, what="caught up after heal")
            assert agent.status().connected and agent.status().disconnects == 1
    finally:
        await relay.close()
