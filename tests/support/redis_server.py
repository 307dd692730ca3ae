"""A real ``redis-server`` on a free loopback port, owned by a test or a benchmark.

It dies with the process that started it, however that ends (hack/processes.py).
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from hack import processes
from hack.net import free_port
from hack.polling import Deadline

INSTALL_HINT = "run `bash hack/ensure-prereqs.sh` (it installs redis-server >= 7.0, or says how)"


class RedisServer:
    """Start with :meth:`start`, stop with :meth:`stop`; ``url`` is ready to hand to a client.

    ``aof=True`` turns on the append-only file, by default with ``appendfsync always`` so a
    restart (:meth:`restart`) loses nothing that was acknowledged (``fsync="everysec"``: up to
    about a second of acknowledged writes may be lost in a crash).
    """

    def __init__(
        self, aof: bool = False, port: int | None = None, fsync: str = "always", extra_args: tuple[str, ...] = (),
    ) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError(f"redis-server not found on PATH: {INSTALL_HINT}")
        self.binary = binary
        self.aof = aof
        self.fsync = fsync
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="kw-redis-"))
        #: More ``redis-server`` arguments (e.g. ``("--replicaof", "127.0.0.1", "6379")``).
        self.extra_args = extra_args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        args = [
            self.binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            "--save", "",
            "--appendonly", "yes" if self.aof else "no",
            "--appendfsync", self.fsync,
            "--daemonize", "no",
            "--protected-mode", "yes",
            "--logfile", str(self.dir / "redis.log"),
            *self.extra_args,
        ]
        self.proc = processes.spawn(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = Deadline(10, f"redis-server to answer on port {self.port}")
        while not deadline.passed():
            if self.proc.poll() is not None:
                log = (self.dir / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    # A server with requirepass answers NOAUTH: it is up all the same.
                    if s.recv(16).startswith((b"+PONG", b"-NOAUTH")) and self._ready():
                        return self
            except OSError:
                pass
            time.sleep(0.02)
        raise RuntimeError(str(deadline.fail()))

    def _ready(self) -> bool:
        """Whether the server answering on the port is this process: its own log line says it
        listens. A PING alone is not enough on a shared machine: a port just freed (a server
        killed to be restarted on it) can be taken by another test's server, and this one then
        fails to bind while the PING reaches the other (a Sentinel set restarted that way
        reconfigured a stranger's node and lost every job of a run)."""
        assert self.proc is not None
        log = self.dir / "redis.log"
        mark = f"{self.proc.pid}:"
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                if line.startswith(mark) and "Ready to accept connections" in line:
                    return self.proc.poll() is None
        return False

    def version(self) -> tuple[int, ...]:
        out = subprocess.run([self.binary, "--version"], capture_output=True, text=True, check=True).stdout
        ver = next(part for part in out.split() if part.startswith("v="))[2:]
        return tuple(int(x) for x in ver.split("."))

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            if kill:
                self.proc.kill()
            else:
                self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self, kill: bool = True) -> None:
        """Stop (SIGKILL by default: a crash) and start again on the same port and data dir."""
        self.stop(kill=kill)
        self.start()

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()
