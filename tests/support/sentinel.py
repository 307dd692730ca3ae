"""A real Redis master, its replica and three ``redis-sentinel`` processes on loopback.

For the failover tests: :meth:`SentinelSet.failover` asks the Sentinels for a failover
(``SENTINEL FAILOVER``, the planned kind: the old master is demoted and answers ``READONLY``
until its clients move), :meth:`SentinelSet.kill_master` SIGKILLs the master (the crash kind:
the Sentinels agree it is down and promote the replica), then brings the killed node back,
which the Sentinels turn into a replica of the new master. Both return once the Sentinels agree
on the new master and it has a replica again. ``url`` is a ``redis+sentinel://`` URL.

A missing ``redis-sentinel`` binary is a failure, never a skip (hack/ensure-prereqs.sh installs it).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import redis

from hack import processes
from hack.net import free_port
from hack.polling import Deadline, wait_for
from tests.support.redis_server import RedisServer

INSTALL_HINT = "run `bash hack/ensure-prereqs.sh` (it installs the Debian package redis-sentinel)"


class SentinelProcess:
    """One ``redis-sentinel`` watching ``master_name``."""

    def __init__(self, binary: str, master_name: str, master_port: int, *, quorum: int, down_after_ms: int,
                 failover_timeout_ms: int, password: str | None) -> None:
        self.binary = binary
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kw-sentinel-"))
        self.conf = self.dir / "sentinel.conf"
        # Sentinel rewrites its config file as it learns, so each has its own, writable.
        self.conf.write_text("\n".join([
            f"port {self.port}",
            "bind 127.0.0.1",
            f"dir {self.dir}",
            f"logfile {self.dir / 'sentinel.log'}",
            f"sentinel monitor {master_name} 127.0.0.1 {master_port} {quorum}",
            f"sentinel down-after-milliseconds {master_name} {down_after_ms}",
            f"sentinel failover-timeout {master_name} {failover_timeout_ms}",
            f"sentinel parallel-syncs {master_name} 1",
            *([f"sentinel auth-pass {master_name} {password}"] if password else []),
            "",
        ]))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = processes.spawn([self.binary, str(self.conf)], stdout=subprocess.DEVNULL,
                                    stderr=subprocess.STDOUT)
        deadline = Deadline(10, f"redis-sentinel to answer on port {self.port}")
        while not deadline.passed():
            if self.proc.poll() is not None:
                log = (self.dir / "sentinel.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-sentinel exited with {self.proc.returncode}:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(str(deadline.fail()))

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None
        shutil.rmtree(self.dir, ignore_errors=True)


class SentinelSet:
    """Master + ``replicas`` replicas + ``sentinels`` Sentinels (quorum 2). Use as a context manager.

    With ``password`` the nodes require it (and use it to replicate), the Sentinels know it, and
    ``url`` carries it; the Sentinels themselves take no password.
    """

    def __init__(self, master_name: str = "kw", *, replicas: int = 1, sentinels: int = 3,
                 down_after_ms: int = 1000, failover_timeout_ms: int = 4000, password: str | None = None) -> None:
        binary = shutil.which("redis-sentinel")
        if binary is None:
            raise RuntimeError(f"redis-sentinel not found on PATH: {INSTALL_HINT}")
        self.master_name = master_name
        self.password = password
        #: Every node's password arguments (it requires the password and replicates with it).
        self.auth_args = ("--requirepass", password, "--masterauth", password) if password else ()
        master = RedisServer(extra_args=self.auth_args)
        self.nodes: list[RedisServer] = [master] + [RedisServer(extra_args=self._replica_of(master.port))
                                                    for _ in range(replicas)]
        self.sentinels = [
            SentinelProcess(binary, master_name, master.port, quorum=2, down_after_ms=down_after_ms,
                            failover_timeout_ms=failover_timeout_ms, password=password)
            for _ in range(sentinels)
        ]

    def _replica_of(self, port: int) -> tuple[str, ...]:
        return (*self.auth_args, "--replicaof", "127.0.0.1", str(port))

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        auth = f":{self.password}@" if self.password else ""
        return f"redis+sentinel://{auth}{hosts}/{self.master_name}/0"

    def start(self) -> SentinelSet:
        for node in self.nodes:
            node.start()
        self.wait_replicas_linked()
        for s in self.sentinels:
            s.start()
        # Each Sentinel must know the replica and the other Sentinels before a failover can work.
        want_others = len(self.sentinels) - 1

        def sentinels_agree() -> bool:
            for s in self.sentinels:
                with s.client() as c:
                    info = c.sentinel_master(self.master_name)
                    if int(info["num-other-sentinels"]) < want_others or int(info["num-slaves"]) < len(self.nodes) - 1:
                        return False
            return True

        wait_for(sentinels_agree, timeout=30, what="the Sentinels to know each other and the replicas", every=0.1)
        return self

    # ------------------------------------------------------------------ who is who

    def master_port(self) -> int:
        """The master's port as the Sentinels say (the first that answers)."""
        for s in self.sentinels:
            try:
                with s.client() as c:
                    addr = c.sentinel_get_master_addr_by_name(self.master_name)
            except redis.RedisError:
                continue
            if addr:
                return int(addr[1])
        raise RuntimeError("no Sentinel knows the master")

    def master(self) -> RedisServer:
        port = self.master_port()
        return next(n for n in self.nodes if n.port == port)

    def node_client(self, node: RedisServer) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=node.port, socket_timeout=2, decode_responses=True,
                           password=self.password)

    def wait_replicas_linked(self, timeout: float = 30) -> None:
        """Until every node that is not the master is a replica with its link up."""
        def linked() -> bool:
            masters = 0
            for node in self.nodes:
                try:
                    with self.node_client(node) as c:
                        info = c.info("replication")
                except redis.RedisError:
                    return False
                if info["role"] == "master":
                    masters += 1
                elif info.get("master_link_status") != "up":
                    return False
            return masters == 1

        wait_for(linked, timeout=timeout, what="one master and every replica linked to it", every=0.1)

    # ------------------------------------------------------------------ faults

    def _wait_new_master(self, old_port: int, timeout: float) -> int:
        def promoted() -> int | None:
            ports = set()
            for s in self.sentinels:
                try:
                    with s.client() as c:
                        addr = c.sentinel_get_master_addr_by_name(self.master_name)
                except redis.RedisError:
                    return None
                ports.add(int(addr[1]))
            if len(ports) != 1 or old_port in ports:
                return None
            port = ports.pop()
            with redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True,
                             password=self.password) as c:
                return port if c.info("replication")["role"] == "master" else None

        return wait_for(promoted, timeout=timeout, what="every Sentinel to name a new, promoted master", every=0.05)

    def begin_failover(self, timeout: float = 30) -> int:
        """``SENTINEL FAILOVER``, returning once every Sentinel names the promoted replica. The
        old master is still a master then, taking writes (that the failover loses), until the
        Sentinels next look at it and demote it: about 10 s (their INFO period)."""
        old = self.master_port()
        with self.sentinels[0].client() as c:
            c.execute_command("SENTINEL", "FAILOVER", self.master_name)
        return self._wait_new_master(old, timeout)

    def failover(self, timeout: float = 30) -> int:
        """``SENTINEL FAILOVER``: a planned failover, until the old master is the new one's
        replica. Returns the new master's port."""
        new = self.begin_failover(timeout)
        self.wait_replicas_linked(timeout)
        return new

    def kill_master(self, timeout: float = 30, restart: bool = True) -> int:
        """SIGKILL the master; the Sentinels promote the replica. With ``restart`` the killed
        node comes back, empty, as a replica of the new master. Returns the new port.

        It comes back as a replica, never as a master: these nodes have no persistence, and an
        empty master that a replica syncs from (after a failover the Sentinels abort, or one
        that has not reached every Sentinel yet) wipes the replica too. Redis documents this
        hazard ("safety of replication when master has persistence turned off"); a pod restarted
        under Sentinel must ask the Sentinels for the master and start as its replica, as this
        does (docs/operations.md)."""
        old = self.master()
        old.stop(kill=True)
        new = self._wait_new_master(old.port, timeout)
        if restart:
            old.extra_args = self._replica_of(new)
            old.start()
            self.wait_replicas_linked(timeout)
        return new

    def cleanup(self) -> None:
        for s in self.sentinels:
            s.stop()
        for node in self.nodes:
            node.cleanup()

    def __enter__(self) -> SentinelSet:
        try:
            return self.start()
        except BaseException:
            self.cleanup()
            raise

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
