"""Paged lists: an expired ``continue`` token (410 Gone) starts the list over instead of failing it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kopf
import pytest
from aiohttp import web
from kubeworkers_operator.adapters import kube
from kubeworkers_operator.adapters.kube import KubeApi

ITEMS = [{"metadata": {"name": f"pod-{i}"}} for i in range(5)]


class Pages:
    """Serves ITEMS two per page like the apiserver; the first ``expire`` continue tokens are refused."""

    def __init__(self, expire: int) -> None:
        self.expire = expire
        self.requests: list[str | None] = []

    async def answer(self, request: web.Request) -> web.Response:
        token = request.query.get("continue")
        self.requests.append(token)
        if token is not None and self.expire > 0:
            self.expire -= 1
            return web.json_response(
                {"kind": "Status", "code": 410, "reason": "Expired",
                 "message": "The provided continue parameter is too old"}, status=410)
        start = int(token or 0)
        limit = int(request.query["limit"])
        end = start + limit
        meta = {"continue": str(end)} if end < len(ITEMS) else {}
        return web.json_response({"items": ITEMS[start:end], "metadata": meta})


async def serve(pages: Pages) -> AsyncIterator[KubeApi]:
    app = web.Application()
    app.router.add_get("/pods", pages.answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    api = KubeApi(kopf.ConnectionInfo(server=f"http://127.0.0.1:{runner.addresses[0][1]}"))
    yield api
    await api.close()
    await runner.cleanup()


@pytest.fixture
async def once_expired() -> AsyncIterator[tuple[KubeApi, Pages]]:
    pages = Pages(expire=1)
    async for api in serve(pages):
        yield api, pages


@pytest.fixture
async def always_expired() -> AsyncIterator[tuple[KubeApi, Pages]]:
    pages = Pages(expire=1_000)
    async for api in serve(pages):
        yield api, pages


async def test_a_list_whose_continue_token_expired_starts_over_and_returns_every_item_once(
    once_expired: tuple[KubeApi, Pages],
) -> None:
    api, pages = once_expired
    items = await api.list_all("/pods", page=2)
    assert [i["metadata"]["name"] for i in items] == [i["metadata"]["name"] for i in ITEMS]
    assert pages.requests == [None, "2", None, "2", "4"]  # page 1, refused, then the whole list anew


async def test_a_list_that_keeps_expiring_gives_up_with_gone(always_expired: tuple[KubeApi, Pages]) -> None:
    api, pages = always_expired
    with pytest.raises(kube.Gone):
        await api.list_all("/pods", page=2)
    assert pages.requests.count(None) == kube.LIST_RESTARTS + 1
