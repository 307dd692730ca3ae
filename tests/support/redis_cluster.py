"""A real Redis Cluster on loopback, owned by a test or a benchmark: Debian's ``redis-server
--cluster-enabled yes``, three masters by default (optionally one replica each), joined with
``redis-cli --cluster create ... --cluster-yes``.

Every node is a :class:`~tests.support.redis_server.RedisServer`, so it is spawned through
hack/processes.py and dies with the process that started it, however that ends. The helpers
move a slot (:meth:`RedisClusterNodes.migrate_slot`, the steps ``redis-cli --cluster reshard``
takes) and fail a master over (:meth:`RedisClusterNodes.failover`), for the tests that do so mid-run.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from dataclasses import dataclass
from typing import Any

import redis

from hack.net import port_is_free
from hack.polling import Deadline
from tests.support.redis_server import INSTALL_HINT, RedisServer

#: A cluster node also listens on its port + 10000 (the cluster bus), so its port is at most 55535.
BUS_OFFSET = 10000


def cluster_port(taken: set[int]) -> int:
    """A free port whose bus port (+ :data:`BUS_OFFSET`) is free too."""
    for _ in range(1000):
        port = random.randint(20000, 55535)
        if port not in taken and port_is_free(port) and port_is_free(port + BUS_OFFSET):
            taken.add(port)
            return port
    raise RuntimeError("no free port pair for a Redis Cluster node")


def _cmd(c: redis.Redis | redis.client.Pipeline, *args: Any) -> Any:
    """``c.execute_command(*args)`` (untyped in redis-py)."""
    return c.execute_command(*args)  # type: ignore[no-untyped-call]


#: Milliseconds a node may not answer before the others fail it (short: the tests wait for it).
NODE_TIMEOUT_MS = 1500


@dataclass(frozen=True)
class Slots:
    """Which master serves which slots."""

    port: int
    ranges: tuple[tuple[int, int], ...]


class RedisClusterNodes:
    """``masters`` masters with ``replicas`` replicas each; start with :meth:`start`, :meth:`cleanup` at the end."""

    def __init__(self, masters: int = 3, replicas: int = 0, aof: bool = False, password: str | None = None) -> None:
        cli = shutil.which("redis-cli")
        if cli is None:
            raise RuntimeError(f"redis-cli not found on PATH: {INSTALL_HINT}")
        self.cli = cli
        self.masters_wanted = masters
        self.replicas = replicas
        #: Every node's ``requirepass`` (and ``masterauth``, for its replicas), when given.
        self.password = password
        self.nodes: list[RedisServer] = []
        taken: set[int] = set()
        for _ in range(masters * (1 + replicas)):
            node = RedisServer(aof=aof, port=cluster_port(taken))
            node.extra_args = (
                "--cluster-enabled", "yes",
                "--cluster-config-file", str(node.dir / "nodes.conf"),
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica takes over however long it was cut off (the tests kill masters).
                "--cluster-replica-validity-factor", "0",
                *(("--requirepass", password, "--masterauth", password) if password else ()),
            )
            self.nodes.append(node)

    @property
    def ports(self) -> list[int]:
        return [n.port for n in self.nodes if n.proc is not None]

    @property
    def url(self) -> str:
        """A ``redis+cluster://`` URL naming every node (a client needs one that answers)."""
        auth = f":{self.password}@" if self.password else ""
        return f"redis+cluster://{auth}" + ",".join(f"127.0.0.1:{p}" for p in self.ports)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=port, password=self.password, decode_responses=True,
                           socket_timeout=5)

    def start(self) -> RedisClusterNodes:
        for node in self.nodes:
            node.start()
        if self.masters_wanted >= 3:
            subprocess.run(
                [self.cli, "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                 "--cluster-replicas", str(self.replicas), "--cluster-yes",
                 *(("-a", self.password, "--no-auth-warning") if self.password else ())],
                check=True, capture_output=True, timeout=60,
            )
        else:  # redis-cli creates clusters of three masters or more: a smaller one by hand
            if self.replicas:
                raise ValueError("replicas need three masters or more here")
            first = self.client(self.nodes[0].port)
            for node in self.nodes[1:]:
                _cmd(first, "CLUSTER", "MEET", "127.0.0.1", node.port)
            share = 16384 // len(self.nodes)
            for i, node in enumerate(self.nodes):
                end = 16383 if i == len(self.nodes) - 1 else (i + 1) * share - 1
                _cmd(self.client(node.port), "CLUSTER", "ADDSLOTSRANGE", i * share, end)
        self.wait_healthy()
        return self

    def wait_healthy(self, timeout: float = 30) -> None:
        """Until every live node says the cluster is ``ok``, knows every live node, and every
        replica has synced with its master."""
        deadline = Deadline(timeout, "the Redis Cluster to be ok on every node")
        while not deadline.passed():
            if self._healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(str(deadline.fail()))

    def _healthy(self) -> bool:
        for port in self.ports:
            try:
                c = self.client(port)
                info = _cmd(c, "CLUSTER", "INFO")
                text = info if isinstance(info, str) else info.decode()
                fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
                if fields.get("cluster_state") != "ok" or fields.get("cluster_slots_assigned") != "16384":
                    return False
                repl = c.info("replication")
                if repl.get("role") == "slave" and repl.get("master_link_status") != "up":
                    return False
            except redis.RedisError:
                return False
        return True

    def slots(self) -> list[Slots]:
        """Every master and its slot ranges, as the first live node sees them."""
        reply = _cmd(self.client(self.ports[0]), "CLUSTER", "SLOTS")
        by_port: dict[int, list[tuple[int, int]]] = {}
        for entry in reply:
            start, end, master = int(entry[0]), int(entry[1]), entry[2]
            by_port.setdefault(int(master[1]), []).append((start, end))
        return [Slots(port, tuple(sorted(r))) for port, r in sorted(by_port.items())]

    def key_slot(self, key: str) -> int:
        return int(_cmd(self.client(self.ports[0]), "CLUSTER", "KEYSLOT", key))

    def master_of(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for s in self.slots():
            if any(a <= slot <= b for a, b in s.ranges):
                return s.port
        raise LookupError(f"slot {slot} unassigned")

    def replica_of(self, master_port: int) -> int:
        master_id = self.node_id(master_port)
        for port in self.ports:
            if port == master_port:
                continue
            repl = self.client(port).info("replication")
            if repl.get("role") == "slave" and int(repl.get("master_port", 0)) == master_port:
                return port
            _ = master_id
        raise LookupError(f"no replica of {master_port}")

    def node_id(self, port: int) -> str:
        return str(_cmd(self.client(port), "CLUSTER", "MYID"))

    def migrate_slot(self, slot: int, to_port: int) -> int:
        """Move ``slot`` to the master on ``to_port`` while clients use it: ``IMPORTING`` on the
        target, then on the source ``MIGRATING`` and one ``MIGRATE`` of every key of the slot in
        one ``MULTI``/``EXEC`` (no command of any client runs between them: a script either ran
        wholly before, or finds no key of the slot left on the source at its first access and is
        sent on with ``ASK``), then the keys created in the one round trip between the listing and
        the ``EXEC`` (if any), then ``SETSLOT NODE`` on every master. Returns the keys moved.

        Not ``redis-cli --cluster reshard``'s batches: a Lua script that meets a slot half moved
        stops at the first key already gone, after its earlier writes (Redis does not roll a
        script back), which can leave a job half-written (docs/scaling-out.md, *Moving a slot*)."""
        from_port = self.master_of(slot)
        if from_port == to_port:
            return 0
        source, target = self.client(from_port), self.client(to_port)
        target_id, source_id = self.node_id(to_port), self.node_id(from_port)
        _cmd(target, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        keys = _cmd(source, "CLUSTER", "GETKEYSINSLOT", slot, 1_000_000)
        with source.pipeline(transaction=True) as tx:
            _cmd(tx, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
            if keys:
                auth = ("AUTH", self.password) if self.password else ()
                _cmd(tx, "MIGRATE", "127.0.0.1", to_port, "", 0, 10_000, "REPLACE", *auth, "KEYS", *keys)
            tx.execute()
        # A key created in the round trip between the listing and the EXEC is still on the source;
        # the slot is MIGRATING now, so no other can appear there: move those at once too.
        while left := _cmd(source, "CLUSTER", "GETKEYSINSLOT", slot, 1000):
            auth = ("AUTH", self.password) if self.password else ()
            _cmd(source, "MIGRATE", "127.0.0.1", to_port, "", 0, 10_000, "REPLACE", *auth, "KEYS", *left)
            keys += left
        for s in self.slots():
            _cmd(self.client(s.port), "CLUSTER", "SETSLOT", slot, "NODE", target_id)
        deadline = Deadline(20, f"every node to see slot {slot} on {to_port}")
        while not deadline.passed():
            if all(self._sees(port, slot, to_port) for port in self.ports):
                return len(keys)
            time.sleep(0.05)
        raise RuntimeError(str(deadline.fail()))

    def _sees(self, port: int, slot: int, master_port: int) -> bool:
        for entry in _cmd(self.client(port), "CLUSTER", "SLOTS"):
            if int(entry[0]) <= slot <= int(entry[1]):
                return int(entry[2][1]) == master_port
        return False

    def failover(self, master_port: int, *, kill: bool = False) -> int:
        """Promote the replica of the master on ``master_port``: ``CLUSTER FAILOVER`` on it (a planned
        failover: the replica catches up first, nothing acknowledged is lost), or with ``kill`` a
        SIGKILL of the master (the replica takes over after the node timeout). Returns the new master's port."""
        replica = self.replica_of(master_port)
        if kill:
            node = next(n for n in self.nodes if n.port == master_port)
            node.stop(kill=True)
        else:
            _cmd(self.client(replica), "CLUSTER", "FAILOVER")
        deadline = Deadline(30, f"replica {replica} to take over from {master_port}")
        while not deadline.passed():
            try:
                if self.client(replica).info("replication").get("role") == "master" and self._healthy():
                    return replica
            except redis.RedisError:
                pass
            time.sleep(0.1)
        raise RuntimeError(str(deadline.fail()))

    def cleanup(self) -> None:
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> RedisClusterNodes:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
