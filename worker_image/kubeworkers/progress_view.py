"""``kubeworkers submit --wait``: what the person waiting sees while the job runs.

On a terminal, one live line redrawn in place (carriage return, then erase to the end of the
line): a bar of the handler's last ``ctx.progress`` fraction, the percentage, the job's state,
the time waited and the handler's message. Anywhere else (a pipe, a file, a CI log), one plain
line per change of the progress or the message, with no control characters, in the form
``kubeworkers run-local`` prints (``progress 50% <message>``). Both go to stderr: stdout keeps
what scripts read today, the job id and then the finished record as JSON. At the end the bar's
line is erased and one final line says how the job ended.

The job is watched by polling its record, not by reading the events stream: the record is the
job's truth and stays for its result TTL, so a finished job is never missed however late a poll
comes, while a pool's events stream (``kw:{ns/pool}:events``) carries every job of the pool (a
watcher would receive every other job's events too) and is trimmed to about 100,000 entries
(under load it could lose the very event it waits for). Polls back off from 5 ms to
:data:`POLL_MAX_S` with a sleep in between: about ten small reads a second, no spinning. A
progress report and the next one within one poll interval show as the later one (the worker's
outbox coalesces them the same way).

Everything here is pure but :func:`watch`, which is given its reads, clock, sleep and output,
and :func:`terminal_width`.
"""

from __future__ import annotations

import os
import shutil
import time
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TextIO

from kubeworkers.protocol import JobRecord, JobState

#: Longest pause between two polls of the record, seconds: how stale the bar can be.
POLL_MAX_S = 0.1
#: Widest the bar itself gets, in cells (the rest of the line is for the text).
BAR_MAX_CELLS = 30
#: Narrowest bar worth drawing; below it the line is text only.
BAR_MIN_CELLS = 5
#: Columns the state (the longest: ``Succeeded``, ``Cancelled``) and the time waited take in the bar.
STATE_CELLS = max(len(state.value) for state in JobState)
ELAPSED_CELLS = len("59m59s")
#: Back to the start of the line and erase it: how a frame ends its predecessor, and the end.
CLEAR = "\r\x1b[K"
#: Erase from the cursor to the end of the line (after a frame's text: no flicker).
ERASE_TO_END = "\x1b[K"


@dataclass(frozen=True)
class Shown:
    """What a plain line reports: the fraction and the (printable) message. A new line is
    printed only when these change."""

    progress: float | None
    message: str


#: Before the first poll: nothing reported, so a job that never reports prints no line.
NOTHING = Shown(None, "")


def use_bar(is_terminal: bool, term: str | None) -> bool:
    """Draw the live bar (True) or print plain lines (False): a bar only on a terminal that
    understands the erase sequence (``TERM=dumb`` does not)."""
    return is_terminal and term != "dumb"


def printable(text: str | None) -> str:
    """``text`` as one line that cannot move the cursor: every control character (newline, tab,
    escape...) a space, ends stripped. A handler's message is its own text, not ours to obey."""
    if not text:
        return ""
    return "".join(c if c.isprintable() else " " for c in text).strip()


def cells(text: str) -> int:
    """How many terminal columns ``text`` takes (wide East Asian characters two, combining none)."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1
               for c in text)


def fit(text: str, width: int) -> str:
    """``text`` cut to at most ``width`` columns, ending in ``...`` when cut."""
    if cells(text) <= width:
        return text
    if width <= 3:
        return "." * max(width, 0)
    out, used = [], 0
    for c in text:
        used += cells(c)
        if used > width - 3:
            break
        out.append(c)
    return "".join(out) + "..."


def percent(fraction: float | None) -> str:
    """``50%``; ``--`` when nothing was reported. Never ``100%`` before the fraction is 1."""
    if fraction is None:
        return "--"
    whole = round(max(0.0, min(fraction, 1.0)) * 100)
    return f"{99 if whole == 100 and fraction < 1 else whole}%"


def elapsed_text(seconds: float) -> str:
    """``4.2s``, ``3m07s``, ``1h02m09s``."""
    if seconds < 60:
        return f"{max(seconds, 0.0):.1f}s"
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def bar_line(fraction: float | None, message: str | None, state: JobState, elapsed_s: float, width: int) -> str:
    """The live line for a terminal ``width`` columns wide, without the control sequences
    around it: ``[#########---------]  50%   4.2s  Running    step 5 of 10``.

    It takes at most ``width - 1`` columns (a line filling the last column wraps on some
    terminals, and then ``\\r`` no longer returns to its start); the message is cut first, then
    the bar narrows, then goes.
    """
    limit = max(width - 1, 0)
    # Padded, so the bar and the message keep their columns as the state and the time change.
    status = f"{percent(fraction):>4} {elapsed_text(elapsed_s):>{ELAPSED_CELLS}}  {state.value:<{STATE_CELLS}}"
    # A third of what is left, so the message has the rest.
    bar_cells = min(BAR_MAX_CELLS, (limit - len(status) - 3) // 3)
    if bar_cells >= BAR_MIN_CELLS:
        filled = 0 if fraction is None else round(max(0.0, min(fraction, 1.0)) * bar_cells)
        head = f"[{'#' * filled}{'-' * (bar_cells - filled)}] {status}"
    else:
        head = status.strip()
    text = printable(message)
    room = limit - cells(head) - 2
    if text and room >= 4:
        return f"{head}  {fit(text, room)}"
    return fit(head.rstrip(), limit)


def frame(line: str) -> str:
    """What redraws the live line: back to its start, the text, erase what a longer one left."""
    return f"\r{line}{ERASE_TO_END}"


def plain_line(shown: Shown, state: JobState) -> str:
    """One plain progress line: ``progress 50% step 5 of 10``, the state added when the job is
    not running (``progress 40% attempt 1/2 failed (...); retrying in 1.0s (Queued)``)."""
    line = f"progress {percent(shown.progress)}"
    if shown.message:
        line += f" {shown.message}"
    if state is not JobState.RUNNING:
        line += f" ({state.value})"
    return line


def shown(record: JobRecord) -> Shown:
    """What a plain line would report of ``record``."""
    return Shown(record.progress, printable(record.message))


def worth_a_line(before: Shown, now: Shown) -> bool:
    """A plain line is printed when the progress or the message changed to something: a new
    attempt clearing them (both back to nothing) says nothing worth a line."""
    return now not in (before, NOTHING)


def final_line(record: JobRecord, elapsed_s: float) -> str:
    """How the job ended, one line: ``<id>: Succeeded after 4.2s``, or for a job that did not
    succeed ``<id>: Failed after 0.3s: RuntimeError: disk on fire (attempt 2 of 2)``."""
    line = f"{record.job_id}: {record.state.value} after {elapsed_text(elapsed_s)}"
    if record.state is JobState.SUCCEEDED:
        return line
    why = printable(record.message) or (printable(f"{record.error.type}: {record.error.message}")
                                        if record.error else "")
    return f"{line}: {' '.join(why.split())}" if why else line


#: Columns assumed when the terminal does not say (a pseudo-terminal nobody sized says 0).
DEFAULT_WIDTH = 80


def terminal_width(stream: TextIO) -> int:
    """Columns of the terminal: ``shutil.get_terminal_size`` (``COLUMNS``, else stdout's
    terminal), falling back on ``stream``'s own terminal when stdout is not one (``| jq``),
    then on :data:`DEFAULT_WIDTH`."""
    try:
        own = os.get_terminal_size(stream.fileno())
    except (OSError, ValueError, AttributeError):
        own = os.terminal_size((DEFAULT_WIDTH, 24))
    if own.columns <= 0:
        own = os.terminal_size((DEFAULT_WIDTH, own.lines or 24))
    columns = shutil.get_terminal_size(own).columns
    return columns if columns > 0 else DEFAULT_WIDTH


def watch(
    read: Callable[[], JobRecord],
    out: TextIO,
    *,
    job_id: str,
    bar: bool,
    timeout: float | None,
    delays: Iterable[float],
    width: Callable[[], int] = lambda: DEFAULT_WIDTH,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
    interrupted: Callable[[], bool] = lambda: False,
) -> JobRecord:
    """Poll ``read`` (the job's record) until the job has finished, drawing its progress on
    ``out`` (the bar, or plain lines), pausing ``delays`` in turn between polls; then erase the
    bar, print :func:`final_line` and return the finished record.

    :class:`TimeoutError` (``job <id> is still <state> after <timeout>s``) once ``timeout``
    seconds have passed; whatever ``read`` raises, and a ``KeyboardInterrupt``, go through too,
    the bar's line erased first, so the terminal is left clean. ``interrupted`` (asked after each
    pause) turns a Ctrl-C noted by a signal handler into that ``KeyboardInterrupt`` here, between
    two polls, rather than in the middle of a write to ``out``.
    """
    start = clock()
    last_frame = ""
    last_shown = NOTHING
    try:
        for delay in delays:
            record = read()
            elapsed = clock() - start
            if record.state.finished:
                break
            if bar:
                text = frame(bar_line(record.progress, record.message, record.state, elapsed, width()))
                if text != last_frame:
                    out.write(text)
                    out.flush()
                    last_frame = text
            elif worth_a_line(last_shown, now := shown(record)):
                out.write(plain_line(now, record.state) + "\n")
                out.flush()
                last_shown = now
            if timeout is not None and elapsed >= timeout:
                raise TimeoutError(f"job {job_id} is still {record.state.value} after {timeout}s")
            sleep(delay)
            if interrupted():
                raise KeyboardInterrupt
        else:
            raise AssertionError("the poll delays ended before the job did")
    finally:
        if last_frame:
            out.write(CLEAR)
            out.flush()
    out.write(final_line(record, elapsed) + "\n")
    out.flush()
    return record
