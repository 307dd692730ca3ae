"""The web console as a real process (``python -m kubeworkers ui``), for the console's browser tests
(the browser itself: :func:`hack.browser.chrome`)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from hack import processes
from hack.polling import WaitTimeout, wait_for

REPO = Path(__file__).resolve().parents[2]


class ConsoleProcess:
    """``python -m kubeworkers ui`` on a free port, logging to a file; ``url`` is its address."""

    def __init__(self, redis_url: str, *args: str) -> None:
        self.log_path = Path(tempfile.mkdtemp(prefix="kw-console-")) / "ui.log"
        self._log = self.log_path.open("wb")
        env = {k: v for k, v in os.environ.items() if not k.startswith("KUBEWORKERS_")}
        env["PYTHONPATH"] = str(REPO)
        self.proc = processes.spawn([sys.executable, "-m", "kubeworkers", "ui", "--redis-url", redis_url,
                                     "--port", "0", *args], env=env, cwd=REPO, stdout=self._log,
                                    stderr=subprocess.STDOUT)
        try:
            port = wait_for(self._port, 30, "the console to listen", every=0.05)
        except WaitTimeout as exc:
            self.close()
            raise AssertionError(f"{exc}:\n{self.log()}") from None
        self.url = f"http://127.0.0.1:{port}"

    def _port(self) -> int | None:
        if self.proc.poll() is not None:
            raise AssertionError(f"the console exited early:\n{self.log()}")
        m = re.search(r"on http://127\.0\.0\.1:(\d+)/", self.log())
        return int(m.group(1)) if m else None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
