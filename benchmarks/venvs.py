"""One virtualenv per peer system, pinned to exact versions, cached outside the repository.

Each peer runs in its own environment so that its dependencies (arq needs redis-py < 6,
Celery pulls kombu) never touch the project's. Environments live in
``~/.cache/kubeworkers/bench-venvs/<peer>-<version>`` and are created once: a marker file
holding the exact requirement list says the environment is complete, so a second run (or
a run interrupted half-way) only does what is missing.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

#: The redis-py and hiredis every peer gets unless its own pins forbid it: the same
#: client and parser as kubeworkers uses, so the comparison is of the queues, not of clients.
REDIS_PY = "redis==8.1.0"
HIREDIS = "hiredis==3.5.0"

CACHE = Path(os.environ.get("KUBEWORKERS_BENCH_VENVS", Path.home() / ".cache" / "kubeworkers" / "bench-venvs"))


@dataclass(frozen=True)
class PeerEnv:
    """A peer's environment: its name, its version and the exact requirements installed."""

    name: str
    version: str
    requirements: tuple[str, ...]

    @property
    def path(self) -> Path:
        return CACHE / f"{self.name}-{self.version}"

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def marker(self) -> Path:
        return self.path / ".kubeworkers-requirements"

    def ready(self) -> bool:
        return self.python.exists() and self.marker.exists() and self.marker.read_text() == self.pinned()

    def pinned(self) -> str:
        return "\n".join(self.requirements) + "\n"


#: Every peer, pinned. arq 0.28 requires redis-py < 6, so it gets redis-py 5.3.1 (same hiredis).
PEERS: dict[str, PeerEnv] = {
    env.name: env
    for env in (
        PeerEnv("celery", "5.7.0", ("celery[redis]==5.7.0", "kombu==5.7.0", REDIS_PY, HIREDIS)),
        PeerEnv("rq", "2.12.0", ("rq==2.12.0", REDIS_PY, HIREDIS)),
        PeerEnv("arq", "0.28.0", ("arq==0.28.0", "redis==5.3.1", HIREDIS)),
        PeerEnv("dramatiq", "2.2.1", ("dramatiq[redis]==2.2.1", REDIS_PY, HIREDIS)),
        PeerEnv("taskiq", "0.13.0", ("taskiq==0.13.0", "taskiq-redis==1.2.4", REDIS_PY, HIREDIS)),
    )
}


def ensure(env: PeerEnv, *, quiet: bool = True) -> Path:
    """Create ``env`` if it is missing or incomplete; returns its Python. Idempotent."""
    if env.ready():
        return env.python
    env.path.parent.mkdir(parents=True, exist_ok=True)
    if not env.python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(env.path)], check=True)
    pip = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check", *(["-q"] if quiet else [])]
    print(f"[bench] installing {env.name} {env.version} into {env.path}", file=sys.stderr)
    subprocess.run([*pip, *env.requirements], check=True)
    env.marker.write_text(env.pinned())
    return env.python


def main() -> None:
    """``python -m benchmarks.venvs``: create every peer's environment."""
    for env in PEERS.values():
        print(ensure(env))


if __name__ == "__main__":
    main()
