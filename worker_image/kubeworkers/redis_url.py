"""Redis URLs, parsed and checked without connecting: which ones kubeworkers accepts.

The grammar is in :mod:`kubeworkers.connection`, which builds the clients; this module is pure
(no redis import), so settings validation and the operator's pure layers can use it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}
CLUSTER_SCHEMES = {"redis+cluster": False, "rediss+cluster": True}
PLAIN_SCHEMES = ("redis", "rediss", "unix")
#: The port Sentinels listen on unless a URL says otherwise.
DEFAULT_SENTINEL_PORT = 26379
#: The port cluster nodes listen on unless a URL says otherwise.
DEFAULT_CLUSTER_PORT = 6379

_HOST_PORT = re.compile(r"^(?:\[(?P<ip6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+))(?::(?P<port>\d{1,5}))?$")
_MASTER_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class RedisUrlError(ValueError):
    """A Redis URL that cannot be used; the message names the fault and never the password."""


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed ``redis+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    master_name: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:  # the password stays out of reprs, and so out of logs
        hosts = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"SentinelUrl({hosts}/{self.master_name}/{self.db}, tls={self.tls})"


@dataclass(frozen=True)
class ClusterUrl:
    """A parsed ``redis+cluster://`` URL: some nodes of one Redis Cluster (the client learns the rest)."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:  # the password stays out of reprs, and so out of logs
        return f"ClusterUrl({','.join(f'{h}:{p}' for h, p in self.nodes)}, tls={self.tls})"


def is_sentinel(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SENTINEL_SCHEMES


def is_cluster(url: str) -> bool:
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def _credentials(netloc: str, kind: str, shown: str) -> tuple[str, str | None, str | None]:
    """(hosts, username, password) of a multi-host URL's netloc ``[[user]:password@]hosts``."""
    username = password = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
        if not colon and user:
            raise RedisUrlError(f"a {kind} URL's credentials are [user]:password@ (the colon is missing): {shown}")
    return netloc, username, password


def _hosts(netloc: str, kind: str, default_port: int, shown: str) -> tuple[tuple[str, int], ...]:
    if not netloc:
        raise RedisUrlError(f"a {kind} URL needs at least one {kind} host:port: {shown}")
    hosts = []
    for part in netloc.split(","):
        m = _HOST_PORT.match(part)
        if m is None:
            raise RedisUrlError(f"bad {kind} address {part!r} (want host:port): {shown}")
        port = int(m["port"]) if m["port"] else default_port
        if not 1 <= port <= 65535:
            raise RedisUrlError(f"bad {kind} port {port} (1-65535): {shown}")
        hosts.append((m["ip6"] or m["host"], port))
    return tuple(hosts)


def parse_cluster_url(url: str) -> ClusterUrl:
    """Parse ``redis+cluster://[[user]:password@]host[:port][,host[:port]...][/]`` strictly.

    A Redis Cluster has one database, so the path is empty (``/0`` is allowed, nothing else);
    ``rediss+cluster://`` is the same with TLS to every node."""
    scheme, sep, rest = url.partition("://")
    shown = redacted(url)
    if not sep or scheme.lower() not in CLUSTER_SCHEMES:
        raise RedisUrlError(f"not a Cluster URL (redis+cluster://host:port[,host:port...]): {shown}")
    if "?" in rest or "#" in rest:
        raise RedisUrlError(f"a Cluster URL takes no query or fragment: {shown}")
    netloc, _, path = rest.partition("/")
    if path not in ("", "0", "0/"):
        raise RedisUrlError(f"a Redis Cluster has database 0 only; a Cluster URL's path is empty or /0: {shown}")
    netloc, username, password = _credentials(netloc, "Cluster", shown)
    nodes = _hosts(netloc, "Cluster", DEFAULT_CLUSTER_PORT, shown)
    return ClusterUrl(nodes, username, password, CLUSTER_SCHEMES[scheme.lower()])


def redacted(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "<not a URL>"
    netloc, slash, path = rest.partition("/")
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        # Without a colon the one word may be a password written without its colon.
        netloc = f"{user}:***@{hosts}" if colon else f"***@{hosts}"
    # A password can also ride in the query (``unix://...?password=``).
    path = re.sub(r"(?i)(password=)[^&]*", r"\1***", path)
    return f"{scheme}{sep}{netloc}{slash}{path}"


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/<master-name>[/db]`` strictly."""
    scheme, sep, rest = url.partition("://")
    shown = redacted(url)
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise RedisUrlError(f"not a Sentinel URL (redis+sentinel://host:port/<master-name>): {shown}")
    if "?" in rest or "#" in rest:
        raise RedisUrlError(f"a Sentinel URL takes no query or fragment: {shown}")
    netloc, _, path = rest.partition("/")
    netloc, username, password = _credentials(netloc, "Sentinel", shown)
    sentinels = _hosts(netloc, "Sentinel", DEFAULT_SENTINEL_PORT, shown)
    parts = path.split("/") if path else []
    if parts and parts[-1] == "":
        parts.pop()  # one trailing slash is harmless
    if not parts or not parts[0]:
        raise RedisUrlError(f"a Sentinel URL names the master after the hosts (.../<master-name>[/db]): {shown}")
    if len(parts) > 2:
        raise RedisUrlError(f"a Sentinel URL's path is /<master-name>[/db], not more: {shown}")
    master = parts[0]
    if not _MASTER_NAME.match(master):
        raise RedisUrlError(f"bad master name {master!r} (letters, digits, '.', '_' and '-'): {shown}")
    db = 0
    if len(parts) == 2:
        if not parts[1].isdigit():
            raise RedisUrlError(f"bad database number {parts[1]!r} (a whole number): {shown}")
        db = int(parts[1])
    return SentinelUrl(sentinels, master, db, username, password, SENTINEL_SCHEMES[scheme.lower()])


def check_url(url: str) -> None:
    """Raise :class:`RedisUrlError` unless ``url`` is one this module connects to."""
    if not isinstance(url, str) or "://" not in url:
        raise RedisUrlError(f"a Redis URL starts with redis://, rediss://, unix://, redis+sentinel:// or "
                            f"redis+cluster://: {redacted(str(url))}")
    scheme = url.split("://", 1)[0].lower()
    if scheme in SENTINEL_SCHEMES:
        parse_sentinel_url(url)
        return
    if scheme in CLUSTER_SCHEMES:
        parse_cluster_url(url)
        return
    if scheme not in PLAIN_SCHEMES:
        raise RedisUrlError(f"unknown Redis URL scheme {scheme!r} (redis, rediss, unix, redis+sentinel, "
                            f"rediss+sentinel, redis+cluster, rediss+cluster): {redacted(url)}")
    try:
        parsed = urlsplit(url)
        _ = parsed.port  # raises ValueError on a non-numeric or out-of-range port
    except ValueError as exc:
        raise RedisUrlError(f"bad Redis URL ({exc}): {redacted(url)}") from None


def where(url: str) -> str:
    """Where ``url`` leads, for messages: hosts and ports (and the master's name), never a password."""
    try:
        if is_sentinel(url):
            p = parse_sentinel_url(url)
            return f"master {p.master_name!r} via Sentinels " + ",".join(f"{h}:{port}" for h, port in p.sentinels)
        if is_cluster(url):
            return "Redis Cluster " + ",".join(f"{h}:{port}" for h, port in parse_cluster_url(url).nodes)
        parsed = urlsplit(url)
        if parsed.scheme == "unix":
            return parsed.path
        return f"{parsed.hostname}:{parsed.port or 6379}"
    except ValueError:
        return "the given URL"
