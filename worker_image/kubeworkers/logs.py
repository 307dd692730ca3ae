"""Structured logging: one JSON object per line, with the job's id and handler when there is one.

A busy worker logs two lines per job, thousands per second, so the handler is
built for that: the timestamp text is reused within a millisecond, caller lookup
and process/thread names are off, and lines are written through a buffer that is
flushed at most every :data:`FLUSH_SECONDS` (and on exit), not after every line.
"""

from __future__ import annotations

import atexit
import json
import logging
import sys
import time
from typing import Any, TextIO

#: LogRecord attributes copied into the JSON line when present (passed via ``extra=``).
FIELDS = ("job_id", "handler", "state", "attempt", "worker", "pool", "namespace", "duration", "error",
          "reason", "entry", "port")

#: Longest a log line waits in the buffer.
FLUSH_SECONDS = 0.2


class JsonFormatter(logging.Formatter):
    """Formats a record as ``{"ts": ..., "level": ..., "logger": ..., "msg": ..., <fields>}``."""

    _second = -1
    _prefix = ""

    def timestamp(self, created: float) -> str:
        second = int(created)
        if second != self._second:
            self._second = second
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self._prefix}.{int((created - second) * 1000):03d}Z"

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": self.timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        values = record.__dict__
        for name in FIELDS:
            value = values.get(name)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        try:
            return json.dumps(line)
        except TypeError:
            return json.dumps(line, default=str)


class BufferedStreamHandler(logging.StreamHandler[TextIO]):
    """A StreamHandler that flushes when a line has waited :data:`FLUSH_SECONDS`, on warnings, and at exit.

    Call :meth:`flush` from a timer for idle periods (the worker does, with its promote loop).
    """

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self._last_flush = time.monotonic()
        self._dirty = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.stream.write(self.format(record) + "\n")
            self._dirty = True
            now = time.monotonic()
            if record.levelno >= logging.WARNING or now - self._last_flush >= FLUSH_SECONDS:
                self.flush()
        except Exception:
            self.handleError(record)

    def write_line(self, level: int, line: str) -> None:
        self.stream.write(line + "\n")
        self._dirty = True
        if level >= logging.WARNING or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if self._dirty:
            self._dirty = False
            self._last_flush = time.monotonic()
            super().flush()


_handler: BufferedStreamHandler | None = None


def configure(level: str = "INFO", fmt: str = "json") -> None:
    """Send kubeworkers' (and the handlers') logs to stderr in the chosen format."""
    global _handler
    # Per-record costs nobody reads in a worker's JSON lines.
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    logging._srcfile = None  # skips the caller lookup per record
    _handler = BufferedStreamHandler(sys.stderr)
    if fmt == "json":
        _handler.setFormatter(JsonFormatter())
    else:
        _handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [_handler]
    root.setLevel(level.upper())
    atexit.register(_handler.flush)


_quote = json.encoder.encode_basestring_ascii
_LEVELS = {logging.DEBUG: "debug", logging.INFO: "info", logging.WARNING: "warning", logging.ERROR: "error",
           logging.CRITICAL: "critical"}


def _json_value(value: Any) -> str:
    if isinstance(value, str):
        return str(_quote(value))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(value, default=str)


class JobLog:
    """The per-job state-change lines, which a busy worker writes thousands of per second.

    With the JSON handler of :func:`configure` in place the line is written
    directly (no LogRecord); otherwise (e.g. under pytest's log capture) it goes
    through ``logging`` like any other line, with the same fields.
    """

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger

    def enabled(self, level: int) -> bool:
        """Whether a line of ``level`` is written: callers on every job's path ask first, so that a
        worker logging at WARNING does not build the fields of lines nobody writes."""
        return self.logger.isEnabledFor(level)

    def __call__(self, level: int, msg: str, fields: dict[str, Any]) -> None:
        if not self.logger.isEnabledFor(level):
            return
        handler = _handler
        formatter = handler.formatter if handler is not None else None
        if handler is None or not isinstance(formatter, JsonFormatter) or logging.getLogger().handlers != [handler]:
            self.logger.log(level, msg, extra=fields)
            return
        # Assembled by hand: the same JSON as the formatter's, at a third of json.dumps' cost.
        parts = [
            '{"ts": "', formatter.timestamp(time.time()), '", "level": "', _LEVELS.get(level, "info"),
            '", "logger": ', _quote(self.logger.name), ', "msg": ', _quote(msg),
        ]
        for key, value in fields.items():
            if value is not None:
                parts += [', "', key, '": ', _json_value(value)]
        parts.append("}")
        text = "".join(parts)
        handler.write_line(level, text)


def flush() -> None:
    """Write out buffered log lines (called periodically by the worker)."""
    if _handler is not None:
        _handler.flush()
