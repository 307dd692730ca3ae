"""The Kubernetes edge turns HTTP statuses into error types in one place; callers branch on types."""

from __future__ import annotations

from collections.abc import AsyncIterator

import kopf
import pytest
from aiohttp import web
from kubeworkers_operator.adapters import kube
from kubeworkers_operator.adapters.kube import KubeApi


@pytest.mark.parametrize(("status", "kind"), [
    (401, kube.Unauthorized), (403, kube.Forbidden), (404, kube.NotFound), (409, kube.Conflict),
    (410, kube.Gone), (422, kube.Unprocessable),
])
def test_each_status_callers_branch_on_has_its_own_error_type(status: int, kind: type[kube.ApiError]) -> None:
    error = kube.error_for(status, "GET", "/x", "body")
    assert type(error) is kind
    assert isinstance(error, kube.ApiError)  # a broad `except ApiError` still catches it
    assert error.status == status


def test_other_statuses_are_plain_api_errors() -> None:
    assert type(kube.error_for(500, "GET", "/x", "boom")) is kube.ApiError


@pytest.fixture
async def apiserver() -> AsyncIterator[KubeApi]:
    """A loopback HTTP server answering like the apiserver does for a few paths."""

    async def answer(request: web.Request) -> web.Response:
        status = int(request.match_info["status"])
        return web.json_response({"kind": "Status", "code": status, "name": "x"}, status=status)

    app = web.Application()
    app.router.add_route("*", "/status/{status}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    api = KubeApi(kopf.ConnectionInfo(server=f"http://127.0.0.1:{port}"))
    yield api
    await api.close()
    await runner.cleanup()


async def test_get_or_none_is_none_only_for_a_missing_object(apiserver: KubeApi) -> None:
    assert await apiserver.get_or_none("/status/404") is None
    assert (await apiserver.get_or_none("/status/200"))["name"] == "x"
    with pytest.raises(kube.Forbidden):
        await apiserver.get_or_none("/status/403")


async def test_a_conflicting_write_raises_conflict(apiserver: KubeApi) -> None:
    with pytest.raises(kube.Conflict):
        await apiserver.merge_patch("/status/409", {"status": {}})
    with pytest.raises(kube.Unprocessable):
        await apiserver.create("/status/422", {})
