"""The console's pages as HTML text (pure: data in, a string out).

Every value that came from Redis or from the browser goes through :func:`e` (:func:`html.escape`
with quotes) before it is put in the page, attributes included: job inputs, outputs, errors,
tracebacks, handler names and ids are user data, and a job whose input holds ``<script>`` shows
those characters. URLs are built with :func:`urllib.parse.urlencode` and then escaped. The pages
carry no inline script or style (the server's Content-Security-Policy forbids both); widths and
positions are SVG attributes or ``<progress>`` values.

Each page's changing part is inside ``<div id="live">``: the page script
(``static/console.js``) fetches the same URL every few seconds with the header
``X-Console-Fragment: 1`` and swaps that part in, so the page updates without a reload; with
JavaScript off the page is whole as served.
"""

from __future__ import annotations

import html
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from kubeworkers import dlq, inspection
from kubeworkers.protocol import JobRecord, JobState

from . import forms, timeline
from .backend import JobKube, PoolKube
from .reads import JobView, Outcome, PoolView

#: Seconds between two refreshes of a page's live part.
POLL_S = 2.0
#: Characters of a JSON document (input, output) shown before "…".
JSON_SHOWN = 20_000
#: Characters of an error message shown in a table row.
NOTE_SHOWN = 120


def e(value: object) -> str:
    """``value`` as text safe in HTML content and in quoted attributes."""
    return html.escape("" if value is None else str(value), quote=True)


def url(path: str, **params: object) -> str:
    """A path with its query, escaped for an ``href``."""
    query = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    return e(path + ("?" + urlencode(query) if query else ""))


@dataclass(frozen=True)
class Context:
    """What every page needs besides its data: where it is, and whether (and with which token) it may act."""

    namespace: str
    path: str = "/"
    actions: bool = False
    csrf: str = ""
    now: float = 0.0
    #: Actions need a signed-in caller (the operator-served console), and whether this one is.
    login: bool = False
    signed_in: bool = False
    #: Said in the header after the namespace ("served by the operator"); never a URL.
    source: str = ""

    @property
    def at(self) -> float:
        return self.now or time.time()


NAV = (("/", "Pools"), ("/jobs", "Jobs"), ("/dead-letters", "Dead letters"), ("/handlers", "Handlers"))


def layout(ctx: Context, title: str, body: str, *, live: str = "", notice: str = "") -> str:
    """A whole page: head, navigation, ``body`` (outside the live part) and ``live`` (inside it)."""
    nav = "".join(
        f'<a href="{e(href)}"{" aria-current=page" if ctx.path == href else ""}>{e(text)}</a>' for href, text in NAV
    )
    mode = "actions enabled" if ctx.actions else "read-only"
    account = ""
    if ctx.login and ctx.signed_in:
        account = (f'<form method=post action="/logout" class=account><input type=hidden name=csrf '
                   f'value="{e(ctx.csrf)}"><button type=submit>Sign out</button></form>')
    elif ctx.login:
        account = '<a class=account href="/login">Sign in</a>'
    return (
        "<!doctype html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        f"<title>{e(title)} · kubeworkers</title>"
        '<link rel=stylesheet href="/static/console.css">'
        '<script src="/static/console.js" defer></script></head>'
        f'<body data-poll-ms="{int(POLL_S * 1000)}">'
        f'<header><span class=brand>kubeworkers</span><nav>{nav}</nav>'
        f'<span class=where>namespace {e(ctx.namespace)}{" · " + e(ctx.source) if ctx.source else ""} · {e(mode)}'
        f'</span>{account}</header>'
        f"<main><h1>{e(title)}</h1>{notice_html(notice)}{body}"
        f'<div id=live aria-live=polite>{live}</div>'
        '<p class=foot><a href="" class=reload>Refresh</a> <span class=updated></span></p></main></body></html>\n'
    )


def notice_html(text: str) -> str:
    return f'<p class=notice role=status>{e(text)}</p>' if text else ""


def error_page(ctx: Context, status: int, message: str) -> str:
    """A 4xx/5xx page: the status and a one-line message."""
    line = " ".join(message.split())
    return layout(ctx, f"{status}", f'<p class=error role=alert>{e(line)}</p>'
                                    f'<p><a href="/">Back to the pools</a></p>')


# -------------------------------------------------------------------------------- formatting

def when(ts: float | None) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def span(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if 0 <= seconds < 0.01:
        return f"{seconds * 1000:.2f}ms"  # a no-op handler's few milliseconds, which the CLI rounds away
    return inspection.span(seconds)


def ago(ts: float | None, now: float) -> str:
    return "-" if not ts else span(max(0.0, now - ts)) + " ago"


def time_tag(ts: float | None, now: float) -> str:
    if not ts:
        return "-"
    stamp = datetime.fromtimestamp(ts, UTC).isoformat()
    return f'<time datetime="{e(stamp)}" title="{e(when(ts))}">{e(ago(ts, now))}</time>'


def state_tag(state: str) -> str:
    return f'<span class="state s-{e(state.lower())}">{e(state)}</span>'


def progress_tag(record: JobRecord) -> str:
    """A bar for a running job (or one that reported progress), with its message."""
    if record.progress is None and record.state is not JobState.RUNNING:
        return ""
    value = 0.0 if record.progress is None else min(1.0, max(0.0, record.progress))
    pct = f"{value * 100:.0f}%"
    message = f' <span class=msg>{e(record.message)}</span>' if record.message else ""
    return f'<progress max=1 value="{value:.3f}" aria-label="progress {e(pct)}">{e(pct)}</progress> {e(pct)}{message}'


def pretty_json(value: Any) -> str:
    text = json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=str)
    if len(text) > JSON_SHOWN:
        text = text[:JSON_SHOWN] + f"\n… ({len(text) - JSON_SHOWN} more characters; kubeworkers jobs describe --json)"
    return f"<pre>{e(text)}</pre>"


def short(text: str, most: int = NOTE_SHOWN) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= most else flat[:most] + "…"


def table(head: Sequence[str], rows: Iterable[str], *, body_id: str = "", empty: str = "nothing here") -> str:
    cells = "".join(f"<th scope=col>{e(h)}</th>" for h in head)
    inner = "".join(rows) or f'<tr><td colspan={len(head)} class=empty>{e(empty)}</td></tr>'
    tbody = f'<tbody id="{e(body_id)}">' if body_id else "<tbody>"
    return f"<table><thead><tr>{cells}</tr></thead>{tbody}{inner}</tbody></table>"


def action(ctx: Context, path: str, label: str, **fields: str) -> str:
    """A POST form with one button; nothing when actions are off."""
    if not ctx.actions:
        return ""
    hidden = "".join(f'<input type=hidden name="{e(k)}" value="{e(v)}">' for k, v in fields.items())
    return (f'<form method=post action="{e(path)}" class=action><input type=hidden name=csrf value="{e(ctx.csrf)}">'
            f'{hidden}<button type=submit>{e(label)}</button></form>')


def pool_picker(pools: Sequence[str], path: str, chosen: str | None) -> str:
    if not pools:
        return ""
    links = " ".join(
        f'<a href="{url(path, pool=p)}"{" aria-current=true" if p == chosen else ""}>{e(p)}</a>' for p in pools
    )
    return f"<p class=pools>Pools: {links}</p>"


# -------------------------------------------------------------------------------- pages

def pools_page(ctx: Context, views: Sequence[PoolView], window: str,
               kube: Mapping[str, PoolKube] | None = None, notice: str = "") -> str:
    """One row per pool; with ``kube`` (the operator-served console) also its replicas, the
    autoscaler's last decision and the replicas/backlog timeline."""
    kube = kube or {}
    rows = []
    for v in views:
        p = v.stats.pool
        busy = sum(w.in_flight for w in v.workers)
        slots = sum(w.concurrency for w in v.workers)
        draining = sum(1 for w in v.workers if w.draining)
        workers = f"{len(v.workers)}" + (f" ({draining} draining)" if draining else "") + (
            f", {busy}/{slots} slots busy" if v.workers else "")
        k = kube.get(p)
        kube_cells = ""
        if kube:
            kube_cells = (_replicas_cell(k) + f"<td class=decision>{_decision(k, ctx.at)}</td>"
                          f"<td>{timeline.svg(k.timeline) if k else ''}</td>")
        rows.append(
            f'<tr data-pool="{e(p)}"><th scope=row><a href="{url("/jobs", pool=p)}">{e(p)}</a></th>'
            f"{kube_cells}"
            f"<td class=num>{v.queued}{'' if v.stats.queue_complete else '+'}</td><td class=num>{v.in_flight}</td>"
            f"<td>{e(workers)}</td><td class=num>{v.per_minute:.1f}</td>"
            f"<td class=num>{v.finished}</td><td class=num>{v.failed}</td>"
            f"<td class=num>{e(span(v.mean_duration_s))}</td><td class=num>{e(span(v.slowest_p95_s))}</td>"
            f"<td>{sparkline(v.series)}</td>"
            f'<td class=num><a href="{url("/dead-letters", pool=p)}">{v.dead_letters}</a></td>'
            f'<td><a href="{url("/handlers", pool=p, window=window)}">handlers</a></td></tr>'
        )
    head: tuple[str, ...] = ("Pool",)
    if kube:
        head += ("Replicas ready/desired (min-max)", "Autoscaler's last decision", "Replicas and backlog")
    head += ("Backlog", "In flight", "Workers", f"Ended/min ({window})", f"Ended ({window})",
             f"Failed ({window})", "Mean duration", "Slowest p95", "Ended per minute", "Dead letters", "")
    form = (f'<form method=get action="/" class=filters><label>Window <input name=window value="{e(window)}" '
            'size=5 pattern="[0-9]+[smhd]?"></label> <button type=submit>Show</button></form>')
    live = table(head, rows, empty="no pools found in this namespace (none has a job stream yet)")
    return layout(ctx, "Pools", form, live=live, notice=notice)


def _replicas_cell(k: PoolKube | None) -> str:
    if k is None:
        return "<td class=replicas>-</td>"

    def n(value: int | None) -> str:
        return "?" if value is None else str(value)

    bounds = f" ({n(k.min_replicas)}-{n(k.max_replicas)})" if k.min_replicas is not None else ""
    # The WorkerPool's conditions that say something is wrong: Available not True, any other one True.
    problems = [f"{kind}: {reason}: {message}" for kind, status, reason, message in k.conditions
                if (status != "True") == (kind == "Available")]
    said = "".join(f"<br><small class=err>{e(short(p))}</small>" for p in problems)
    return f"<td class=replicas>{e(n(k.ready))}/{e(n(k.desired))}{e(bounds)}{said}</td>"


def _decision(k: PoolKube | None, now: float) -> str:
    if k is None or not k.last_scale_reason:
        return "none yet"
    at = ""
    if k.last_scale_time:
        try:
            stamp = datetime.fromisoformat(k.last_scale_time.replace("Z", "+00:00")).timestamp()
            at = f" <small>({e(ago(stamp, now))})</small>"
        except ValueError:
            at = f" <small>({e(k.last_scale_time)})</small>"
    return f"{e(short(k.last_scale_reason))}{at}"


def sparkline(series: Sequence[tuple[int, int]], width: int = 180, height: int = 28) -> str:
    """Jobs ended per minute as bars (failed ones red on top), oldest on the left; SVG, no script."""
    if not series:
        return ""
    most = max((ended for ended, _ in series), default=0) or 1
    step = width / len(series)
    bars = []
    for i, (ended, failed) in enumerate(series):
        if not ended:
            continue
        h = max(ended / most * height, 1.0)
        fh = failed / ended * h
        x = i * step
        if ended > failed:
            bars.append(f'<rect class=ok x="{x:.1f}" y="{height - h + fh:.1f}" width="{max(step - 0.5, 0.5):.1f}" '
                        f'height="{h - fh:.1f}"></rect>')
        if failed:
            bars.append(f'<rect class=bad x="{x:.1f}" y="{height - h:.1f}" width="{max(step - 0.5, 0.5):.1f}" '
                        f'height="{fh:.1f}"></rect>')
    total = sum(ended for ended, _ in series)
    label = f"{total} jobs ended over the last {len(series)} minutes, at most {most} in one minute"
    return (f'<svg class=spark viewBox="0 0 {width} {height}" width="{width}" height="{height}" role=img '
            f'aria-label="{e(label)}"><title>{e(label)}</title>{"".join(bars)}</svg>')


def _filter_form(ctx: Context, chosen: forms.JobsFilter, pools: Sequence[str]) -> str:
    options = "".join(f'<option value="{e(p)}"{" selected" if p == chosen.pool else ""}>{e(p)}</option>'
                      for p in sorted({*pools, chosen.pool}))
    states = '<option value="">any</option>' + "".join(
        f'<option value="{e(s)}"{" selected" if s == chosen.state else ""}>{e(s)}</option>' for s in inspection.STATES)
    return (
        '<form method=get action="/jobs" class=filters>'
        f"<label>Pool <select name=pool>{options}</select></label> "
        f"<label>State <select name=state>{states}</select></label> "
        f'<label>Handler <input name=handler value="{e(chosen.handler or "")}" size=16></label> '
        f'<label>Since <input name=since value="{e(chosen.since or "")}" size=6 placeholder="1h"></label> '
        f'<label>Limit <input name=limit value="{chosen.limit}" size=4 inputmode=numeric></label> '
        "<button type=submit>Filter</button></form>"
    )


def job_row(ctx: Context, record: JobRecord) -> str:
    state = inspection.shown_state(record)
    attempts = f"{record.attempts}/{record.max_attempts}" if record.max_attempts else str(record.attempts)
    when_ts = record.finished_at if record.state.finished else (record.updated_at or record.enqueued_at)
    took = span(record.finished_at - record.started_at) if record.finished_at and record.started_at else "-"
    note = ""
    if record.error is not None and record.state is not JobState.SUCCEEDED:
        note = f'<span class=err>{e(short(f"{record.error.type}: {record.error.message}"))}</span>'
    bar = progress_tag(record) if record.state is JobState.RUNNING else ""
    link = url("/job", pool=record.pool, id=record.job_id)
    return (f'<tr data-job="{e(record.job_id)}"><td><a href="{link}">{e(record.job_id)}</a></td>'
            f"<td>{state_tag(state)}</td><td>{e(record.handler)}</td><td class=num>{e(attempts)}</td>"
            f"<td>{time_tag(when_ts, ctx.at)}</td><td class=num>{e(took)}</td><td>{bar}{note}</td></tr>")


def jobs_page(ctx: Context, chosen: forms.JobsFilter, found: inspection.Listing, pools: Sequence[str]) -> str:
    rows = [job_row(ctx, rec) for rec in found.rows]
    head = ("Job", "State", "Handler", "Attempts", "When", "Took", "Progress / error")
    live = table(head, rows, body_id="job-rows", empty="no jobs match")
    live += f'<p class=count>{len(found.rows)} job(s), newest first; {found.scanned} index entries read.</p>'
    if found.exhausted:
        live += ('<p class=warn>Stopped after reading the most index entries one page may read: '
                 'narrow the query with Since or State.</p>')
    elif len(found.rows) == chosen.limit and chosen.limit < forms.MAX_LIMIT:
        more = {**chosen.params(), "limit": str(min(chosen.limit * 5, forms.MAX_LIMIT))}
        live += f'<p><a href="{url("/jobs", **more)}">Show more</a></p>'
    return layout(ctx, f"Jobs of {chosen.pool}", _filter_form(ctx, chosen, pools), live=live)


def _timeline(attempts: Sequence[inspection.Attempt], record: JobRecord, now: float) -> str:
    """Every attempt as a bar on one time axis, from the job's enqueue to its end (or now)."""
    starts = [a.started_at for a in attempts if a.started_at]
    if not starts:
        return ""
    t0 = min([*starts, *([record.enqueued_at] if record.enqueued_at else [])])
    t1 = max([now if record.state is JobState.RUNNING else 0.0, *(a.ended_at or a.started_at or t0 for a in attempts),
              record.finished_at or t0])
    total = max(t1 - t0, 1e-3)
    width, row_h = 600, 22
    bars = []
    for i, a in enumerate(attempts):
        start = a.started_at or t0
        end = a.ended_at or (now if record.state is JobState.RUNNING else start)
        x = (start - t0) / total * width
        w = max((end - start) / total * width, 2.0)
        outcome = (a.outcome or "running").lower()
        label = f"#{a.attempt} run {a.run} {a.worker or '-'} {outcome} {span(end - start)}"
        bars.append(f'<g class="o-{e(outcome)}"><title>{e(label)}</title>'
                    f'<rect x="{x:.1f}" y="{i * row_h + 2}" width="{w:.1f}" height="{row_h - 6}" rx=3></rect>'
                    f'<text x="{min(x + w + 4, width - 4):.1f}" y="{i * row_h + 15}">{e(label)}</text></g>')
    height = len(attempts) * row_h + 4
    return (f'<svg class=timeline viewBox="0 0 {width + 260} {height}" width="100%" role=img '
            f'aria-label="attempts on a timeline from {e(when(t0))} ({e(span(total))})">{"".join(bars)}</svg>')


def job_page(ctx: Context, view: JobView, notice: str = "", kube: JobKube | None = None) -> str:
    d, rec = view.description, view.description.record
    state = inspection.shown_state(rec)
    facts = [
        ("Pool", f"{rec.namespace}/{rec.pool}"),
        ("Source", f"Job CR {d.job_object} (uid {rec.uid})" if d.job_object else "SDK (no Job CR)"),
        ("Handler", rec.handler + (f" (step {rec.step.index + 1} of {len(rec.step.names)}: "
                                   f"{rec.step.names[rec.step.index]})" if rec.step else "")),
        ("Priority", rec.priority.value),
        ("Attempts", f"{rec.attempts}" + (f" of {rec.max_attempts}" if rec.max_attempts else "")
         + (f", run {rec.run}" if rec.run else "")),
        ("Worker", rec.worker or "-"),
        ("Enqueued", when(rec.enqueued_at)), ("Started", when(rec.started_at)),
        ("Finished", when(rec.finished_at) + (f" (took {span(rec.finished_at - rec.started_at)})"
                                              if rec.finished_at and rec.started_at else "")),
    ]
    if rec.not_before:
        facts.append(("Not before", when(rec.not_before)))
    if rec.parent:
        facts.append(("Parent", rec.parent))
    if rec.dead_letter:
        facts.append(("Dead letter", rec.dead_letter))
    dl = "".join(f"<dt>{e(k)}</dt><dd>{e(v)}</dd>" for k, v in facts)
    cancel_note = " (cancel requested)" if rec.cancel_requested else ""
    live = f'<p class=big>{state_tag(state)}{e(cancel_note)} {progress_tag(rec)}</p><dl class=facts>{dl}</dl>'
    buttons = ""
    if rec.state is JobState.FAILED:
        buttons += action(ctx, "/actions/retry", "Retry (run again)", pool=rec.pool, id=rec.job_id)
    if not rec.state.finished:
        buttons += action(ctx, "/actions/cancel", "Cancel", pool=rec.pool, id=rec.job_id)
    live += f"<div class=actions>{buttons}</div>" if buttons else ""
    if rec.error is not None:
        err = rec.error
        live += (f'<section><h2>Error</h2><p class=err><b>{e(err.type)}</b>: {e(err.message)}'
                 f' <small>({"retryable" if err.retryable else "not retryable"})</small></p>'
                 + (f"<details open><summary>Traceback</summary><pre>{e(err.traceback)}</pre></details>"
                    if err.traceback else "") + "</section>")
    rows = []
    for a in d.attempts:
        took = span(a.ended_at - a.started_at) if a.ended_at and a.started_at else "-"
        outcome = a.outcome or ("running" if rec.state is JobState.RUNNING else "?")
        detail = ""
        if a.error:
            detail = f"{a.error.get('type')}: {a.error.get('message')}"
        elif a.message:
            detail = a.message
        rows.append(f"<tr><td class=num>{a.attempt}</td><td class=num>{a.run}</td><td>{e(a.worker or '-')}</td>"
                    f"<td>{e(when(a.started_at))}</td><td>{e(when(a.ended_at))}</td><td class=num>{e(took)}</td>"
                    f"<td>{e(outcome)}</td><td>{e(short(detail))}</td></tr>")
    live += ("<section><h2>Attempts</h2>" + _timeline(d.attempts, rec, ctx.at)
             + table(("#", "Run", "Worker", "Started", "Ended", "Took", "Outcome", "Detail"), rows,
                     empty="no attempt recorded yet") + "</section>")
    if rec.children is not None:
        c = rec.children
        kids = [f'<tr><td><a href="{url("/job", pool=k.pool, id=k.job_id)}">{e(k.job_id)}</a></td>'
                f"<td>{e(k.pool)}</td><td>{state_tag(inspection.shown_state(k))}</td>"
                f"<td>{e(short(f'{k.error.type}: {k.error.message}') if k.error else '')}</td></tr>"
                for k in view.children]
        live += (f"<section><h2>Children</h2><p>{c.total} in all: {c.active} active, {c.succeeded} succeeded, "
                 f"{c.failed} failed, {c.cancelled} cancelled"
                 + (f"; continues with {e(rec.continuation)}" if rec.continuation else "") + "</p>"
                 + table(("Job", "Pool", "State", "Error"), kids, empty="no child record left") + "</section>")
    live += "<section><h2>Input</h2>" + pretty_json(rec.input) + "</section>"
    if rec.output is not None:
        live += "<section><h2>Output</h2>" + pretty_json(rec.output) + "</section>"
    for i, out in enumerate(rec.step_outputs):
        live += f"<section><h2>Output of step {i + 1}</h2>" + pretty_json(out) + "</section>"
    if kube is not None:
        live += _job_kube(kube, ctx.at)
    back = f'<p><a href="{url("/jobs", pool=rec.pool)}">All jobs of {e(rec.pool)}</a></p>'
    return layout(ctx, f"Job {rec.job_id}", back, live=live, notice=notice)


def _job_kube(kube: JobKube, now: float) -> str:
    """The Job CR (as the apiserver has it, its managed fields left out) and its Events."""
    rows = [f"<tr><td>{e(ev.last_seen)}</td><td>{e(ev.type)}</td><td>{e(ev.reason)}</td>"
            f"<td class=num>{ev.count}</td><td>{e(short(ev.message))}</td></tr>" for ev in kube.events]
    return (f"<section class=kube-events><h2>Events of Job CR {e(kube.name)}</h2>"
            + table(("Last seen", "Type", "Reason", "Count", "Message"), rows,
                    empty="no Events (they expire after an hour)")
            + "</section><section class=job-cr><details><summary>Job CR " + e(kube.name) + "</summary>"
            + pretty_json(kube.body) + "</details></section>")


def login_page(ctx: Context, notice: str = "") -> str:
    """Sign in with a bearer token: the console keeps it in an HttpOnly, SameSite=Strict cookie."""
    body = ("<p>This console authorises what you do here (and, if it asks for a sign-in to read, what you see) "
            "as a Kubernetes user: paste a bearer token "
            "(<code>kubectl create token &lt;service-account&gt;</code>, or your own). The console checks it "
            "with a TokenReview, then each request with a SubjectAccessReview (docs/console.md). The token "
            "is kept in a cookie this page's script cannot read, sent only to this console, and never shown.</p>"
            '<form method=post action="/login" class=login>'
            f'<input type=hidden name=csrf value="{e(ctx.csrf)}">'
            '<label>Token <input type=password name=token autocomplete=off required size=60></label> '
            "<button type=submit>Sign in</button></form>")
    return layout(ctx, "Sign in", body, notice=notice)


def dead_letters_page(ctx: Context, pool: str, dead: Sequence[dlq.DeadLetter | dlq.Unreadable],
                      pools: Sequence[str], notice: str = "") -> str:
    rows = []
    for d in dead:
        if isinstance(d, dlq.Unreadable):
            rows.append(f"<tr><td>{e(d.id)}</td><td colspan=5 class=err>unreadable: {e(short(d.problem))}</td>"
                        "<td></td></tr>")
            continue
        why = d.reason
        if d.error and d.error.message not in d.reason:  # the reason usually says it already
            why += f" — {d.error.type}: {d.error.message}"
        rows.append(f'<tr><td>{e(d.id)}</td><td><a href="{url("/job", pool=pool, id=d.job_id)}">{e(d.job_id)}</a></td>'
                    f"<td>{e(d.handler)}</td><td class=num>{d.attempts}</td><td>{e(when(d.at))}</td>"
                    f"<td class=err>{e(short(why, 200))}</td>"
                    f"<td>{action(ctx, '/actions/replay', 'Replay', pool=pool, entry=d.id)}</td></tr>")
    head = ("Entry", "Job", "Handler", "Attempts", "Died", "Why", "")
    replay_all = action(ctx, "/actions/replay", "Replay all", pool=pool, all="1") if dead else ""
    live = table(head, rows, empty="no dead letters") + (
        f"<p class=count>{len(dead)} entry(ies), oldest first (at most {forms.DLQ_PAGE} shown).</p>") + replay_all
    return layout(ctx, f"Dead letters of {pool}", pool_picker(pools, "/dead-letters", pool), live=live,
                  notice=notice)


def handlers_page(ctx: Context, view: PoolView, window: str, pools: Sequence[str]) -> str:
    s = view.stats
    rows = []
    for h in s.handlers:
        rate = "-" if h.failure_rate is None else f"{h.failure_rate:.1%}"
        link = url("/jobs", pool=s.pool, handler=h.handler)
        rows.append(f'<tr><th scope=row><a href="{link}">{e(h.handler)}</a></th>'
                    f"<td class=num>{h.jobs}</td><td class=num>{h.succeeded}</td><td class=num>{h.failed}</td>"
                    f"<td class=num>{e(rate)}</td><td class=num>{h.retried}</td>"
                    f"<td class=num>{e(span(h.mean_duration_s))}</td><td class=num>{e(span(h.p50_duration_s))}</td>"
                    f"<td class=num>{e(span(h.p95_duration_s))}</td><td class=num>{h.in_flight}</td>"
                    f"<td class=num>{h.queued}</td></tr>")
    head = ("Handler", "Jobs", "Succeeded", "Failed", "Failure rate", "Retried", "Mean", "p50", "p95",
            "In flight", "Queued")
    form = (f'<form method=get action="/handlers" class=filters><input type=hidden name=pool value="{e(s.pool)}">'
            f'<label>Window <input name=window value="{e(window)}" size=5></label> <button type=submit>Show</button>'
            "</form>")
    live = table(head, rows, empty="no jobs in this window") + (
        f"<p class=count>Last {e(window)}, the numbers of <code>kubeworkers stats</code> and the workers' "
        "metrics.</p>")
    return layout(ctx, f"Handlers of {s.pool}", pool_picker(pools, "/handlers", s.pool) + form, live=live)


def outcome_page(ctx: Context, outcome: Outcome, back: str) -> str:
    """What an action refused (a 409 page); a done action redirects instead."""
    return layout(ctx, "Not done", f'<p class=error role=alert>{e(outcome.text)}</p>'
                                   f'<p><a href="{e(back)}">Back</a></p>')
