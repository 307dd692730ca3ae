"""A kubelet stand-in for pods under kwok: it runs each Running pod's container as a local process.

kwok marks pods Running and Ready but runs nothing. For every Running pod that
matches a label selector, the runner starts the first container's ``command`` +
``args`` with its ``env``/``envFrom`` (values, Secret and ConfigMap references and
``fieldRef``s resolved, ``$(VAR)`` expanded) as a local process, restarts it per
the pod's ``restartPolicy``, and when the pod is deleted sends SIGTERM, then
SIGKILL after the pod's grace period, as a kubelet would. Output goes to one log
file per pod. The processes die with the runner, however it ends (hack/processes.py):
an interrupted test run or a killed demo leaves no worker behind.

Library: ``with PodRunner(cluster_env, namespace, "workers.io/pool=demo"): ...``.
CLI: ``python -m hack.pod_runner --namespace NS --selector SEL [--log-dir DIR]``.
"""

from __future__ import annotations

import argparse
import base64
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from hack import processes
from hack.local_cluster import tests_dir

VAR_REF = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")


def expand(text: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion: known variables are replaced, ``$$`` escapes, unknown stay."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return VAR_REF.sub(sub, text)


@dataclass
class Managed:
    """One pod's local process and what the runner knows of it."""

    pod: str
    uid: str
    argv: list[str]
    env: dict[str, str]
    cwd: str | None
    restart_policy: str
    grace_seconds: float
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    terminating_since: float | None = None
    kill_at: float | None = None
    next_restart: float = 0.0
    exit_codes: list[int] = field(default_factory=list)


class PodRunner:
    """Run the containers of matching pods as local processes until :meth:`stop`."""

    def __init__(
        self,
        kubeconfig: str | os.PathLike[str] | Any,
        namespace: str,
        label_selector: str,
        *,
        extra_env: dict[str, str] | None = None,
        log_dir: str | os.PathLike[str] | None = None,
        inherit_env: bool = True,
    ) -> None:
        # Accept a kubeconfig path or anything with a ``kubeconfig`` attribute (the tests' Cluster).
        self.kubeconfig = str(getattr(kubeconfig, "kubeconfig", kubeconfig))
        self.namespace = namespace
        self.selector = label_selector
        self.extra_env = dict(extra_env or {})
        self.log_dir = Path(log_dir or tests_dir() / "pods" / namespace)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.inherit_env = inherit_env
        self._api = client.CoreV1Api(config.new_client_from_config(config_file=self.kubeconfig))
        self._managed: dict[str, Managed] = {}
        self._finished: list[Managed] = []
        self._events: queue.Queue[tuple[str, dict[str, Any]]] = queue.Queue()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------ public API

    def start(self) -> PodRunner:
        for target in (self._watch_loop, self._control_loop):
            t = threading.Thread(target=target, name=f"pod-runner-{target.__name__}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, grace: float | None = None) -> None:
        """Terminate every process as if its pod were deleted (SIGTERM, SIGKILL after grace)."""
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        with self._lock:
            items = list(self._managed.values())
        for m in items:
            self._signal(m, signal.SIGTERM)
        deadline = time.monotonic() + (grace if grace is not None else max(
            [m.grace_seconds for m in items] or [0]))
        for m in items:
            if m.proc is None:
                continue
            try:
                m.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                m.proc.kill()
                m.proc.wait()

    def __enter__(self) -> PodRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def processes(self) -> dict[str, int]:
        """Pod name -> PID of the live processes."""
        with self._lock:
            return {m.pod: m.proc.pid for m in self._managed.values() if m.proc and m.proc.poll() is None}

    def kill(self, pod: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a pod's process (simulate a crash); the restart policy then applies."""
        with self._lock:
            for m in self._managed.values():
                if m.pod == pod and m.proc and m.proc.poll() is None:
                    m.proc.send_signal(sig)
                    return
        raise KeyError(f"no live process for pod {pod}")

    def starts(self, pod: str) -> int:
        with self._lock:
            return sum(m.starts for m in [*self._managed.values(), *self._finished] if m.pod == pod)

    def log_of(self, pod: str) -> str:
        path = self.log_dir / f"{pod}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # ------------------------------------------------------------------ watching

    def _watch_loop(self) -> None:
        while not self._stop.is_set():
            try:
                pods = self._api.list_namespaced_pod(self.namespace, label_selector=self.selector)
                seen = set()
                for pod in pods.items:
                    seen.add(pod.metadata.uid)
                    self._events.put(("SYNC", self._api.api_client.sanitize_for_serialization(pod)))
                self._events.put(("LISTED", {"uids": sorted(seen)}))
                w = watch.Watch()
                for ev in w.stream(self._api.list_namespaced_pod, self.namespace,
                                   label_selector=self.selector,
                                   resource_version=pods.metadata.resource_version,
                                   timeout_seconds=30, _request_timeout=35):
                    obj = self._api.api_client.sanitize_for_serialization(ev["object"])
                    self._events.put((ev["type"], obj))
                    if self._stop.is_set():
                        w.stop()
                        break
            except Exception as exc:  # the apiserver may be restarting; keep trying
                if not self._stop.is_set():
                    print(f"[pod-runner] watch error: {exc!r}", file=sys.stderr)
                    time.sleep(0.5)

    def _control_loop(self) -> None:
        while not self._stop.is_set():
            try:
                kind, obj = self._events.get(timeout=0.1)
                self._handle(kind, obj)
            except queue.Empty:
                pass
            except Exception as exc:
                print(f"[pod-runner] error handling pod event: {exc!r}", file=sys.stderr)
            self._tick()

    def _handle(self, kind: str, obj: dict[str, Any]) -> None:
        if kind == "LISTED":
            live = set(obj["uids"])
            with self._lock:
                gone = [m for uid, m in self._managed.items() if uid not in live]
            for stale in gone:
                self._begin_termination(stale)
            return
        meta = obj.get("metadata", {})
        uid = meta.get("uid")
        with self._lock:
            m = self._managed.get(uid)
        if kind == "DELETED" or meta.get("deletionTimestamp"):
            if m is not None:
                grace = meta.get("deletionGracePeriodSeconds")
                if grace is not None:
                    m.grace_seconds = float(grace)
                self._begin_termination(m)
            return
        if m is None and obj.get("status", {}).get("phase") == "Running":
            fresh = self._prepare(obj)
            with self._lock:
                self._managed[uid] = fresh
            self._launch(fresh)

    # ------------------------------------------------------------------ processes

    def _prepare(self, pod: dict[str, Any]) -> Managed:
        meta, spec = pod["metadata"], pod["spec"]
        container = spec["containers"][0]
        env = self._base_env(pod)
        env.update(self._container_env(pod, container))
        env.update(self.extra_env)
        argv = [expand(a, env) for a in [*(container.get("command") or []), *(container.get("args") or [])]]
        if not argv:
            raise ValueError(f"pod {meta['name']}: container has no command (images' entrypoints are unknown here)")
        return Managed(
            pod=meta["name"], uid=meta["uid"], argv=argv, env=env, cwd=container.get("workingDir"),
            restart_policy=spec.get("restartPolicy", "Always"),
            grace_seconds=float(spec.get("terminationGracePeriodSeconds", 30)),
            log_path=self.log_dir / f"{meta['name']}.log",
        )

    def _base_env(self, pod: dict[str, Any]) -> dict[str, str]:
        env: dict[str, str] = {}
        if self.inherit_env:
            env.update(os.environ)
        # The local process must find the same Python the tests run with.
        env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env["HOSTNAME"] = pod["metadata"]["name"]
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def _container_env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str]:
        ns = pod["metadata"]["namespace"]
        out: dict[str, str] = {}
        for src in container.get("envFrom") or []:
            prefix = src.get("prefix", "")
            if "secretRef" in src:
                data = self._secret(ns, src["secretRef"]["name"], optional=src["secretRef"].get("optional", False))
            else:
                data = self._configmap(ns, src["configMapRef"]["name"],
                                       optional=src["configMapRef"].get("optional", False))
            out.update({prefix + k: v for k, v in data.items()})
        for item in container.get("env") or []:
            name = item["name"]
            if "value" in item:
                out[name] = expand(item["value"], out)
                continue
            ref = item.get("valueFrom") or {}
            value: str | None = None
            if "secretKeyRef" in ref:
                r = ref["secretKeyRef"]
                value = self._secret(ns, r["name"], optional=r.get("optional", False)).get(r["key"])
            elif "configMapKeyRef" in ref:
                r = ref["configMapKeyRef"]
                value = self._configmap(ns, r["name"], optional=r.get("optional", False)).get(r["key"])
            elif "fieldRef" in ref:
                value = field_value(pod, ref["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in ref:
                res = ref["resourceFieldRef"]["resource"]
                kind, _, what = res.partition(".")
                value = str(((container.get("resources") or {}).get(kind) or {}).get(what, "0"))
            if value is not None:
                out[name] = value
        return out

    def _secret(self, ns: str, name: str, optional: bool) -> dict[str, str]:
        try:
            secret = self._api.read_namespaced_secret(name, ns)
        except client.ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise
        return {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}

    def _configmap(self, ns: str, name: str, optional: bool) -> dict[str, str]:
        try:
            cm = self._api.read_namespaced_config_map(name, ns)
        except client.ApiException as exc:
            if exc.status == 404 and optional:
                return {}
            raise
        return dict(cm.data or {})

    def _launch(self, m: Managed) -> None:
        with open(m.log_path, "ab") as out:
            out.write(f"--- start #{m.starts + 1}: {' '.join(m.argv)}\n".encode())
            out.flush()
            # A session of its own, as in a container: a Ctrl-C at the terminal reaches the runner,
            # which then stops its pods like a kubelet; the process dies with the runner regardless.
            m.proc = processes.spawn(m.argv, env=m.env, cwd=m.cwd, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, new_session=True)
        m.starts += 1

    def _begin_termination(self, m: Managed) -> None:
        if m.terminating_since is not None:
            return
        m.terminating_since = time.monotonic()
        m.kill_at = m.terminating_since + m.grace_seconds
        self._signal(m, signal.SIGTERM)

    @staticmethod
    def _signal(m: Managed, sig: int) -> None:
        if m.proc is not None and m.proc.poll() is None:
            try:
                m.proc.send_signal(sig)
            except ProcessLookupError:
                pass

    def _tick(self) -> None:
        now = time.monotonic()
        with self._lock:
            items = list(self._managed.items())
        for uid, m in items:
            code = m.proc.poll() if m.proc is not None else None
            if m.terminating_since is not None:
                if code is not None:
                    m.exit_codes.append(code)
                    with self._lock:
                        self._managed.pop(uid, None)
                        self._finished.append(m)
                elif m.kill_at is not None and now >= m.kill_at:
                    self._signal(m, signal.SIGKILL)
                    m.kill_at = None
                continue
            if code is None:
                continue
            if m.next_restart == 0.0:
                m.exit_codes.append(code)
                restart = m.restart_policy == "Always" or (m.restart_policy == "OnFailure" and code != 0)
                if not restart:
                    with self._lock:
                        self._managed.pop(uid, None)
                        self._finished.append(m)
                    continue
                # CrashLoopBackOff in miniature: 0.2 s, doubling, capped at 5 s.
                m.next_restart = now + min(5.0, 0.2 * 2 ** min(m.starts - 1, 5))
            elif now >= m.next_restart:
                m.next_restart = 0.0
                self._launch(m)


def field_value(pod: dict[str, Any], path: str) -> str | None:
    meta = pod["metadata"]
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": pod["spec"].get("nodeName"),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName"),
        "status.podIP": pod.get("status", {}).get("podIP"),
        "status.hostIP": pod.get("status", {}).get("hostIP"),
    }
    if path in simple:
        found = simple[path]
        return None if found is None else str(found)
    m = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if m:
        value = (meta.get(m.group(1)) or {}).get(m.group(2))
        return None if value is None else str(value)
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kubeconfig", default=os.environ.get("KUBECONFIG", ".local/kubeconfig"))
    parser.add_argument("--namespace", "-n", default="default")
    parser.add_argument("--selector", "-l", required=True)
    parser.add_argument("--log-dir", default=None)
    parser.add_argument("--env", action="append", default=[], help="KEY=VALUE added to every process")
    args = parser.parse_args(argv)
    extra = dict(item.split("=", 1) for item in args.env)
    runner = PodRunner(args.kubeconfig, args.namespace, args.selector, extra_env=extra, log_dir=args.log_dir)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with runner:
        print(f"[pod-runner] running pods matching {args.selector!r} in {args.namespace}; logs in {runner.log_dir}",
              file=sys.stderr, flush=True)
        while not stop.wait(1.0):
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
