"""Where a suite's results go: a JSON file, the terminal, and its section of docs/benchmarks.md.

docs/benchmarks.md is prose written by hand (method, fairness, the plan) with one generated
block per suite between ``<!-- <suite>:begin -->`` and ``<!-- <suite>:end -->``; a full run
rewrites only its own block, so the prose stays true and the tables stay current.
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
PLOTS = REPO / "docs" / "benchmarks"
RESULTS = REPO / "benchmarks" / "results"


@dataclass
class SuiteResult:
    """What a suite hands back: data for JSON, a table for the terminal, markdown for the doc."""

    suite: str
    data: dict[str, Any]
    text: str
    markdown: str
    plots: list[Path] = field(default_factory=list)


def machine() -> dict[str, Any]:
    """The machine the figures come from (and how busy it was)."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_kib = 0
    try:
        mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        pass
    redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, check=False).stdout.split()
    return {
        "cpu": model,
        "cpus": os.cpu_count(),
        "memory_gib": round(mem_kib / 2**20, 1),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "redis": next((p[2:] for p in redis if p.startswith("v=")), "?"),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m['when']}; {m['cpus']} CPUs ({m['cpu']}), {m['memory_gib']} GiB, Linux {m['kernel']}, "
            f"Python {m['python']}, redis-server {m['redis']}; load average at the end {m['load_average_1m']}")


def write_json(result: SuiteResult, path: Path | None) -> Path:
    if path is None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{result.suite}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result.data, indent=2, default=str) + "\n")
    return path


def replace_block(text: str, suite: str, body: str) -> str:
    """``text`` with the block of ``suite`` replaced by ``body`` (appended at the end if missing)."""
    begin, end = f"<!-- {suite}:begin -->", f"<!-- {suite}:end -->"
    block = f"{begin}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
    if pattern.search(text):
        return pattern.sub(lambda _m: block, text)
    return text.rstrip() + "\n\n" + block + "\n"


def update_doc(result: SuiteResult, doc: Path = DOC) -> None:
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    doc.write_text(replace_block(text, result.suite, result.markdown))


#: Where plots go: docs/benchmarks/ when the doc is updated, else the (git-ignored) results folder.
_plot_dir = [PLOTS]


def plots_to_docs(enabled: bool) -> None:
    _plot_dir[0] = PLOTS if enabled else RESULTS / "plots"


def plots_in_docs() -> bool:
    return _plot_dir[0] == PLOTS


def plot_path(name: str) -> Path:
    _plot_dir[0].mkdir(parents=True, exist_ok=True)
    return _plot_dir[0] / name


def relative_to_doc(path: Path) -> str:
    return os.path.relpath(path, DOC.parent)


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend (the ``bench`` extra), or None when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_plot(plt: Any, fig: Any, name: str) -> Path:
    """Lay out, write (``plot_path(name)``) and close a figure; returns where it went."""
    fig.tight_layout()
    path = plot_path(name)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def image_lines(alt: str, plots: list[Path]) -> list[str]:
    """Markdown lines showing ``plots`` in docs/benchmarks.md."""
    out: list[str] = []
    for p in plots:
        out += ["", f"![{alt}]({relative_to_doc(p)})"]
    return out
