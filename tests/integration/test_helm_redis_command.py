"""The chart's Redis container command, run for real against the local redis-server.

kwok runs no containers, so the e2e install cannot prove the StatefulSet's shell script and
probes work. Here the rendered script and probe run as written, with only the pod's paths
mapped into a temporary directory and the port made free.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from hack import processes
from hack.net import free_port
from hack.polling import wait_for
from tests.support.tools import render_chart


class RenderedRedis:
    def __init__(self, workdir: Path) -> None:
        sts = next(o for o in render_chart(None, workdir) if o["kind"] == "StatefulSet")
        self.container: dict[str, Any] = sts["spec"]["template"]["spec"]["containers"][0]
        self.root = workdir / "pod"
        self.password = secrets.token_hex(16)
        self.port = free_port()
        for sub in ("secrets", "run", "data"):
            (self.root / sub).mkdir(parents=True)
        (self.root / "secrets" / "password").write_text(self.password)

    def localize(self, text: str) -> str:
        """The pod's paths and port, mapped onto this machine."""
        return (text.replace("/run/secrets/redis", str(self.root / "secrets"))
                .replace("/run/redis", str(self.root / "run"))
                .replace("--dir /data", f"--dir {self.root / 'data'}")
                .replace("--port 6379", f"--port {self.port} --bind 127.0.0.1")
                .replace("redis-cli ping", f"redis-cli -p {self.port} ping"))

    def probe(self, name: str) -> int:
        command = [self.localize(part) for part in self.container[name]["exec"]["command"]]
        return subprocess.run(command, capture_output=True, timeout=10, check=False).returncode


@pytest.fixture
def rendered_redis(tmp_path: Path) -> Iterator[tuple[RenderedRedis, subprocess.Popen[bytes]]]:
    if shutil.which("redis-server") is None or shutil.which("redis-cli") is None:
        pytest.fail("redis-server and redis-cli are needed: apt-get install redis-server", pytrace=False)
    r = RenderedRedis(tmp_path)
    assert r.container["command"] == ["/bin/sh", "-c"]
    proc = processes.spawn(["/bin/sh", "-c", r.localize(r.container["args"][0])],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield r, proc
    finally:
        proc.terminate()
        proc.wait(10)


def test_rendered_redis_command_starts_a_password_protected_aof_redis(
        rendered_redis: tuple[RenderedRedis, subprocess.Popen[bytes]]) -> None:
    r, proc = rendered_redis
    client = redis.Redis(port=r.port, password=r.password)

    def answers() -> bool:
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            assert proc.poll() is None, "the rendered Redis command exited"
            return False

    wait_for(answers, timeout=20, what="the rendered Redis to answer", every=0.1)
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
    assert client.config_get("appendfsync") == {"appendfsync": "everysec"}
    with pytest.raises(redis.AuthenticationError):
        redis.Redis(port=r.port).ping()
    # The password is in no process's command line.
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout
    assert r.password not in ps
    client.close()


def test_rendered_redis_probes_pass_only_with_the_right_password(
        rendered_redis: tuple[RenderedRedis, subprocess.Popen[bytes]]) -> None:
    r, _ = rendered_redis
    wait_for(lambda: r.probe("startupProbe") == 0, timeout=20, what="the startup probe to pass", every=0.2)
    assert r.probe("livenessProbe") == 0
    assert r.probe("readinessProbe") == 0
    (r.root / "secrets" / "password").write_text("wrong")
    assert r.probe("livenessProbe") != 0, "a probe that passes without the password proves nothing"
