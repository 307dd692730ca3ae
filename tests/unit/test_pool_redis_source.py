"""Where a pool's Redis comes from, and its URL out of a Secret: messages name the Secret, never the value."""

from __future__ import annotations

import base64

import pytest
from kubeworkers.resources import WorkerPoolSpec
from kubeworkers_operator.model.redis_source import RedisSource, SecretProblem, source_of, url_from_secret

SOURCE = RedisSource("team-a", "images-redis", "url")
URL = "redis://:hunter2@redis-images.team-a:6379/0"


def spec(**extra: object) -> WorkerPoolSpec:
    return WorkerPoolSpec.model_validate({"image": "w:1", "imports": ["app"], **extra})


def secret(**data: str) -> dict[str, object]:
    return {"data": {key: base64.b64encode(value.encode()).decode() for key, value in data.items()}}


def test_a_pool_naming_no_secret_is_on_the_operators_own_redis() -> None:
    assert source_of("team-a", spec()) is None
    assert source_of("team-a", None) is None
    assert source_of("team-a", spec(redis={"secretName": "images-redis"})) == SOURCE
    assert source_of("team-a", spec(redis={"secretName": "s", "key": "k"})) == RedisSource("team-a", "s", "k")


def test_the_url_is_read_from_the_named_key() -> None:
    assert url_from_secret(SOURCE, secret(url=URL + "\n")) == URL
    assert url_from_secret(SOURCE, {"stringData": {"url": URL}}) == URL


@pytest.mark.parametrize(("body", "says"), [
    (None, "does not exist"),
    (secret(other=URL), "has no key 'url'"),
    ({"data": {"url": "not base64!"}}, "does not hold text"),
    (secret(url="http://:hunter2@redis-images:6379"), "does not hold a Redis URL"),
    (secret(url="redis://:hunter2@redis-images:99999/0"), "does not hold a Redis URL"),
])
def test_a_secret_without_a_usable_url_is_named_and_its_value_is_not(body: dict[str, object] | None,
                                                                      says: str) -> None:
    with pytest.raises(SecretProblem) as raised:
        url_from_secret(SOURCE, body)
    message = str(raised.value)
    assert says in message and "Secret team-a/images-redis (key 'url')" in message
    assert "hunter2" not in message and "redis-images:" not in message
