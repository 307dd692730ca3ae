"""The Redis password in the connection URL never reaches a worker's log, metrics or job records."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Callable

import redis

from hack.polling import wait_for
from tests.support.redis_server import RedisServer
from tests.support.workers import WorkerProcess

PASSWORD = "pw-7c1e9a-never-log-me"


def protected(redis_factory: Callable[..., RedisServer]) -> tuple[str, str]:
    server = redis_factory()
    redis.Redis.from_url(server.url).config_set("requirepass", PASSWORD)
    good = f"redis://:{PASSWORD}@127.0.0.1:{server.port}/0"
    wrong = f"redis://:{PASSWORD}-but-wrong@127.0.0.1:{server.port}/0"
    return good, wrong


def test_worker_with_a_password_url_runs_jobs_without_logging_the_password(
    redis_factory: Callable[..., RedisServer],
) -> None:
    good, _ = protected(redis_factory)
    worker = WorkerProcess(good, "w-secret")
    try:
        worker.wait_started()
        submit = subprocess.run(
            [sys.executable, "-m", "kubeworkers", "submit", "--redis-url", good, "--pool", "p",
             "--job-id", "j1", "--input", '{"text": "a b a"}', "--wait", "30", "word_count"],
            capture_output=True, text=True, timeout=60, check=False)
        assert submit.returncode == 0, submit.stderr
        assert PASSWORD not in submit.stdout + submit.stderr
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{worker.metrics_port()}/metrics", timeout=5).read()
        assert PASSWORD.encode() not in metrics
        r = redis.Redis.from_url(good)
        for key in r.scan_iter("kw:*"):
            if r.type(key) == b"hash":
                assert PASSWORD.encode() not in b"".join(k + v for k, v in r.hgetall(key).items())
        worker.terminate()
        worker.wait(30)
        assert "worker started" in worker.log()
        assert PASSWORD not in worker.log()
    finally:
        worker.close()


def test_worker_given_a_wrong_password_says_so_without_echoing_it(
    redis_factory: Callable[..., RedisServer],
) -> None:
    _, wrong = protected(redis_factory)
    worker = WorkerProcess(wrong, "w-wrong")
    try:
        wait_for(lambda: any(word in worker.log().lower() for word in ("auth", "password", "invalid username")),
                 timeout=20, what=f"the worker to report the failed authentication in {worker.log_path}", every=0.1)
        log = worker.log()
        assert PASSWORD not in log
    finally:
        worker.close()
