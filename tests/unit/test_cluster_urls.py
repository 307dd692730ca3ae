"""``redis+cluster://`` URLs (kubeworkers.redis_url, kubeworkers.connection): parsed strictly, refused
in one line that never shows the password, and built into redis-py's cluster clients, blocking and
asyncio, with the credentials and TLS of the URL (no node is contacted until the first command)."""

from __future__ import annotations

import pytest
import redis
import redis.asyncio.cluster as aiocluster
from kubeworkers import connection, redis_url
from kubeworkers.redis_url import ClusterUrl, RedisUrlError, parse_cluster_url


def test_a_cluster_url_names_some_nodes_with_the_default_port_and_credentials() -> None:
    parsed = parse_cluster_url("redis+cluster://app:s3cret@10.0.0.1:7000,redis-b,[::1]:7002")
    assert parsed == ClusterUrl(nodes=(("10.0.0.1", 7000), ("redis-b", 6379), ("::1", 7002)),
                                username="app", password="s3cret", tls=False)
    assert "s3cret" not in repr(parsed)


def test_the_tls_variant_and_a_database_zero_path_are_accepted() -> None:
    assert parse_cluster_url("rediss+cluster://:p%40ss@n1:7000/0").tls
    assert parse_cluster_url("rediss+cluster://:p%40ss@n1:7000/").password == "p@ss"


@pytest.mark.parametrize(("url", "fault"), [
    ("redis+cluster://:hunter2@n1:7000/3", "database 0 only"),
    ("redis+cluster://:hunter2@/", "at least one Cluster"),
    ("redis+cluster://:hunter2@n1:99999", "bad Cluster port"),
    ("redis+cluster://:hunter2@n1,,n2", "bad Cluster address"),
    ("redis+cluster://:hunter2@n1?ssl=1", "no query"),
    ("redis+cluster://hunter2@n1", "colon is missing"),
    ("cluster://:hunter2@n1", "unknown Redis URL scheme"),
])
def test_bad_cluster_urls_are_refused_without_the_password(url: str, fault: str) -> None:
    with pytest.raises(RedisUrlError, match=fault) as caught:
        redis_url.check_url(url)
    assert "hunter2" not in str(caught.value)


def test_where_a_cluster_url_leads_is_said_without_the_password() -> None:
    assert redis_url.where("redis+cluster://:pw@n1:7000,n2:7001") == "Redis Cluster n1:7000,n2:7001"


def test_connect_builds_cluster_clients_with_the_urls_credentials_and_tls() -> None:
    asynchronous = connection.connect_async("rediss+cluster://app:pw@127.0.0.1:7000,127.0.0.1:7001", socket_timeout=2)
    assert isinstance(asynchronous, aiocluster.RedisCluster) and connection.is_cluster_client(asynchronous)
    kwargs = asynchronous.connection_kwargs  # type: ignore[attr-defined]
    assert (kwargs["username"], kwargs["password"], kwargs["socket_timeout"]) == ("app", "pw", 2)
    assert kwargs["connection_class"] is not aiocluster.Connection  # TLS: redis-py's SSL connection class
    assert not connection.is_cluster_client(connection.connect_async("redis://127.0.0.1:6379/0"))


def test_a_blocking_cluster_client_with_no_node_answering_says_so_as_a_connection_error() -> None:
    # The blocking client reads the slot map when it is built: unreachable nodes are a
    # ConnectionError (what the CLI and SDK already report), naming the nodes, never the password.
    with pytest.raises(redis.ConnectionError, match=r"Redis Cluster 127\.0\.0\.1:1") as caught:
        connection.connect("redis+cluster://:hunter2@127.0.0.1:1", socket_connect_timeout=1)
    assert "hunter2" not in str(caught.value)
