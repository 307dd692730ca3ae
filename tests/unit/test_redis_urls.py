"""Redis URLs (kubeworkers.redis_url, kubeworkers.connection): Sentinel URLs parse strictly, bad ones are refused in one
line that never shows the password, and every process builds its client through the same door."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import redis.asyncio.sentinel as aiosentinel
from kubeworkers import connection, redis_url
from kubeworkers.redis_url import RedisUrlError, SentinelUrl, parse_sentinel_url

REPO = Path(__file__).resolve().parents[2]


def test_a_sentinel_url_names_sentinels_master_and_database() -> None:
    parsed = parse_sentinel_url("redis+sentinel://:s3cret@10.0.0.1:26380,sentinel-b,[::1]:5000/mymaster/3")
    assert parsed == SentinelUrl(
        sentinels=(("10.0.0.1", 26380), ("sentinel-b", 26379), ("::1", 5000)),
        master_name="mymaster", db=3, username=None, password="s3cret", tls=False,
    )


def test_a_sentinel_url_without_credentials_or_database_uses_database_zero() -> None:
    parsed = parse_sentinel_url("redis+sentinel://127.0.0.1:26379/kw/")
    assert (parsed.master_name, parsed.db, parsed.password) == ("kw", 0, None)


def test_the_tls_variant_and_a_user_are_understood_and_the_password_is_unquoted() -> None:
    parsed = parse_sentinel_url("rediss+sentinel://app:p%40ss@s1:26379/kw/1")
    assert (parsed.tls, parsed.username, parsed.password) == (True, "app", "p@ss")


@pytest.mark.parametrize(("url", "fault"), [
    ("redis+sentinel://:hunter2@s1:26379", "names the master"),
    ("redis+sentinel://:hunter2@/kw", "at least one Sentinel"),
    ("redis+sentinel://:hunter2@s1:99999/kw", "bad Sentinel port"),
    ("redis+sentinel://:hunter2@s1:port/kw", "bad Sentinel address"),
    ("redis+sentinel://:hunter2@s1,,s2/kw", "bad Sentinel address"),
    ("redis+sentinel://:hunter2@s1/kw/zero", "bad database number"),
    ("redis+sentinel://:hunter2@s1/kw/0/extra", "not more"),
    ("redis+sentinel://:hunter2@s1/k w", "bad master name"),
    ("redis+sentinel://:hunter2@s1/kw?db=1", "no query"),
    ("redis+sentinel://hunter2@s1/kw", "colon is missing"),
    ("sentinel://:hunter2@s1/kw", "unknown Redis URL scheme"),
    ("localhost:hunter2", "starts with redis://"),
    ("redis://:hunter2@host:notaport/0", "bad Redis URL"),
])
def test_a_bad_url_is_refused_in_one_line_naming_the_fault_and_never_the_password(url: str, fault: str) -> None:
    with pytest.raises(RedisUrlError) as caught:
        redis_url.check_url(url)
    message = str(caught.value)
    assert fault in message and "\n" not in message
    assert "hunter2" not in message


def test_redacted_hides_passwords_in_userinfo_and_in_the_query() -> None:
    assert redis_url.redacted("redis://u:pw@h:1/0") == "redis://u:***@h:1/0"
    assert redis_url.redacted("redis+sentinel://:pw@a:1,b:2/kw") == "redis+sentinel://:***@a:1,b:2/kw"
    assert "pw" not in redis_url.redacted("unix:///tmp/r.sock?db=0&password=pw")
    assert "pw" not in repr(parse_sentinel_url("redis+sentinel://:pw@a/kw"))


def test_where_says_which_sentinels_and_master_without_the_password() -> None:
    assert redis_url.where("redis+sentinel://:pw@a:1,b:2/kw") == "master 'kw' via Sentinels a:1,b:2"
    assert redis_url.where("redis://:pw@h:7000/0") == "h:7000"


def test_plain_urls_still_make_plain_clients_and_sentinel_urls_sentinel_managed_ones() -> None:
    plain = connection.connect("redis://127.0.0.1:1/0", socket_timeout=1)
    managed = connection.connect_async("redis+sentinel://127.0.0.1:1/kw/2", socket_timeout=1)
    assert type(plain.connection_pool).__name__ == "ConnectionPool"
    assert isinstance(managed.connection_pool, aiosentinel.SentinelConnectionPool)
    assert managed.connection_pool.connection_kwargs["db"] == 2


def test_the_master_is_the_one_of_the_newest_configuration_epoch() -> None:
    """After a failover a Sentinel that has not heard of it yet still names the old master."""
    old = {"ip": "10.0.0.1", "port": 6379, "config-epoch": 3}
    new = {"ip": "10.0.0.2", "port": 6380, "config-epoch": 4}
    assert connection.newest_master([old, new, old]) == ("10.0.0.2", 6380)
    assert connection.newest_master([]) is None


def test_every_redis_client_of_the_product_is_built_by_the_connection_module() -> None:
    """A new ``from_url`` elsewhere would be a process that cannot follow a failover."""
    constructed = re.compile(r"(Redis\.from_url|Redis\(|ConnectionPool\.from_url|Sentinel\()")
    offenders = [
        f"{path.relative_to(REPO)}:{n}"
        for root in ("worker_image/kubeworkers", "operator/kubeworkers_operator")
        for path in (REPO / root).rglob("*.py")
        if path.name != "connection.py"
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if constructed.search(line)
    ]
    assert offenders == []


@pytest.mark.parametrize("url", [
    "redis://:pw@redis:6379/0", "rediss://:pw@redis:6380/0",
    "redis+sentinel://:pw@sentinel-0:26379,sentinel-1:26379,sentinel-2:26379/kw/0",
    "rediss+sentinel://:pw@sentinel-0:26379/kw",
])
def test_the_chart_schema_takes_every_tcp_url_the_product_connects_to(url: str) -> None:
    """values.schema.json's ``redis.url`` pattern and :func:`check_url` must agree (the chart
    passes the URL through its Secret to the operator and the workers unchanged)."""
    schema = json.loads((REPO / "helm/kubeworkers/values.schema.json").read_text())
    pattern = schema["properties"]["redis"]["properties"]["url"]["pattern"]
    redis_url.check_url(url)
    assert re.search(pattern, url)
    assert not re.search(pattern, "sentinel://s:26379/kw")
