"""Every value the browser sends, checked before anything reads Redis with it (pure).

A page takes its filters from the query string and an action its target from a POSTed form; each
field is parsed here into a typed value or refused with :class:`BadInput`, whose one-line message
the server shows on a 400 page. The job filters reuse the CLI's own parsers
(:func:`kubeworkers.inspection.parse_state`, ``parse_since``, ``parse_limit``;
:func:`kubeworkers.stats.parse_window`), so ``?state=failed&since=1h`` means what
``kubeworkers jobs list --state failed --since 1h`` means.

Names (pools, handlers, ids) are checked for shape, not looked up: they become parts of Redis key
names, which are binary-safe, and every page escapes what it shows; the shapes only keep control
characters, whitespace and absurd lengths out of keys, URLs and logs.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from kubeworkers import inspection, stats

#: Jobs one page shows unless told (the page has a "more" link up to :data:`MAX_LIMIT`).
DEFAULT_LIMIT = 100
#: Most rows one jobs page asks for: more is a query to narrow, not a page to scroll.
MAX_LIMIT = 1000
#: Dead-letter entries one page lists (oldest first, as ``kubeworkers dlq list``).
DLQ_PAGE = 200
#: The statistics window unless told.
DEFAULT_WINDOW = "1h"

#: A pool (a WorkerPool's name, or any SDK pool name of letters, digits, ``.``, ``_``, ``-``).
POOL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
#: A namespace: a Kubernetes DNS label.
NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
#: A handler name or a job id: printable, no whitespace, bounded.
NAME = re.compile(r"[!-~]{1,512}")
#: A dead-letter stream entry id.
ENTRY_ID = re.compile(r"\d{1,20}-\d{1,20}")


class BadInput(ValueError):
    """A query or form field the console cannot use; the message is one line naming the field."""


def _one(params: Mapping[str, str], name: str) -> str | None:
    value = params.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def pool(value: str | None, *, field: str = "pool") -> str:
    if value is None:
        raise BadInput(f"{field} is required")
    if not POOL.fullmatch(value):
        raise BadInput(
            f"{field} must be a pool name (letters, digits, '.', '_', '-'; at most 253), not {value!r}"[:300])
    return value


def namespace(value: str) -> str:
    if not NAMESPACE.fullmatch(value):
        raise BadInput(f"namespace must be a Kubernetes namespace name, not {value!r}"[:300])
    return value


def name(value: str | None, field: str) -> str:
    if value is None:
        raise BadInput(f"{field} is required")
    if not NAME.fullmatch(value):
        raise BadInput(f"{field} must be 1 to 512 printable characters without spaces"[:300])
    return value


def entry_id(value: str | None) -> str:
    if value is None or not ENTRY_ID.fullmatch(value):
        raise BadInput(f"entry must be a dead-letter entry id such as 1700000000000-0, not {value!r}"[:300])
    return value


@dataclass(frozen=True)
class JobsFilter:
    """The jobs page's query: a pool and :class:`kubeworkers.inspection.Query`'s fields as typed,
    to put back into links and forms."""

    pool: str
    state: str | None = None
    handler: str | None = None
    since: str | None = None
    limit: int = DEFAULT_LIMIT

    def query(self) -> inspection.Query:
        """The CLI's query for this filter (``jobs list`` with the same flags)."""
        return inspection.Query(state=self.state, handler=self.handler,
                                since_seconds=None if self.since is None else inspection.parse_since(self.since),
                                limit=self.limit)

    def params(self) -> dict[str, str]:
        """The filter as query parameters (those set)."""
        out = {"pool": self.pool}
        for key in ("state", "handler", "since"):
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        if self.limit != DEFAULT_LIMIT:
            out["limit"] = str(self.limit)
        return out


def jobs_filter(params: Mapping[str, str], default_pool: str | None = None) -> JobsFilter:
    """``/jobs?pool=&state=&handler=&since=&limit=``; :class:`BadInput` naming the bad field."""
    unknown = sorted(set(params) - {"pool", "state", "handler", "since", "limit"})
    if unknown:
        raise BadInput(f"unknown query parameter {unknown[0]!r}"[:300])
    chosen = pool(_one(params, "pool") or default_pool)
    state = _one(params, "state")
    if state is not None:
        try:
            state = inspection.parse_state(state)
        except ValueError as exc:
            raise BadInput(str(exc).replace("--state", "state")[:300]) from None
    handler = _one(params, "handler")
    if handler is not None:
        handler = name(handler, "handler")
    since = _one(params, "since")
    if since is not None:
        try:
            inspection.parse_since(since)
        except ValueError as exc:
            raise BadInput(str(exc).replace("--since", "since")[:300]) from None
    limit_text = _one(params, "limit")
    limit = DEFAULT_LIMIT
    if limit_text is not None:
        if not limit_text.isdigit() or not 1 <= int(limit_text) <= MAX_LIMIT:
            raise BadInput(f"limit must be a whole number from 1 to {MAX_LIMIT}, not {limit_text!r}"[:300])
        limit = inspection.parse_limit(int(limit_text))
    return JobsFilter(pool=chosen, state=state, handler=handler, since=since, limit=limit)


def window(params: Mapping[str, str]) -> tuple[str, int]:
    """``?window=``: the text (for links) and seconds; the stats module's rules (whole minutes to 24 h)."""
    text = _one(params, "window") or DEFAULT_WINDOW
    try:
        return text, stats.parse_window(text)
    except ValueError as exc:
        raise BadInput(f"window: {exc}"[:300]) from None


def only(params: Mapping[str, str], *allowed: str) -> None:
    """Refuse query parameters a page does not take (a typo should not silently show everything)."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise BadInput(f"unknown query parameter {unknown[0]!r}"[:300])


def job_ref(params: Mapping[str, str]) -> tuple[str, str]:
    """``pool`` and ``id`` of one job (the job page and the retry and cancel forms)."""
    return pool(_one(params, "pool")), name(_one(params, "id"), "id")
