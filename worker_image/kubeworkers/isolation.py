"""Process isolation: one attempt of a ``@handler(isolation="process")`` runs in a child process.

Work that cannot be interrupted (CPU-bound loops, blocking C calls, a sync function that never
polls ``ctx.cancelled``) cannot be stopped inside the worker: Python cannot kill a thread, and a
coroutine only stops at an ``await``. In a child process it can, as Celery's hard time limit
kills its pool child: on a hard timeout, a cancel, a lost lease or shutdown the worker sends the
child SIGTERM, then SIGKILL after half the cancel grace, and waits for it to go, so its slot
and lease are free whatever the handler does. A child that dies (a segfault, ``os._exit``,
the OOM killer) fails that attempt with ``ProcessCrashed`` and the signal or exit code; the
worker itself is untouched.

The child is a fresh interpreter (``python -m kubeworkers.isolation``, like multiprocessing's
*spawn*): it inherits no locks, threads or sockets of the worker, and writes no file (the
root filesystem may be read-only). It imports the worker's ``--import`` modules and the
handler's own module, with the worker's ``sys.path``. Parent and child speak JSON lines: the
request on the child's stdin; progress reports and the one final reply on a pipe (the
child's original stdout; what the handler prints goes to stderr, the worker's log).
The soft timeout is the child's own (:mod:`kubeworkers.softlimit`, as in the worker).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
import os
import signal
import sys
from collections.abc import Callable
from typing import IO, Any

from pydantic import ValidationError

from kubeworkers import attempts, softlimit
from kubeworkers.context import JobContext
from kubeworkers.errors import SoftTimeout, cap_text, job_error
from kubeworkers.protocol import JobError
from kubeworkers.registry import HandlerSpec, inspect_handler

#: The JobContext fields that cross to the child.
CONTEXT_FIELDS = ("job_id", "uid", "namespace", "pool", "handler", "attempt", "max_attempts", "worker", "enqueued_at",
                  "run")


def request(
    spec: HandlerSpec, inp: dict[str, Any], context: dict[str, Any], *, imports: list[str],
    soft_timeout: float | None, max_output_bytes: int,
) -> dict[str, Any]:
    """What the child needs to run one attempt, as JSON-ready data."""
    return {
        "sys_path": sys.path, "imports": imports, "module": spec.func.__module__, "qualname": spec.func.__qualname__,
        "handler": spec.name, "input": inp, "context": context, "soft_timeout": soft_timeout,
        "max_output_bytes": max_output_bytes,
    }


def crash_error(returncode: int) -> JobError:
    """Why a child that gave no reply ended: the signal that killed it, or its exit code."""
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (out of memory?)" if -returncode == signal.SIGKILL else ""
        why = f"was killed by {name}{hint}"
    else:
        why = f"exited with code {returncode}"
    return JobError(type="ProcessCrashed", retryable=True,
                    message=f"the handler's child process {why} before it replied")


async def run(
    req: dict[str, Any],
    *,
    kill_grace: float,
    on_progress: Callable[[float, str | None], None],
) -> attempts.Output | JobError:
    """Run one attempt in a child; its output, or the error it ended with.

    Cancelling the awaiting task kills the child (SIGTERM, then SIGKILL after ``kill_grace``) and
    waits for it before the cancellation goes on.
    """
    limit = 4 * int(req["max_output_bytes"]) + 65536  # one JSON line may hold the whole output, escaped
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "kubeworkers.isolation",
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=limit,
    )
    final: dict[str, Any] | None = None
    try:
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.write(json.dumps(req).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await proc.stdin.drain()
        proc.stdin.close()
        async for line in proc.stdout:
            try:
                reply = json.loads(line)
            except ValueError:
                continue
            if "progress" in reply:
                on_progress(float(reply["progress"]), reply.get("message"))
            else:
                final = reply
        returncode = await proc.wait()
    except BaseException:
        await _kill(proc, kill_grace)
        raise
    if final is None:
        return crash_error(returncode)
    if "error" in final:
        return JobError.model_validate(final["error"])
    return attempts.Output(final["output"], final.get("note", ""))


async def _kill(proc: asyncio.subprocess.Process, grace: float) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.terminate()
    try:
        await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await asyncio.shield(proc.wait())


# --------------------------------------------------------------------------- the child


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this child if the worker dies first (an orphan would run on unseen)."""
    with contextlib.suppress(Exception):
        import ctypes

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _resolve(req: dict[str, Any]) -> HandlerSpec:
    for path in reversed(req["sys_path"]):
        if path not in sys.path:
            sys.path.insert(0, path)
    for module in [*req["imports"], req["module"]]:
        importlib.import_module(module)
    target: Any = sys.modules[req["module"]]
    for part in req["qualname"].split("."):
        target = getattr(target, part)
    return inspect_handler(req["handler"], target)


async def _attempt(req: dict[str, Any], send: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    try:
        spec = _resolve(req)
    except Exception as exc:
        return {"error": JobError(type="HandlerNotImportable", retryable=False, message=cap_text(
            f"the child process could not import {req['module']}.{req['qualname']}: {type(exc).__name__}: {exc}"))
            .model_dump()}
    try:
        inp = spec.input_model.model_validate(req["input"])
    except ValidationError as exc:
        return {"error": JobError(type="InvalidInput", retryable=False, message=cap_text(str(exc))).model_dump()}
    loop = asyncio.get_running_loop()
    ctx = JobContext(**{k: req["context"][k] for k in CONTEXT_FIELDS}, loop=loop,
                     progress_sink=lambda f, m: send({"progress": f, "message": m}))
    kwargs = {spec.context_param: ctx} if spec.context_param else {}
    task = asyncio.current_task()
    assert task is not None
    soft = None
    if req["soft_timeout"] is not None:
        soft = softlimit.SoftLimit(float(req["soft_timeout"]), ctx, is_async=spec.is_async)
        soft.arm(task)
    try:
        if spec.is_async:
            coro = spec.func(inp, **kwargs)
            result = await (softlimit.interruptible(coro, soft) if soft is not None else coro)
        else:
            result = await asyncio.to_thread(spec.func, inp, **kwargs)
    except BaseException as exc:  # SystemExit and MemoryError too: they end this attempt, reported
        if isinstance(exc, SoftTimeout) and soft is not None and soft.expired:
            return {"error": softlimit.uncaught_error(soft, int(req["context"]["attempt"]), exc).model_dump()}
        return {"error": job_error(exc).model_dump()}
    try:
        output = attempts.encode_output(result, int(req["max_output_bytes"]))
    except attempts.InvalidOutputError as exc:
        return {"error": JobError(type="InvalidOutput", message=str(exc), retryable=False).model_dump()}
    return {"output": output.json, "note": output.note}


def main() -> int:
    """The child: read one request from stdin, run it, reply on the pipe, exit."""
    _die_with_parent()
    pipe: IO[str] = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # the handler's own prints go to stderr, not into the replies

    def send(reply: dict[str, Any]) -> None:
        pipe.write(json.dumps(reply) + "\n")

    req = json.loads(sys.stdin.readline())
    send(asyncio.run(_attempt(req, send)))
    pipe.flush()
    # Threads of a sync handler, if any, must not keep a finished attempt's process alive.
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
