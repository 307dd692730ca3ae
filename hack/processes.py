"""Child processes that end with whoever started them, and a reaper for the ones that did not.

Everything a test run (or the demo's kubelet stand-in) starts — the kubelet stand-in's
worker processes, operators, redis-servers, a control plane started for one run — is
started through :func:`spawn`:

- **Parent-death signal.** The child asks the kernel (``prctl(PR_SET_PDEATHSIG)``, via
  ctypes, between fork and exec) for SIGKILL when its parent dies, however it dies:
  Ctrl-C, SIGTERM from a timeout, SIGKILL, a crash. The kernel's "parent" is the
  *thread* that forked, so every spawn goes through one long-lived thread of this
  module (:func:`_spawner`): a thread pool or a short-lived control thread would kill
  its children when it ends. A child whose parent died before the prctl took effect
  kills itself at once.
- **Ownership records.** A process started while a run is claimed (:func:`claim_run`) is
  recorded in ``<state dir>/runs/<owner>.pids`` (owner: pid and start time of the claiming
  process), and carries ``KUBEWORKERS_RUN_DIR`` and ``KUBEWORKERS_RUN_OWNER`` in its
  environment, which it passes on to its own children (a process that rewrites its
  environment area, as redis-server does for its title, is still found by the record).
  :func:`reap_stale` kills every process of a state directory whose owner is gone: the
  safety net for the short window before the prctl. ``claim_run`` reaps before it claims.

Processes meant to outlive their starter (a control plane kept with
``KUBEWORKERS_KEEP_CLUSTER=1``, the demo's processes) are started with ``owned=False``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_DIR_ENV = "KUBEWORKERS_RUN_DIR"
RUN_OWNER_ENV = "KUBEWORKERS_RUN_OWNER"
PR_SET_PDEATHSIG = 1

_libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
_prctl = _libc.prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def _die_with_parent(parent: int) -> Callable[[], None]:
    """The ``preexec_fn``: runs in the child between fork and exec. Only syscalls, no imports."""

    def arm() -> None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: nobody would signal us
            os.kill(os.getpid(), signal.SIGKILL)

    return arm


# --------------------------------------------------------------------------- the spawner thread

_requests: queue.Queue[tuple[Callable[[], subprocess.Popen[bytes]], Future[subprocess.Popen[bytes]]]] = queue.Queue()
_spawner_lock = threading.Lock()
_spawner_thread: threading.Thread | None = None


def _spawner() -> None:
    while True:
        start, result = _requests.get()
        try:
            result.set_result(start())
        except BaseException as exc:
            result.set_exception(exc)


def _in_spawner_thread(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    global _spawner_thread
    with _spawner_lock:
        if _spawner_thread is None or not _spawner_thread.is_alive():
            # A daemon thread that never returns: it ends only with the process, and so do its children.
            _spawner_thread = threading.Thread(target=_spawner, name="kw-spawner", daemon=True)
            _spawner_thread.start()
    result: Future[subprocess.Popen[bytes]] = Future()
    _requests.put((start, result))
    return result.result()


# --------------------------------------------------------------------------- ownership


@dataclass(frozen=True)
class Run:
    """A claimed state directory and the process that owns what is started in it."""

    state_dir: str
    owner: str


_run: Run | None = None


def process_token(pid: int) -> str | None:
    """``<pid>:<start time>``: names one process even after its pid is reused; None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return f"{pid}:{fields[19]}"  # field 22 of stat: start time in clock ticks since boot


def owner_alive(token: str) -> bool:
    pid, _, _ = token.partition(":")
    return pid.isdigit() and process_token(int(pid)) == token


def claim_run(state_dir: str | os.PathLike[str]) -> list[int]:
    """Reap what a dead earlier run left in ``state_dir``, then mark this process as its owner.

    Returns the pids reaped. Processes :func:`spawn` starts from now on carry the marks.
    """
    global _run
    directory = str(Path(state_dir).resolve())
    reaped = reap_stale(directory)
    token = process_token(os.getpid())
    assert token is not None
    _run = Run(directory, token)
    return reaped


def current_run() -> Run | None:
    """The run this process claimed, or the one it inherited from the process that started it."""
    if _run is not None:
        return _run
    directory, owner = os.environ.get(RUN_DIR_ENV), os.environ.get(RUN_OWNER_ENV)
    return Run(directory, owner) if directory and owner else None


def _records(state_dir: str) -> Path:
    return Path(state_dir) / "runs"


def _record(run: Run, pid: int) -> None:
    token = process_token(pid)
    if token is None:
        return
    records = _records(run.state_dir)
    records.mkdir(parents=True, exist_ok=True)
    with (records / f"{run.owner}.pids").open("a") as out:
        out.write(token + "\n")


def recorded_processes(state_dir: str) -> Iterator[tuple[int, Run]]:
    """Every live process recorded in ``state_dir``'s run records, with its run."""
    records = _records(state_dir)
    if not records.is_dir():
        return
    for path in records.glob("*.pids"):
        owner = path.name.removesuffix(".pids")
        for token in path.read_text().split():
            pid = int(token.partition(":")[0])
            if process_token(pid) == token:
                yield pid, Run(state_dir, owner)


def marked_processes() -> Iterator[tuple[int, Run]]:
    """Every process of ours that carries run marks, with them."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            raw = (entry / "environ").read_bytes()
        except OSError:
            continue  # gone, or not ours to read
        env = dict(item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
        directory, owner = env.get(RUN_DIR_ENV.encode()), env.get(RUN_OWNER_ENV.encode())
        if directory and owner:
            yield int(entry.name), Run(directory.decode(errors="replace"), owner.decode(errors="replace"))


def _of_dir(directory: str) -> dict[int, Run]:
    found = {pid: run for pid, run in marked_processes() if run.state_dir == directory}
    found.update(recorded_processes(directory))
    return found


def reap_stale(state_dir: str | os.PathLike[str]) -> list[int]:
    """SIGKILL every process of ``state_dir``'s runs whose owner is no longer alive."""
    directory = str(Path(state_dir).resolve())
    reaped = []
    for pid, run in _of_dir(directory).items():
        if not owner_alive(run.owner):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue
            reaped.append(pid)
    for path in _records(directory).glob("*.pids"):
        if not owner_alive(path.name.removesuffix(".pids")):
            path.unlink(missing_ok=True)
    if reaped:
        print(f"[processes] reaped {len(reaped)} process(es) left by an earlier run in {directory}: {reaped}",
              file=sys.stderr, flush=True)
    return reaped


def processes_of(state_dir: str | os.PathLike[str], owner: str) -> list[int]:
    """Pids of the live processes of the run of ``owner`` (a :func:`process_token`) in ``state_dir``."""
    directory = str(Path(state_dir).resolve())
    return sorted(pid for pid, run in _of_dir(directory).items() if run.owner == owner)


# --------------------------------------------------------------------------- spawning


def spawn(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    owned: bool = True,
    new_session: bool = False,
    **popen: Any,
) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, ...)`` for a process that dies with this one (``owned``, the default).

    ``env`` defaults to this process's environment. An owned process gets the run marks of
    :func:`current_run`; a process started with ``owned=False`` gets neither the marks nor
    the parent-death signal (it is meant to outlive us). ``new_session`` puts it in a session
    of its own, so a Ctrl-C at the terminal reaches only us, and we decide how it ends.
    """
    child_env = dict(os.environ if env is None else env)
    child_env.pop(RUN_DIR_ENV, None)
    child_env.pop(RUN_OWNER_ENV, None)
    run = current_run()
    if owned and run is not None:
        child_env[RUN_DIR_ENV] = run.state_dir
        child_env[RUN_OWNER_ENV] = run.owner
    args = [os.fspath(a) for a in argv]

    def start() -> subprocess.Popen[bytes]:
        # preexec_fn is unsafe with threads when it runs Python that takes locks; ours makes
        # three syscalls through a prctl resolved at import, and nothing else.
        return subprocess.Popen(
            args, env=child_env, start_new_session=new_session,
            preexec_fn=_die_with_parent(os.getpid()) if owned else None,  # noqa: PLW1509
            **popen,
        )

    if not owned:
        return start()
    proc = _in_spawner_thread(start)
    if run is not None:
        _record(run, proc.pid)
    return proc
