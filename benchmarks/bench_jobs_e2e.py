"""End-to-end Job benchmark: N Jobs applied at once with kubectl, all the way to ``Succeeded``.

Everything is real: the local control plane (``hack/local-cluster.sh``, or
``KUBEWORKERS_KUBECONFIG``), a private ``redis-server``, the ``kubeworkers-operator``
subprocess, and worker processes started by the kubelet stand-in for every
Running worker pod (the autoscaler decides how many).

Measured:

* wall time from ``kubectl apply`` to the last Job ``Succeeded`` (and to applied, and to
  all enqueued);
* status writes per Job, counted twice: by the operator (``job_status_patches_total``)
  and independently by the apiserver's audit log (PATCH/UPDATE of ``jobs/status`` in the
  run's namespace, successful ones and conflicts);
* that every Job's ``status.output`` is the handler's output;
* the operator's and redis-server's CPU (user + system from ``/proc/<pid>/stat``) over the same
  window, first apply to all ``Succeeded``, per Job, and the commands Redis executed per Job, by
  command (two ``INFO commandstats`` readings, at the start and at the end of the window). The
  window holds everything: the operator's enqueue, its status sync reading and acking the events,
  its chores (resync, TTL, gauges, orphan sweep) and the workers' own scripts.

The operator runs with the e2e fixture's flags (short chore intervals: resync and orphan sweep every
5 s, progress writes 1 s apart); ``--operator-args '...'`` adds flags after them, e.g. the defaults
``--resync-interval 60 --orphan-sweep-interval 300 --progress-interval 5 --pending-retry 10``.
``--operator-tree DIR`` runs the operator and the workers from another checkout (its ``operator``
and ``worker_image`` first on ``PYTHONPATH``, this virtualenv's dependencies) against this tree's
control plane, CRDs and benchmark: an A/B of the operator path (``benchmarks/bench_operator_ab.py``).

    .venv/bin/python benchmarks/bench_jobs_e2e.py [--jobs 1000] [--max-replicas 4] [--concurrency 16] \
        [--operator-tree DIR]

Results go to ``benchmarks/results/bench_jobs_e2e-<time>.json``.
"""

from __future__ import annotations

import argparse
import collections
import copy
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import redis as redis_sync

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.measure import commandstats_counts, redis_per_job  # noqa: E402
from tests.e2e.operator_fixtures import (  # noqa: E402
    LOG_ROOT,
    OperatorProcess,
    install_crds,
    job_list_yaml,
    list_jobs,
    pool_manifest,
    wait_for,
)
from tests.support.cluster import Cluster  # noqa: E402
from tests.support.pod_runner import PodRunner  # noqa: E402
from tests.support.redis_server import RedisServer  # noqa: E402

VENV_BIN = Path(sys.executable).parent
TEXT = "the quick brown fox the end"
AUDIT_LOG = REPO / ".local" / "cluster" / "logs" / "audit.log"


WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


def audit_writes(namespace: str) -> collections.Counter[str]:
    """Writes to Jobs in ``namespace`` the apiserver completed, as ``"<verb> <resource[/subresource]> <code>"``.

    The local control plane's audit policy logs ``workers.io`` resources only (hack/local_cluster.py).
    """
    counts: collections.Counter[str] = collections.Counter()
    if not AUDIT_LOG.exists():
        return counts
    with AUDIT_LOG.open() as f:
        for line in f:
            if namespace not in line:
                continue
            entry = json.loads(line)
            ref = entry.get("objectRef", {})
            if (ref.get("namespace") == namespace and ref.get("resource") == "jobs"
                    and entry.get("verb") in WRITE_VERBS and entry.get("stage") == "ResponseComplete"):
                what = "jobs/" + ref["subresource"] if ref.get("subresource") else "jobs"
                counts[f"{entry['verb']} {what} {entry.get('responseStatus', {}).get('code')}"] += 1
    return counts


def audit_status_writes(namespace: str) -> collections.Counter[str]:
    """Writes to jobs/status in ``namespace`` seen by the apiserver, by response code."""
    counts: collections.Counter[str] = collections.Counter()
    for key, n in audit_writes(namespace).items():
        verb, what, code = key.split()
        if what == "jobs/status" and verb in ("patch", "update"):
            counts[code] += n
    return counts


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int, field: str = "VmRSS") -> float:
    """Resident memory of a process in MiB: ``VmRSS`` now, or ``VmHWM`` (its peak so far)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def tree_pythonpath(tree: Path) -> str:
    """``PYTHONPATH`` that makes this virtualenv import ``kubeworkers`` and ``kubeworkers_operator``
    from checkout ``tree`` (the editable install's finder comes after ``PYTHONPATH``)."""
    tree = tree.resolve()
    for package in ("operator/kubeworkers_operator", "worker_image/kubeworkers"):
        if not (tree / package / "__init__.py").is_file():
            raise SystemExit(f"{tree} is no kubeworkers checkout: it has no {package}")
    return os.pathsep.join([str(tree / "operator"), str(tree / "worker_image")])


def imported_from(env: dict[str, str]) -> dict[str, str]:
    """Where a process started with ``env`` imports the operator and worker packages from (a check
    that ``--operator-tree`` took effect)."""
    out = subprocess.run(
        [sys.executable, "-c", "import json, kubeworkers, kubeworkers_operator as o;"
         "print(json.dumps({'kubeworkers': kubeworkers.__file__, 'kubeworkers_operator': o.__file__}))"],
        env=env, capture_output=True, text=True, check=True, cwd="/").stdout
    found: dict[str, str] = json.loads(out)
    return found


def tree_commit(tree: Path) -> str:
    return subprocess.run(["git", "-C", str(tree), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()


def apply_concurrently(cluster: Cluster, namespace: str, manifests: list[str]) -> None:
    """One ``kubectl apply`` per manifest, all at once, like many clients; raises if any fails."""
    procs = [
        subprocess.Popen([str(VENV_BIN / "kubectl"), "apply", "-n", namespace, "-f", "-"],
                         stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=cluster.env, text=True)
        for _ in manifests
    ]
    for proc, text in zip(procs, manifests, strict=True):
        assert proc.stdin is not None
        proc.stdin.write(text)
        proc.stdin.close()
    for proc in procs:
        if proc.wait(900) != 0:
            raise RuntimeError("kubectl apply failed")


def run(jobs: int, max_replicas: int, concurrency: int, parallel: int,
        *, operator_tree: Path | None = None, operator_args: list[str] | None = None) -> dict[str, Any]:
    """One run. ``operator_args`` go after the e2e fixture's own (``OperatorProcess``: the short chore
    intervals of the tests, e.g. ``--orphan-sweep-interval 5``), so the same flag given here wins."""
    cluster = Cluster.from_environment()
    code_env: dict[str, str] = {}
    if operator_tree is not None:
        code_env["PYTHONPATH"] = tree_pythonpath(operator_tree)
    code_from = imported_from({**os.environ, **code_env})
    if operator_tree is not None and not all(
            Path(f).is_relative_to(operator_tree.resolve()) for f in code_from.values()):
        raise SystemExit(f"PYTHONPATH={code_env['PYTHONPATH']} did not take: {code_from}")
    # The operator's environment is its cluster's (OperatorProcess); a copy with the tree's path.
    operator_cluster = copy.copy(cluster)
    operator_cluster.env = {**cluster.env, **code_env}
    redis = RedisServer(aof=False).start()
    namespace = f"bench-{uuid.uuid4().hex[:8]}"
    log_dir = LOG_ROOT / namespace
    install_crds(cluster)
    cluster.kubectl("create", "namespace", namespace)
    cluster.kubectl("create", "secret", "generic", "kubeworkers-redis", "-n", namespace,
                    f"--from-literal=url={redis.url}")
    operator = OperatorProcess(operator_cluster, redis.url, [namespace], log_dir, list(operator_args or []))
    operator.start()
    runner = PodRunner(cluster, namespace, "workers.io/pool",
                       extra_env={"KUBEWORKERS_METRICS_PORT": "0", **code_env}, log_dir=log_dir / "pods")
    assert redis.proc is not None
    redis_pid = redis.proc.pid
    r = redis_sync.Redis.from_url(redis.url)
    try:
        with runner:
            cluster.apply(pool_manifest(concurrency=concurrency, maxReplicas=max_replicas), namespace)
            names = [f"bench-{i:05d}" for i in range(jobs)]

            # kubectl creates objects one by one; several at once make a burst like many clients.
            chunks = [names[i::parallel] for i in range(parallel)]
            manifests = [job_list_yaml(chunk, "demo", "word_count", {"text": TEXT}) for chunk in chunks if chunk]
            assert operator.proc is not None
            load0 = os.getloadavg()[0]
            stats0 = commandstats_counts(r.info("commandstats"))
            redis_cpu0 = cpu_seconds(redis_pid)
            cpu0 = cpu_seconds(operator.proc.pid)
            rss0 = rss_mib(operator.proc.pid)
            t0 = time.monotonic()
            apply_concurrently(cluster, namespace, manifests)
            applied = time.monotonic() - t0

            def enqueued() -> bool:
                return operator.metric_sum("kubeworkers_operator_jobs_enqueued_total") >= jobs

            wait_for(enqueued, timeout=900, every=0.2, what="all jobs enqueued")
            all_enqueued = time.monotonic() - t0

            def done() -> bool:
                phases = collections.Counter(
                    j.get("status", {}).get("phase") for j in list_jobs(cluster, namespace).values()
                )
                return phases["Succeeded"] == jobs

            wait_for(done, timeout=1800, every=1.0, what=f"{jobs} jobs Succeeded")
            wall = time.monotonic() - t0
            operator_cpu = cpu_seconds(operator.proc.pid) - cpu0
            redis_cpu1 = cpu_seconds(redis_pid)
            stats1 = commandstats_counts(r.info("commandstats"))
            load1 = os.getloadavg()[0]
            on_redis = redis_per_job(jobs, redis_cpu0, redis_cpu1, stats0, stats1)
            operator_rss = rss_mib(operator.proc.pid)
            operator_peak_rss = rss_mib(operator.proc.pid, "VmHWM")

            final = list_jobs(cluster, namespace)
            wrong = [n for n, j in final.items() if (j["status"].get("output") or {}).get("words") != 6]
            metrics = operator.metrics()
            by_source = {
                k.split('source="')[1].rstrip('"}'): v
                for k, v in metrics.items() if k.startswith("kubeworkers_operator_job_status_patches_total{")
            }
            time.sleep(3)  # the audit backend writes in batches
            audit = audit_status_writes(namespace)
            writes = audit_writes(namespace)
            return {
                "jobs": jobs,
                "max_replicas": max_replicas,
                "concurrency_per_pod": concurrency,
                "kubectl_apply_processes": parallel,
                "seconds_to_applied": round(applied, 2),
                "seconds_to_all_enqueued": round(all_enqueued, 2),
                "seconds_to_all_succeeded": round(wall, 2),
                "jobs_per_second": round(jobs / wall, 1),
                "operator_cpu_seconds": round(operator_cpu, 1),
                "operator_cpu_ms_per_job": round(operator_cpu / jobs * 1000, 3),
                "redis_cpu_seconds": round(redis_cpu1 - redis_cpu0, 2),
                "redis_cpu_us_per_job": round(on_redis["redis_cpu_us_per_job"], 1),
                "redis_commands_per_job": round(on_redis["redis_commands_per_job"], 2),
                "redis_commands_by_command": on_redis["redis_commands_by_command"],
                "load_average_1m": [round(load0, 2), round(load1, 2)],
                "redis_core_share": round((redis_cpu1 - redis_cpu0) / wall, 3),
                "operator_core_share": round(operator_cpu / wall, 3),
                "operator_tree": str(operator_tree.resolve()) if operator_tree else None,
                "operator_tree_commit": tree_commit(operator_tree) if operator_tree else None,
                "imported_from": code_from,
                "operator_args": list(operator_args or []),
                "operator_rss_mib": operator_rss,
                "operator_rss_before_mib": rss0,
                "operator_peak_rss_mib": operator_peak_rss,
                "audit_writes": dict(writes),
                "audit_writes_per_job": round(sum(writes.values()) / jobs, 3) if writes else None,
                "status_writes_by_source": by_source,
                "status_writes_per_job": round(sum(by_source.values()) / jobs, 3),
                "audit_status_writes_by_code": dict(audit),
                "audit_status_writes_per_job": round(audit.get("200", 0) / jobs, 3) if audit else None,
                "status_conflicts": metrics.get(
                    'kubeworkers_operator_job_status_patch_errors_total{reason="conflict"}', 0.0),
                "k8s_events_posted": sum(v for k, v in metrics.items()
                                         if k.startswith("kubeworkers_operator_k8s_events_posted_total{")),
                "wrong_outputs": len(wrong),
                "worker_pods_started": len(list(Path(log_dir / "pods").glob("*"))),
            }
    finally:
        r.close()
        operator.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
        redis.cleanup()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--jobs", type=int, default=1000)
    p.add_argument("--max-replicas", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--parallel", type=int, default=8, help="kubectl apply processes at once")
    p.add_argument("--operator-tree", type=Path, metavar="DIR",
                   help="run the operator and the workers from this checkout (A/B of the operator path)")
    p.add_argument("--operator-args", default="", metavar="ARGS",
                   help="more operator flags, after the fixture's (e.g. '--orphan-sweep-interval 300')")
    args = p.parse_args()
    result = run(args.jobs, args.max_replicas, args.concurrency, args.parallel, operator_tree=args.operator_tree,
                 operator_args=shlex.split(args.operator_args))
    print(json.dumps(result, indent=2))
    out = REPO / "benchmarks" / "results" / f"bench_jobs_e2e-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
