"""The console's pages (kubeworkers.console.pages) escape everything they show, carry no inline
script or style, offer actions only when enabled and then only as POST forms with the CSRF token,
and show what the CLI shows (the jobs index's rows, the attempt history, the stats)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest
from kubeworkers import dlq, inspection
from kubeworkers.console import forms, pages
from kubeworkers.console.reads import JobView, Outcome, PoolView
from kubeworkers.console.server import FRAGMENT_HEADER, Console
from kubeworkers.protocol import ChildCounts, JobError, JobMessage, JobRecord, JobState, WorkerHeartbeat
from kubeworkers.stats import HandlerStats, PoolStats

NOW = 1_800_000_000.0
HOSTILE = "<script>alert('x')</script><img src=x onerror=alert(1)>\"'&"
TOKEN = "f" * 64


def ctx(actions: bool = False) -> pages.Context:
    return pages.Context(namespace="default", path="/", actions=actions, csrf=TOKEN if actions else "", now=NOW)


def record(**fields: object) -> JobRecord:
    values: dict[str, object] = {"job_id": "j1", "uid": "j1", "namespace": "default", "pool": "p", "handler": "h",
                                 "state": JobState.SUCCEEDED, "attempts": 1, "max_attempts": 3,
                                 "enqueued_at": NOW - 60, "started_at": NOW - 50, "finished_at": NOW - 40}
    values.update(fields)
    return JobRecord.model_validate(values)


def hostile_record(state: JobState = JobState.FAILED) -> JobRecord:
    return record(job_id=HOSTILE, uid="u", handler=HOSTILE, state=state, input={"text": HOSTILE, HOSTILE: 1},
                  output={"echo": HOSTILE}, message=HOSTILE, progress=0.5, worker=HOSTILE, parent=HOSTILE,
                  error=JobError(type=HOSTILE, message=HOSTILE, traceback=HOSTILE), continuation=HOSTILE,
                  children=ChildCounts.of(1, 0, 1, 0), step_outputs=[HOSTILE])


def hostile_view(state: JobState = JobState.FAILED) -> JobView:
    rec = hostile_record(state)
    attempts = [inspection.Attempt(attempt=1, worker=HOSTILE, started_at=NOW - 50, ended_at=NOW - 40,
                                   outcome=HOSTILE, error={"type": HOSTILE, "message": HOSTILE}, message=HOSTILE)]
    child = record(job_id=HOSTILE, pool=HOSTILE, state=JobState.FAILED, error=JobError(type=HOSTILE, message=HOSTILE))
    return JobView(inspection.Description(rec, attempts, None), [child])


def stats_view(handler: str = HOSTILE, pool: str = "p") -> PoolView:
    h = HandlerStats(handler=handler, jobs=4, succeeded=3, failed=1, retried=2, failure_rate=0.25, duration_count=6,
                     duration_sum_s=3.0, mean_duration_s=0.5, p50_duration_s=0.4, p95_duration_s=0.9, in_flight=1,
                     queued=5)
    s = PoolStats(namespace="default", pool=pool, window_s=3600, at=NOW, handlers=[h])
    return PoolView(s, [WorkerHeartbeat(worker=HOSTILE, in_flight=1, concurrency=4)], dead_letters=2)


def dead_letters() -> list[dlq.DeadLetter | dlq.Unreadable]:
    msg = JobMessage(job_id=HOSTILE, uid="u", namespace="default", pool="p", handler=HOSTILE, input={"x": HOSTILE})
    return [dlq.DeadLetter(id="1700000000000-0", job_id=HOSTILE, handler=HOSTILE, reason=HOSTILE, attempts=3, at=NOW,
                           error=JobError(type=HOSTILE, message=HOSTILE), message=msg),
            dlq.Unreadable(id="1700000000001-0", problem=HOSTILE, fields={"m": HOSTILE})]


def every_page(actions: bool) -> dict[str, str]:
    c = ctx(actions)
    listing = inspection.Listing(rows=[hostile_record(JobState.RUNNING), hostile_record()], scanned=2)
    return {
        "pools": pages.pools_page(c, [stats_view(pool=HOSTILE)], "1h"),
        "jobs": pages.jobs_page(c, forms.JobsFilter(pool="p", handler=HOSTILE), listing, ["p"]),
        "job": pages.job_page(c, hostile_view(), notice=HOSTILE),
        "running job": pages.job_page(c, hostile_view(JobState.RUNNING)),
        "dead letters": pages.dead_letters_page(c, "p", dead_letters(), ["p"]),
        "handlers": pages.handlers_page(c, stats_view(), "1h", ["p"]),
        "error": pages.error_page(c, 400, HOSTILE),
        "refused": pages.outcome_page(c, Outcome(False, HOSTILE), "/job?pool=p&id=x"),
    }


class Elements(HTMLParser):
    """Every start tag with its attributes, and the page's text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def parsed(html: str) -> Elements:
    p = Elements()
    p.feed(html)
    return p


@pytest.mark.parametrize("actions", [False, True])
def test_every_page_shows_user_data_as_text_never_as_markup(actions: bool) -> None:
    for name, html in every_page(actions).items():
        assert "<script>alert" not in html and "<img src=x" not in html, name
        doc = parsed(html)
        scripts = [attrs for tag, attrs in doc.tags if tag == "script"]
        assert scripts == [{"src": "/static/console.js", "defer": None}], name
        assert not [t for t, _ in doc.tags if t == "img"], name
        for tag, attrs in doc.tags:
            assert not [a for a in attrs if a.startswith("on") or a == "style"], (name, tag, attrs)
        assert HOSTILE in "".join(doc.text), name  # shown, as the characters it is made of


def test_user_data_in_attributes_stays_in_its_attribute() -> None:
    html = pages.jobs_page(ctx(), forms.JobsFilter(pool="p"), inspection.Listing(rows=[hostile_record()]), ["p"])
    rows = [attrs for tag, attrs in parsed(html).tags if tag == "tr" and "data-job" in attrs]
    assert [r["data-job"] for r in rows] == [HOSTILE]
    links = [attrs["href"] for tag, attrs in parsed(html).tags if tag == "a" and "/job?" in (attrs.get("href") or "")]
    assert links and all(" " not in (h or "") and "<" not in (h or "") for h in links)


def test_actions_are_offered_only_when_enabled_as_post_forms_with_the_token() -> None:
    off = every_page(actions=False)
    for name, html in off.items():
        assert "<form method=post" not in html, name
        assert "read-only" in html
    on = every_page(actions=True)
    forms_on = [(attrs, name) for name, html in on.items() for tag, attrs in parsed(html).tags if tag == "form"
                and attrs.get("method") == "post"]
    assert {a["action"] for a, _ in forms_on} == {"/actions/retry", "/actions/cancel", "/actions/replay"}
    for name in ("job", "running job", "dead letters"):
        doc = parsed(on[name])
        tokens = [a["value"] for t, a in doc.tags if t == "input" and a.get("name") == "csrf"]
        posts = [a for t, a in doc.tags if t == "form" and a.get("method") == "post"]
        assert tokens and len(tokens) == len(posts) and set(tokens) == {TOKEN}, name
    assert 'action="/actions/retry"' in on["job"] and 'action="/actions/cancel"' not in on["job"]  # Failed: retry
    assert 'action="/actions/cancel"' in on["running job"] and 'action="/actions/retry"' not in on["running job"]


def test_a_running_jobs_row_has_a_progress_bar_and_its_message() -> None:
    rec = record(state=JobState.RUNNING, progress=0.42, message="resizing", finished_at=None)
    row = pages.job_row(ctx(), rec)
    assert '<progress max=1 value="0.420"' in row and "42%" in row and "resizing" in row
    assert "<progress" not in pages.job_row(ctx(), record())
    delayed = record(state=JobState.QUEUED, entry=None, finished_at=None)
    assert "Delayed" in pages.job_row(ctx(), delayed)  # the CLI's shown state


def test_the_job_page_shows_every_attempt_on_a_timeline() -> None:
    rec = record(state=JobState.SUCCEEDED, attempts=2, run=1)
    attempts = [inspection.Attempt(attempt=1, run=0, worker="w-a", started_at=NOW - 50, ended_at=NOW - 45,
                                   outcome="Failed", error={"type": "E", "message": "first"}),
                inspection.Attempt(attempt=1, run=1, worker="w-b", started_at=NOW - 44, ended_at=NOW - 40,
                                   outcome="Succeeded")]
    html = pages.job_page(ctx(), JobView(inspection.Description(rec, attempts, "default/nightly"), []))
    bars = [a for t, a in parsed(html).tags if t == "rect"]
    assert len(bars) == 2 and float(bars[0]["x"] or 0) < float(bars[1]["x"] or 0)
    assert "w-a" in html and "w-b" in html and "E: first" in html and "Job CR default/nightly" in html


def test_a_long_input_is_cut_with_a_pointer_to_the_cli() -> None:
    html = pages.pretty_json({"blob": "x" * (pages.JSON_SHOWN * 2)})
    assert len(html) < pages.JSON_SHOWN + 300 and "kubeworkers jobs describe --json" in html


def test_the_live_part_is_what_the_page_script_swaps_in() -> None:
    html = every_page(actions=True)["jobs"]

    class Request(dict[str, str]):
        @property
        def headers(self) -> dict[str, str]:
            return {FRAGMENT_HEADER: "1"}

    fragment = Console._html(Request(), html).text  # type: ignore[arg-type]
    assert fragment is not None and fragment.startswith("<table>") and "<header>" not in fragment
    assert re.search(r"job\(s\), newest first", fragment) and not fragment.rstrip().endswith("</html>")


def test_the_pools_page_draws_jobs_ended_per_minute_failed_ones_on_top() -> None:
    svg = pages.sparkline([(0, 0), (4, 1), (2, 0)], width=30, height=20)
    rects = [a for t, a in parsed(svg).tags if t == "rect"]
    assert [(r["class"], r["x"]) for r in rects] == [("ok", "10.0"), ("bad", "10.0"), ("ok", "20.0")]
    assert [r["height"] for r in rects] == ["15.0", "5.0", "10.0"]  # the busiest minute is full height
    assert "6 jobs ended over the last 3 minutes, at most 4 in one minute" in svg
    assert pages.sparkline([]) == ""
    view = stats_view()
    view.series = [(1, 0)] * 60
    assert "<svg class=spark" in pages.pools_page(ctx(), [view], "1h")
