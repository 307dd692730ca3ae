"""The console's HTTP server: aiohttp (the operator's HTTP stack), routes, headers, actions.

Reads go through :mod:`.reads` in a thread each (the CLI's modules use the blocking client); what
a request asks is checked by :mod:`.forms` first, and a bad field is a 400 page with one line.
Every response carries a Content-Security-Policy without inline script or style, ``nosniff``,
``frame-ancestors 'none'`` and ``no-store``. The Redis URL is held by the connection only: no page,
header or log line of the console names it (the start line says host and port, as the CLI does).

Actions (``POST /actions/retry|cancel|replay``) exist only with ``--enable-actions``; without it
they answer 403. With it, each needs the CSRF token of :mod:`.csrf`, and the backend's word
(:meth:`.backend.Backend.authorise`): ``kubeworkers ui`` allows every action, the operator-served
console only a caller whose bearer token (``Authorization: Bearer``, or the ``kw_token`` cookie
that ``/login`` sets) the apiserver authenticates and authorises for the verb. A done action
redirects (303) to the page it came from with a notice; a refused one is a 403 (not authorised)
or 409 (not possible) page saying why.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.resources
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

import redis
from aiohttp import web

from kubeworkers import connection, inspection, logs, redis_url
from kubeworkers.protocol import DEFAULT_RESULT_TTL

from . import csrf, forms, pages, reads
from .backend import Backend, RedisBackend, Verdict
from .command import DEFAULT_HOST

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Per-request values the middlewares leave for the handlers (typed keys: aiohttp warns on strings).
CSRF_COOKIE = web.RequestKey("csrf_cookie", str)
WHO = web.RequestKey("who", str)
#: The header the page script sends to get only a page's live part.
FRAGMENT_HEADER = "X-Console-Fragment"
#: The notices a redirect after an action may ask for (fixed texts: a URL cannot put words on a page).
NOTICES = {
    "retried": "Queued again as a new run.",
    "cancelled": "Cancel requested.",
    "replayed": "Replayed: the job(s) are queued again as new runs.",
    "signed-in": "Signed in: actions are authorised as the token's user.",
    "signed-out": "Signed out.",
}
#: The cookie holding a signed-in caller's bearer token (``HttpOnly``, ``SameSite=Strict``).
TOKEN_COOKIE = "kw_token"
#: Longest bearer token accepted (service account tokens are about 1 KB; OIDC ones a few).
TOKEN_MAX = 16 * 1024
#: Seconds a caller's right to read (``--console-require-sign-in``) is reused before it is asked
#: again: a page refreshes every 2 s, and each refresh would otherwise be two reviews.
READ_VERDICT_SECONDS = 30.0
#: Paths served to anyone even when reading needs a sign-in.
OPEN_PATHS = ("/login", "/logout", "/healthz")
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
                                "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",  # "no-referrer" would make the browser send "Origin: null" on our own forms
    "Cache-Control": "no-store",
}
STATIC_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}


@dataclass
class Console:
    """One console: its backend (Redis, pools, apiserver, authorisation), the namespace it shows,
    whether it may act, and its CSRF key."""

    backend: Backend
    namespace: str
    actions: bool = False
    tokens: csrf.Tokens = field(default_factory=csrf.Tokens)
    result_ttl: int = DEFAULT_RESULT_TTL
    #: The address it listens on: on a loopback one it answers only to loopback host names.
    listen_host: str = DEFAULT_HOST
    #: Where Redis is, for log lines: hosts and ports, never the password (:func:`kubeworkers.redis_url.where`).
    where: str = "redis"
    #: Host names it answers to besides loopback ones; None: every name on a non-loopback address
    #: (``kubeworkers ui``). The operator-served console gives its Service's names.
    host_names: frozenset[str] | None = None
    #: Recent read verdicts by the SHA-256 of the token (never the token itself).
    _read_verdicts: dict[str, tuple[float, Verdict]] = field(default_factory=dict)

    @property
    def signs_in(self) -> bool:
        """Whether callers sign in: the backend has a login and something needs it (acting or reading)."""
        return self.backend.login and (self.actions or self.backend.read_login)

    @property
    def has_forms(self) -> bool:
        """Whether pages carry forms that need the CSRF token (actions, sign-in and sign-out)."""
        return self.actions or self.signs_in

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024)
        app.add_routes([
            web.get("/", self.pools_page),
            web.get("/jobs", self.jobs_page),
            web.get("/job", self.job_page),
            web.get("/dead-letters", self.dead_letters_page),
            web.get("/handlers", self.handlers_page),
            web.get("/static/{name}", self.static),
            web.get("/healthz", self.healthz),
            web.post("/actions/retry", self.retry),
            web.post("/actions/cancel", self.cancel),
            web.post("/actions/replay", self.replay),
        ])
        if self.signs_in:
            app.add_routes([web.get("/login", self.login_page), web.post("/login", self.login),
                            web.post("/logout", self.logout)])
        return app

    # ------------------------------------------------------------------ plumbing

    async def _read(self, pool: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        r = await self.backend.redis_for(pool)
        return await asyncio.to_thread(fn, r, *args, **kwargs)

    def _context(self, request: web.Request) -> pages.Context:
        cookie = request.get(CSRF_COOKIE, "")
        login = self.signs_in
        return pages.Context(namespace=self.namespace, path=request.path, actions=self.actions,
                             csrf=self.tokens.token(cookie) if self.has_forms and cookie else "", now=time.time(),
                             login=login, signed_in=login and bool(request.cookies.get(TOKEN_COOKIE)),
                             source=self.backend.label)

    def _host_ok(self, header: str | None) -> bool:
        if self.host_names is None:
            return csrf.host_allowed(header, self.listen_host)
        if not header:
            return False
        name = csrf.host_name(header)
        return csrf.loopback(name) or name in self.host_names

    @staticmethod
    def _token(request: web.Request) -> str | None:
        """The caller's bearer token: the ``Authorization`` header's, else the sign-in cookie's."""
        header = request.headers.get("Authorization", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else request.cookies.get(TOKEN_COOKIE, "")
        return token if token and len(token) <= TOKEN_MAX else None

    async def _may_read(self, request: web.Request) -> None:
        """With ``--console-require-sign-in``: a caller not signed in goes to /login, one the apiserver
        does not let read gets a 403 page."""
        if not self.backend.read_login or request.path in OPEN_PATHS or request.path.startswith("/static/"):
            return
        token = self._token(request)
        if token is None:
            raise web.HTTPSeeOther("/login")
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        known = self._read_verdicts.get(key)
        if known is None or now - known[0] > READ_VERDICT_SECONDS:
            verdict = await self.backend.authorise_read(token)
            if len(self._read_verdicts) > 1000:
                self._read_verdicts.clear()
            self._read_verdicts[key] = (now, verdict)
            if not verdict.allowed:
                logger.warning("console: refused reading for %s: %s", verdict.who or "an unauthenticated caller",
                               verdict.reason)
        else:
            verdict = known[1]
        if not verdict.allowed:
            raise web.HTTPForbidden(reason=f"not authorised to read: {verdict.reason}")
        request[WHO] = verdict.who

    @web.middleware
    async def _middleware(self, request: web.Request,
                          handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        cookie = request.cookies.get(csrf.COOKIE)
        fresh = None
        if not cookie or len(cookie) > 200:
            cookie = fresh = csrf.Tokens.new_cookie()
        request[CSRF_COOKIE] = cookie
        try:
            if not self._host_ok(request.headers.get("Host")):
                raise web.HTTPMisdirectedRequest(reason="this console answers to 127.0.0.1 and localhost only"
                                                 + (" and its Service's names" if self.host_names else ""))
            await self._may_read(request)
            response = await handler(request)
        except forms.BadInput as exc:
            response = self._html(request, pages.error_page(self._context(request), 400, str(exc)), 400)
        except web.HTTPException as exc:
            if exc.status >= 400 and exc.status != 405:
                page = pages.error_page(self._context(request), exc.status, exc.reason)
                response = self._html(request, page, exc.status)
            else:
                raise
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            # Say only that Redis is away (and, in the log, where: host and port, never the password).
            logger.warning("console: Redis unreachable at %s: %s", self.where, type(exc).__name__)
            page = pages.error_page(self._context(request), 503, "Redis cannot be reached")
            response = self._html(request, page, 503)
        except redis.RedisError as exc:
            logger.warning("console: Redis answered %s on %s", type(exc).__name__, request.path)
            page = pages.error_page(self._context(request), 502, f"Redis answered with an error ({type(exc).__name__})")
            response = self._html(request, page, 502)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers["Vary"] = FRAGMENT_HEADER
        if fresh is not None and self.has_forms:
            response.set_cookie(csrf.COOKIE, fresh, httponly=True, samesite="Strict", path="/")
        return response

    @staticmethod
    def _html(request: web.Request, text: str, status: int = 200) -> web.Response:
        if request.headers.get(FRAGMENT_HEADER) == "1" and status == 200:
            start, end = text.find("<div id=live"), text.rfind("</div>")
            start = text.index(">", start) + 1
            text = text[start:end]
        return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")

    @staticmethod
    def _params(request: web.Request) -> dict[str, str]:
        params: dict[str, str] = {}
        for key, value in request.query.items():
            if key in params:
                raise forms.BadInput(f"query parameter {key!r} is given twice"[:300])
            params[key] = value
        return params

    async def _pool_names(self) -> list[str]:
        return await self.backend.pool_names()

    # ------------------------------------------------------------------ pages

    async def pools_page(self, request: web.Request) -> web.Response:
        params = self._params(request)
        forms.only(params, "window", "done")
        text, window_s = forms.window(params)
        names = await self._pool_names()
        views = await asyncio.gather(*(self._read(p, reads.pool, self.namespace, p, window_s) for p in names))
        kube = await self.backend.pools_kube(names)
        notice = NOTICES.get(params.get("done", ""), "")
        return self._html(request, pages.pools_page(self._context(request), views, text, kube, notice))

    async def _default_pool(self) -> str | None:
        names = await self._pool_names()
        return names[0] if names else None

    async def jobs_page(self, request: web.Request) -> web.Response:
        params = self._params(request)
        chosen = forms.jobs_filter(params, await self._default_pool() if "pool" not in params else None)
        found = await self._read(chosen.pool, reads.jobs, self.namespace, chosen)
        return self._html(request, pages.jobs_page(self._context(request), chosen, found, await self._pool_names()))

    async def job_page(self, request: web.Request) -> web.Response:
        params = self._params(request)
        forms.only(params, "pool", "id", "done")
        pool, job_id = forms.job_ref(params)
        try:
            view = await self._read(pool, reads.job, self.namespace, pool, job_id)
        except inspection.UnknownJobError as exc:
            raise web.HTTPNotFound(reason=str(exc)) from None
        notice = NOTICES.get(params.get("done", ""), "")
        kube = await self.backend.job_kube(pool, job_id) if view.description.job_object else None
        return self._html(request, pages.job_page(self._context(request), view, notice, kube))

    async def dead_letters_page(self, request: web.Request) -> web.Response:
        params = self._params(request)
        forms.only(params, "pool", "done")
        pool = forms.pool(params.get("pool") or await self._default_pool())
        dead = await self._read(pool, reads.dead_letters, self.namespace, pool)
        notice = NOTICES.get(params.get("done", ""), "")
        return self._html(request, pages.dead_letters_page(self._context(request), pool, dead,
                                                           await self._pool_names(), notice))

    async def handlers_page(self, request: web.Request) -> web.Response:
        params = self._params(request)
        forms.only(params, "pool", "window")
        pool = forms.pool(params.get("pool") or await self._default_pool())
        text, window_s = forms.window(params)
        view = await self._read(pool, reads.pool, self.namespace, pool, window_s)
        return self._html(request, pages.handlers_page(self._context(request), view, text, await self._pool_names()))

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        suffix = name[name.rfind("."):] if "." in name else ""
        if suffix not in STATIC_TYPES or "/" in name or name.startswith("."):
            raise web.HTTPNotFound(reason="no such file")
        resource = importlib.resources.files("kubeworkers.console").joinpath("static", name)
        if not resource.is_file():
            raise web.HTTPNotFound(reason="no such file")
        response = web.Response(body=resource.read_bytes(), headers={"Content-Type": STATIC_TYPES[suffix]})
        response.headers["Cache-Control"] = "no-cache"
        return response

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    # ------------------------------------------------------------------ sign-in (operator-served)

    async def login_page(self, request: web.Request) -> web.Response:
        params = self._params(request)
        forms.only(params, "done")
        return self._html(request, pages.login_page(self._context(request), NOTICES.get(params.get("done", ""), "")))

    async def _checked_form(self, request: web.Request) -> dict[str, str]:
        if not csrf.same_origin(request.headers.get("Origin"), request.headers.get("Host")):
            logger.warning("console: refused %s from another origin", request.path)
            raise web.HTTPForbidden(reason="the request came from another site")
        form = await request.post()
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        if not self.tokens.valid(request.cookies.get(csrf.COOKIE), values.get(csrf.FIELD)):
            logger.warning("console: refused %s without a valid CSRF token", request.path)
            raise web.HTTPForbidden(reason="missing or invalid CSRF token: reload the page and try again")
        return values

    async def login(self, request: web.Request) -> web.StreamResponse:
        """Check the token with the apiserver (a TokenReview) and keep it in an HttpOnly cookie."""
        form = await self._checked_form(request)
        token = form.get("token", "").strip()
        if not token or len(token) > TOKEN_MAX:
            raise forms.BadInput("token must be a bearer token (kubectl create token …)")
        verdict = await self.backend.who(token)
        if not verdict.allowed:
            logger.warning("console: sign-in refused: %s", verdict.reason)
            raise web.HTTPForbidden(reason=f"sign-in refused: {verdict.reason}")
        logger.info("console: %s signed in", verdict.who)
        logs.flush()
        response = web.HTTPSeeOther("/?" + urlencode({"done": "signed-in"}))
        response.set_cookie(TOKEN_COOKIE, token, httponly=True, samesite="Strict", path="/")
        raise response

    async def logout(self, request: web.Request) -> web.StreamResponse:
        await self._checked_form(request)
        response = web.HTTPSeeOther("/login?" + urlencode({"done": "signed-out"}))
        response.del_cookie(TOKEN_COOKIE, path="/")
        raise response

    # ------------------------------------------------------------------ actions

    async def _form(self, request: web.Request) -> Mapping[str, str]:
        """The POSTed form of an enabled, authentic action; 403 otherwise."""
        if not self.actions:
            raise web.HTTPForbidden(reason="actions are disabled: start the console with --enable-actions")
        return await self._checked_form(request)

    async def _authorise(self, request: web.Request, action: str, pool: str, job_id: str | None) -> Verdict:
        """The backend's word on this caller doing ``action``; a 403 page when it says no."""
        verdict = await self.backend.authorise(self._token(request), action, pool, job_id)
        if not verdict.allowed:
            logger.warning("console: refused %s on pool %s%s for %s: %s", action, pool,
                           f" job {job_id}" if job_id else "", verdict.who or "an unauthenticated caller",
                           verdict.reason)
            logs.flush()
            raise web.HTTPForbidden(reason=f"not authorised: {verdict.reason}")
        request[WHO] = verdict.who
        return verdict

    def _done(self, request: web.Request, outcome: reads.Outcome, path: str, done: str,
              **params: str) -> web.StreamResponse:
        back = f"{path}?{urlencode(params)}"
        # Every action is a log line: what, when, and who when the console knows (operator-served).
        who = request.get(WHO) or "anyone (no login)"
        logger.info("console: %s %s by %s: %s", request.path, "done" if outcome.ok else "refused", who,
                    outcome.text)
        logs.flush()
        if not outcome.ok:
            return self._html(request, pages.outcome_page(self._context(request), outcome, back), 409)
        raise web.HTTPSeeOther(f"{path}?{urlencode({**params, 'done': done})}")

    async def retry(self, request: web.Request) -> web.StreamResponse:
        form = await self._form(request)
        pool, job_id = forms.job_ref(form)
        await self._authorise(request, "retry", pool, job_id)
        outcome = await self._read(pool, reads.retry, self.namespace, pool, job_id)
        return self._done(request, outcome, "/job", "retried", pool=pool, id=job_id)

    async def cancel(self, request: web.Request) -> web.StreamResponse:
        form = await self._form(request)
        pool, job_id = forms.job_ref(form)
        await self._authorise(request, "cancel", pool, job_id)
        outcome = await self._read(pool, reads.cancel, self.namespace, pool, job_id, self.result_ttl)
        return self._done(request, outcome, "/job", "cancelled", pool=pool, id=job_id)

    async def replay(self, request: web.Request) -> web.StreamResponse:
        form = await self._form(request)
        pool = forms.pool(form.get("pool"))
        entry = None if form.get("all") == "1" else forms.entry_id(form.get("entry"))
        await self._authorise(request, "replay", pool, None)
        outcome = await self._read(pool, reads.replay, self.namespace, pool, entry)
        return self._done(request, outcome, "/dead-letters", "replayed", pool=pool)


def console(url: str, namespace: str, *, actions: bool = False, pools: list[str] | None = None,
            result_ttl: int = DEFAULT_RESULT_TTL) -> Console:
    """A :class:`Console` of the Redis at ``url`` (:class:`kubeworkers.redis_url.RedisUrlError` for a bad URL)."""
    namespace = forms.namespace(namespace)
    for p in pools or []:
        forms.pool(p)
    r = connection.connect(url, socket_timeout=10, socket_connect_timeout=5, health_check_interval=30)
    where = redis_url.where(url)
    return Console(backend=RedisBackend(r, reads.Pools(namespace, pools)), namespace=namespace,
                   actions=actions, result_ttl=result_ttl, where=where)


async def start(c: Console, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start serving ``c`` on ``host:port``; returns the runner (``cleanup()`` stops it) and the bound port."""
    c.listen_host = host
    runner = web.AppRunner(c.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    for address in runner.addresses:  # (host, port) or (host, port, flow, scope)
        bound = int(address[1])
    return runner, bound


async def serve(c: Console, host: str, port: int, *, started: Callable[[int], None] | None = None,
                stop: asyncio.Event | None = None) -> None:
    """Serve ``c`` on ``host:port`` until ``stop`` is set (or for ever); ``started`` gets the bound port."""
    runner, bound = await start(c, host, port)
    if started is not None:
        started(bound)
    try:
        await (stop or asyncio.Event()).wait()
    finally:
        await runner.cleanup()
        with contextlib.suppress(Exception):
            c.backend.close()
