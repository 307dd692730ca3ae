"""The console server's side of the operator-served authorisation (kubeworkers/console/server.py), over
real HTTP with a backend that records what it is asked: the caller's token is taken from the
``Authorization`` header or the sign-in cookie and handed to the backend, a refusal is a 403 and
touches no Redis, the sign-in cookie is ``HttpOnly`` and ``SameSite=Strict`` and the token is in
no page, and only the Service's host names and loopback ones are answered. (The backend that asks
the apiserver is driven for real in tests/e2e/test_console_served_by_the_operator.py.)"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
import redis
from aiohttp.test_utils import TestClient, TestServer
from kubeworkers.console import reads, server
from kubeworkers.console.backend import JobKube, PoolKube, RedisBackend, Verdict

TOKEN = "eyJhbGciOi.not-a-real-token.sig"
HOST = {"Host": "127.0.0.1:8089"}


@dataclass
class Recording:
    """A backend that knows one token (``TOKEN``, user ``alice``) and never allows an action."""

    login: bool = True
    read_login: bool = False
    label: str = "operator"
    read_asked: list[str | None] = field(default_factory=list)
    asked: list[tuple[str | None, str, str, str | None]] = field(default_factory=list)
    redis_asked: int = 0

    async def pool_names(self) -> list[str]:
        return ["demo"]

    async def redis_for(self, pool: str) -> redis.Redis:
        self.redis_asked += 1
        raise AssertionError("a refused action must not reach Redis")

    async def who(self, token: str) -> Verdict:
        return Verdict(True, "alice") if token == TOKEN else Verdict(False, reason="the apiserver did not "
                                                                                   "authenticate the token")

    async def authorise(self, token: str | None, action: str, pool: str, job_id: str | None) -> Verdict:
        self.asked.append((token, action, pool, job_id))
        if token is None:
            return Verdict(False, reason="no bearer token")
        return Verdict(False, "alice", "alice may not update on jobs.workers.io ns/j")

    async def authorise_read(self, token: str) -> Verdict:
        self.read_asked.append(token)
        return Verdict(True, "alice") if token == TOKEN else Verdict(False, "bob", "bob may not list on jobs")

    async def pools_kube(self, pools: list[str]) -> dict[str, PoolKube]:
        return {}

    async def job_kube(self, pool: str, job_id: str) -> JobKube | None:
        return None

    def close(self) -> None:
        pass


@pytest.fixture
async def served() -> AsyncIterator[tuple[TestClient, Recording]]:
    backend = Recording()
    console = server.Console(backend=backend, namespace="ns", actions=True, listen_host="0.0.0.0",
                             host_names=frozenset({"kw-ui.kw-system.svc"}))
    client = TestClient(TestServer(console.app()))
    await client.start_server()
    yield client, backend
    await client.close()


async def csrf_of(client: TestClient, path: str = "/login") -> str:
    page = await (await client.get(path, headers=HOST)).text()
    found = re.search(r'name=csrf value="([0-9a-f]{64})"', page)
    assert found, page
    return found.group(1)


async def test_the_header_token_goes_to_the_backend_and_a_refusal_is_a_403_without_redis(
        served: tuple[TestClient, Recording]) -> None:
    client, backend = served
    csrf = await csrf_of(client)
    answer = await client.post("/actions/retry", data={"csrf": csrf, "pool": "demo", "id": "ns/j"},
                               headers={**HOST, "Authorization": f"Bearer {TOKEN}"})
    assert answer.status == 403
    assert "alice may not update on jobs.workers.io ns/j" in await answer.text()
    assert backend.asked == [(TOKEN, "retry", "demo", "ns/j")] and backend.redis_asked == 0


async def test_without_a_token_the_backend_is_asked_with_none_and_refuses(served: tuple[TestClient, Recording]) -> None:
    client, backend = served
    csrf = await csrf_of(client)
    answer = await client.post("/actions/replay", data={"csrf": csrf, "pool": "demo", "all": "1"}, headers=HOST)
    assert answer.status == 403 and "not authorised: no bearer token" in await answer.text()
    assert backend.asked == [(None, "replay", "demo", None)]


async def test_csrf_is_still_required_with_a_token(served: tuple[TestClient, Recording]) -> None:
    client, backend = served
    answer = await client.post("/actions/cancel", data={"pool": "demo", "id": "ns/j"},
                               headers={**HOST, "Authorization": f"Bearer {TOKEN}"})
    assert answer.status == 403 and "CSRF" in await answer.text()
    assert backend.asked == []


async def test_sign_in_keeps_the_token_in_an_http_only_strict_cookie_and_shows_it_nowhere(
        served: tuple[TestClient, Recording]) -> None:
    client, backend = served
    csrf = await csrf_of(client)
    answer = await client.post("/login", data={"csrf": csrf, "token": TOKEN}, headers=HOST, allow_redirects=False)
    assert answer.status == 303 and answer.headers["Location"] == "/?done=signed-in"
    cookie = next(v for v in answer.headers.getall("Set-Cookie") if v.startswith("kw_token="))
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    # The cookie is what later actions carry: the backend gets the token from it.
    page = await (await client.get("/login", headers=HOST)).text()
    assert "Sign out" in page and TOKEN not in page
    csrf = await csrf_of(client)
    await client.post("/actions/retry", data={"csrf": csrf, "pool": "demo", "id": "ns/j"}, headers=HOST)
    assert backend.asked == [(TOKEN, "retry", "demo", "ns/j")]


async def test_a_token_the_apiserver_does_not_authenticate_signs_nobody_in(
        served: tuple[TestClient, Recording]) -> None:
    client, _ = served
    csrf = await csrf_of(client)
    answer = await client.post("/login", data={"csrf": csrf, "token": "forged"}, headers=HOST, allow_redirects=False)
    assert answer.status == 403 and "sign-in refused" in await answer.text()
    assert not [v for v in answer.headers.getall("Set-Cookie", []) if v.startswith("kw_token=")]


@pytest.mark.parametrize(("host", "status"), [("127.0.0.1:8089", 200), ("localhost:8089", 200),
                                              ("kw-ui.kw-system.svc:8089", 200), ("evil.example:8089", 421)])
async def test_it_answers_only_to_loopback_and_its_service_names(
        served: tuple[TestClient, Recording], host: str, status: int) -> None:
    client, _ = served
    assert (await client.get("/healthz", headers={"Host": host})).status == status


async def test_kubeworkers_ui_has_no_sign_in() -> None:
    console = server.Console(backend=RedisBackend(redis.Redis(), reads.Pools("ns"), "Redis at x"), namespace="ns",
                             actions=True)
    client = TestClient(TestServer(console.app()))
    await client.start_server()
    try:
        assert (await client.get("/login", headers=HOST)).status == 404
    finally:
        await client.close()


@pytest.fixture
async def sign_in_to_read() -> AsyncIterator[tuple[TestClient, Recording]]:
    """A read-only console (no actions) whose every page needs a caller allowed to read."""
    backend = Recording(read_login=True)
    console = server.Console(backend=backend, namespace="ns", actions=False, listen_host="0.0.0.0",
                             host_names=frozenset())
    client = TestClient(TestServer(console.app()))
    await client.start_server()
    yield client, backend
    await client.close()


async def test_with_require_sign_in_a_page_sends_a_caller_without_a_token_to_sign_in(
        sign_in_to_read: tuple[TestClient, Recording]) -> None:
    client, backend = sign_in_to_read
    for path in ("/", "/jobs?pool=demo", "/job?pool=demo&id=ns/j", "/dead-letters", "/handlers"):
        answer = await client.get(path, headers=HOST, allow_redirects=False)
        assert (answer.status, answer.headers.get("Location")) == (303, "/login"), path
    # The sign-in page, its static files and the probe stay open; nothing reached Redis.
    assert (await client.get("/login", headers=HOST)).status == 200
    assert (await client.get("/static/console.css", headers=HOST)).status == 200
    assert (await client.get("/healthz", headers=HOST)).status == 200
    assert backend.read_asked == [] and backend.redis_asked == 0


async def test_with_require_sign_in_a_caller_the_apiserver_does_not_let_read_gets_a_403_and_no_data(
        sign_in_to_read: tuple[TestClient, Recording]) -> None:
    client, backend = sign_in_to_read
    answer = await client.get("/jobs?pool=demo", headers={**HOST, "Authorization": "Bearer other"})
    assert answer.status == 403 and "not authorised to read: bob may not list on jobs" in await answer.text()
    assert backend.redis_asked == 0


async def test_with_require_sign_in_a_verdict_is_reused_for_a_while_by_the_tokens_hash(
        sign_in_to_read: tuple[TestClient, Recording]) -> None:
    client, backend = sign_in_to_read
    for _ in range(3):
        answer = await client.get("/login", headers=HOST)
        assert answer.status == 200
        answer = await client.get("/nowhere", headers={**HOST, "Authorization": f"Bearer {TOKEN}"})
        assert answer.status == 404  # past the check: the route does not exist
    assert backend.read_asked == [TOKEN]
