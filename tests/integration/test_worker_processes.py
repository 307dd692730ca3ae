"""Real worker processes (``python -m kubeworkers worker``) on a real Redis: crashes, drains, fleets."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
import urllib.request
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator

import pytest
import redis
from kubeworkers.client import Client
from kubeworkers.protocol import JobEvent, JobState, PoolKeys

from tests.support.workers import LEASE, REPO, WorkerProcess, events_sync

#: These tests read the events stream, which the worker path writes only for a Job object's jobs
#: (docs/protocol.md, *Events*): their SDK clients submit as the operator enqueues those.
pytestmark = pytest.mark.usefixtures("submits_as_job_objects")

FINISHED = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED}


@pytest.fixture
def procs() -> Iterator[Callable[..., WorkerProcess]]:
    started: list[WorkerProcess] = []

    def start(redis_url: str, name: str, **kw: object) -> WorkerProcess:
        p = WorkerProcess(redis_url, name, **kw)  # type: ignore[arg-type]
        started.append(p)
        p.wait_started()
        return p

    yield start
    for p in started:
        p.close()


@pytest.fixture
def client(redis_url: str) -> Iterator[Client]:
    with Client(redis_url) as c:
        yield c


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    conn = redis.Redis.from_url(redis_url)
    yield conn
    conn.close()


def wait_for(predicate: Callable[[], bool], within: float, what: str) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
        time.sleep(0.05)


def running_on(client: Client, job_id: str, worker: str) -> Callable[[], bool]:
    def check() -> bool:
        rec = client.get(job_id, pool="p")
        return rec is not None and rec.state is JobState.RUNNING and rec.worker == worker

    return check


def job_events(r: redis.Redis, job_id: str) -> list[JobEvent]:
    return [e for e in events_sync(r) if e.job_id == job_id]


def test_job_whose_worker_is_killed_mid_job_completes_on_another_worker_within_the_lease(
    redis_url: str, client: Client, r: redis.Redis, procs: Callable[..., WorkerProcess]
) -> None:
    doomed = procs(redis_url, "doomed", concurrency=1)
    job_id = client.submit("p", "slow", {"seconds": 2, "steps": 4}, max_attempts=3)
    wait_for(running_on(client, job_id, "doomed"), 30, "the job to run on the doomed worker")
    rescuer = procs(redis_url, "rescuer", concurrency=1)
    doomed.kill()
    # Generous: the lease is 2 s; the job must be reclaimed after it, not after a long poll.
    done = client.wait(job_id, 15 * LEASE, pool="p")
    assert done.state is JobState.SUCCEEDED
    assert done.worker == "rescuer"
    assert done.attempts == 2
    history = [(e.state, e.worker) for e in job_events(r, job_id) if e.progress is None or e.state != "Running"]
    assert history[0] == (JobState.RUNNING, "doomed")
    assert (JobState.RUNNING, "rescuer") in history
    assert history[-1] == (JobState.SUCCEEDED, "rescuer")
    assert "lease expired" in " ".join(e.message or "" for e in job_events(r, job_id))
    rescuer.terminate()
    assert rescuer.wait() == 0


def test_job_running_ten_times_longer_than_the_lease_is_never_run_twice(
    redis_url: str, client: Client, r: redis.Redis, procs: Callable[..., WorkerProcess]
) -> None:
    short_lease = ["--lease-seconds", "0.6", "--heartbeat-seconds", "0.1"]
    procs(redis_url, "w1", extra_args=short_lease)
    procs(redis_url, "w2", extra_args=short_lease)
    job_id = client.submit("p", "slow", {"seconds": 6, "steps": 3}, max_attempts=5)
    done = client.wait(job_id, 120, pool="p")
    assert done.state is JobState.SUCCEEDED
    assert done.attempts == 1
    starts = [e for e in job_events(r, job_id) if e.state is JobState.RUNNING and e.progress is None]
    assert len(starts) == 1


def test_sigterm_lets_in_flight_jobs_finish_and_leaves_queued_ones_for_other_workers(
    redis_url: str, client: Client, r: redis.Redis, procs: Callable[..., WorkerProcess]
) -> None:
    leaving = procs(redis_url, "leaving", concurrency=3)
    ids = client.submit_many("p", "slow", [{"seconds": 1.5, "steps": 3}] * 8, max_attempts=3)
    wait_for(lambda: sum(running_on(client, j, "leaving")() for j in ids) == 3, 30, "three jobs running")
    running = [j for j in ids if running_on(client, j, "leaving")()]
    leaving.terminate()
    assert leaving.wait(60) == 0
    for job_id in running:
        rec = client.get(job_id, pool="p")
        assert rec is not None and rec.state is JobState.SUCCEEDED and rec.worker == "leaving"
    assert r.hget(PoolKeys("default", "p").workers, "leaving") is None
    procs(redis_url, "staying", concurrency=4)
    for job_id in ids:
        assert client.wait(job_id, 60, pool="p").state is JobState.SUCCEEDED
    starts = Counter(e.job_id for e in events_sync(r) if e.state is JobState.RUNNING and e.progress is None)
    assert starts == dict.fromkeys(ids, 1), "a job was run twice"
    assert "waiting up to" in leaving.log()


def test_sigterm_hands_back_a_job_it_cannot_finish_at_once_without_counting_the_attempt(
    redis_url: str, client: Client, r: redis.Redis, procs: Callable[..., WorkerProcess]
) -> None:
    leaving = procs(redis_url, "leaving", concurrency=1, extra_args=["--shutdown-grace", "0.3"])
    job_id = client.submit("p", "slow", {"seconds": 4, "steps": 4}, max_attempts=1)
    wait_for(running_on(client, job_id, "leaving"), 30, "the job to start")
    leaving.terminate()
    assert leaving.wait(60) == 0
    # Handed back on exit, not left for the lease to expire.
    rec = client.get(job_id, pool="p")
    assert rec is not None and rec.state is JobState.QUEUED and rec.attempts == 0
    procs(redis_url, "next", concurrency=1)
    done = client.wait(job_id, 60, pool="p")
    assert (done.state, done.worker, done.attempts) == (JobState.SUCCEEDED, "next", 1)
    assert any("handed back by leaving" in (e.message or "") for e in job_events(r, job_id))


def test_a_thousand_jobs_across_three_workers_with_random_kills_all_finish_and_only_killed_ones_repeat(
    redis_url: str, client: Client, r: redis.Redis, procs: Callable[..., WorkerProcess]
) -> None:
    rng = random.Random(1234)
    live = [procs(redis_url, f"w{i}", concurrency=8) for i in range(3)]
    killed: set[str] = set()
    ids = client.submit_many(
        "p", "slow", [{"seconds": rng.uniform(0.02, 0.15), "steps": 1} for _ in range(1000)], max_attempts=10
    )
    spawned = 3
    for _ in range(4):
        time.sleep(1.0)
        victim = live.pop(rng.randrange(len(live)))
        victim.kill()
        killed.add(victim.name)
        live.append(procs(redis_url, f"w{spawned}", concurrency=8))
        spawned += 1

    def all_finished() -> bool:
        pipe = r.pipeline(transaction=False)
        for job_id in ids:
            pipe.hget(PoolKeys("default", "p").record(job_id), "state")
        return all(s is not None and JobState(s.decode()) in FINISHED for s in pipe.execute())

    wait_for(all_finished, 300, "every job to reach a terminal state")
    records = [client.get(j, pool="p") for j in ids]
    assert all(rec is not None and rec.state is JobState.SUCCEEDED for rec in records)
    starts: dict[str, list[str]] = defaultdict(list)
    finishes: Counter[str] = Counter()
    for e in events_sync(r):
        if e.state is JobState.RUNNING and e.progress is None:
            starts[e.job_id].append(e.worker or "")
        elif e.state is JobState.SUCCEEDED:
            finishes[e.job_id] += 1
    assert set(starts) == set(ids), "a job never started"
    assert finishes == dict.fromkeys(ids, 1), "a job finished twice, or never"
    for job_id, workers in starts.items():
        # Every start but the last must have been on a worker that was killed.
        assert set(workers[:-1]) <= killed, f"{job_id} repeated without a crash: {workers}"
    assert r.xlen(PoolKeys("default", "p").stream("normal")) == 0


def test_worker_is_configured_from_the_environment_a_pod_sets(
    redis_url: str, client: Client, procs: Callable[..., WorkerProcess]
) -> None:
    worker = procs(redis_url, "ignored", use_flags=False, env={
        "KUBEWORKERS_REDIS_URL": redis_url,
        "KUBEWORKERS_POOL": "envpool",
        "KUBEWORKERS_IMPORT": "kubeworkers.examples, kubeworkers.examples",
        "KUBEWORKERS_CONCURRENCY": "2",
        "KUBEWORKERS_METRICS_PORT": "0",
        "KUBEWORKERS_SHUTDOWN_GRACE": "5",
        "KUBEWORKERS_LEASE_SECONDS": "6",
        "POD_NAME": "pod-from-env",
    })
    done = client.wait(client.submit("envpool", "word_count", {"text": "to be or not to be"}), 60)
    assert done.state is JobState.SUCCEEDED and done.worker == "pod-from-env" and done.namespace == "default"
    assert done.output == {"words": 6, "counts": {"to": 2, "be": 2, "or": 1, "not": 1}}
    worker.terminate()
    assert worker.wait() == 0


def test_metrics_health_and_readiness_endpoints_report_jobs_by_handler_and_outcome(
    redis_url: str, client: Client, procs: Callable[..., WorkerProcess]
) -> None:
    worker = procs(redis_url, "metered")
    client.wait(client.submit("p", "word_count", {"text": "a"}), 60, pool="p")
    client.wait(client.submit("p", "fail", {}), 60, pool="p")
    port = worker.metrics_port()

    def get(path: str) -> tuple[int, str]:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as resp:
            return resp.status, resp.read().decode()

    status, body = get("/metrics")
    assert status == 200
    assert 'kubeworkers_jobs_total{handler="word_count",namespace="default",outcome="succeeded",pool="p"} 1.0' in body
    assert 'kubeworkers_jobs_total{handler="fail",namespace="default",outcome="retried",pool="p"} 1.0' in body
    assert 'kubeworkers_jobs_total{handler="fail",namespace="default",outcome="failed",pool="p"} 1.0' in body
    assert 'kubeworkers_dead_lettered_total{handler="fail",namespace="default",pool="p"} 1.0' in body
    assert 'kubeworkers_retries_total{handler="fail",namespace="default",pool="p"} 1.0' in body
    assert 'kubeworkers_job_duration_seconds_count{handler="word_count",namespace="default",pool="p"} 1.0' in body
    assert 'kubeworkers_jobs_in_flight{namespace="default",pool="p"} 0.0' in body
    assert get("/healthz") == (200, "ok\n")
    assert get("/readyz") == (200, "ready\n")


def test_every_job_state_change_is_one_structured_log_line_with_job_id_and_handler(
    redis_url: str, client: Client, procs: Callable[..., WorkerProcess]
) -> None:
    worker = procs(redis_url, "logger")
    ok = client.submit("p", "word_count", {"text": "a"})
    bad = client.submit("p", "fail", {})
    client.wait(ok, 60, pool="p")
    client.wait(bad, 60, pool="p")
    worker.terminate()
    worker.wait()
    lines = worker.log_lines()
    by_job = defaultdict(list)
    for line in lines:
        if "job_id" in line:
            assert {"ts", "level", "msg", "handler"} <= set(line)
            by_job[line["job_id"]].append(line.get("state"))
    assert by_job[ok] == ["Running", "Succeeded"]
    assert by_job[bad] == ["Running", "Queued", "Running", "Failed"]


def test_dead_letter_list_and_replay_commands(
    redis_url: str, client: Client, r: redis.Redis, procs: Callable[..., WorkerProcess]
) -> None:
    procs(redis_url, "w")
    job_id = client.submit("p", "fail", {"message": "nope"})
    client.wait(job_id, 60, pool="p")
    cli = [sys.executable, "-m", "kubeworkers", "dlq"]
    conn = ["--redis-url", redis_url, "--pool", "p"]
    listed = subprocess.run([*cli, "list", *conn, "--json"], capture_output=True, text=True, check=True, cwd=REPO)
    dead = json.loads(listed.stdout)
    assert [(d["job_id"], d["attempts"]) for d in dead] == [(job_id, 2)]
    assert "RuntimeError: nope" in dead[0]["reason"]
    replayed = subprocess.run([*cli, "replay", *conn, "--all"], capture_output=True, text=True, check=True,
                              cwd=REPO)
    assert replayed.stdout.split() == [job_id]

    def failed_again() -> bool:
        rec = client.get(job_id, pool="p")
        return rec is not None and rec.state is JobState.FAILED and rec.message is not None

    # The replayed job runs again from attempt 1 (and, this handler being what it is, fails again).
    wait_for(lambda: sum(e.state is JobState.RUNNING and e.job_id == job_id for e in events_sync(r)) == 4, 60,
             "two more attempts after the replay")
    wait_for(failed_again, 60, "the replayed job to fail again")
    assert r.xlen(PoolKeys("default", "p").dead_letter) == 1


def test_handlers_command_lists_each_handler_with_its_input_schema() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "kubeworkers", "handlers", "--import", "kubeworkers.examples", "--json"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    listed = {h["name"]: h for h in json.loads(out.stdout)}
    assert set(listed) >= {"word_count", "slow", "fail", "flaky"}
    assert listed["word_count"]["input_schema"]["properties"]["text"]["type"] == "string"
    assert listed["slow"]["input_schema"]["required"] == ["seconds"]
    assert listed["fail"]["max_attempts"] == 2


def test_job_that_keeps_losing_its_worker_is_dead_lettered_instead_of_looping(
    redis_url: str, client: Client, r: redis.Redis, procs: Callable[..., WorkerProcess]
) -> None:
    doomed = procs(redis_url, "doomed", concurrency=1)
    job_id = client.submit("p", "slow", {"seconds": 30, "steps": 30}, max_attempts=1)
    wait_for(running_on(client, job_id, "doomed"), 30, "the job to start")
    procs(redis_url, "survivor", concurrency=1)
    doomed.kill()
    done = client.wait(job_id, 15 * LEASE, pool="p")
    assert done.state is JobState.FAILED
    assert done.error is not None and done.error.type == "WorkerLost"
    dead = r.xrange(PoolKeys("default", "p").dead_letter)
    assert len(dead) == 1 and b"stopped without finishing" in dead[0][1][b"reason"]  # type: ignore[index]


def test_worker_waiting_for_an_unreachable_redis_exits_cleanly_on_sigterm() -> None:
    from tests.support.redis_server import free_port

    worker = WorkerProcess(f"redis://127.0.0.1:{free_port()}/0", "lonely")
    try:
        wait_for(lambda: "redis not reachable" in worker.log(), 30, "the worker to report the unreachable Redis")
        worker.terminate()
        assert worker.wait(30) == 0
    finally:
        worker.close()


def test_submit_and_get_commands(redis_url: str, procs: Callable[..., WorkerProcess]) -> None:
    procs(redis_url, "w")
    conn = ["--redis-url", redis_url, "--pool", "p"]
    submitted = subprocess.run(
        [sys.executable, "-m", "kubeworkers", "submit", *conn, "word_count", "--input", '{"text": "a a b"}',
         "--job-id", "cli-job", "--wait", "60"],
        capture_output=True, text=True, check=True, cwd=REPO,
    )
    assert submitted.stdout.splitlines()[0] == "cli-job"
    got = subprocess.run([sys.executable, "-m", "kubeworkers", "get", "--redis-url", redis_url, "cli-job"],
                         capture_output=True, text=True, check=True, cwd=REPO)
    record = json.loads(got.stdout)
    assert (record["state"], record["output"]["words"]) == ("Succeeded", 3)
    missing = subprocess.run([sys.executable, "-m", "kubeworkers", "get", "--redis-url", redis_url, "nope"],
                             capture_output=True, text=True, check=False, cwd=REPO)
    assert missing.returncode == 1 and "not found" in missing.stderr
