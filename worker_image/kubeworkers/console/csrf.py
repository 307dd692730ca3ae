"""Action tokens: a retry, cancel or replay POST must carry a token only the console's own page has.

The scheme (docs/console.md, *Security*): the server holds a random 256-bit key, made at start and
never written anywhere. A browser gets a random value in a cookie (``HttpOnly``,
``SameSite=Strict``, ``Path=/``); every action form carries ``csrf = HMAC-SHA256(key, cookie)``.
A POST is accepted only if the cookie is there, the form's token matches it (compared in constant
time), and an ``Origin`` header, when the browser sends one, names the console itself. Another site
can neither read the token (same-origin policy) nor send the cookie (``SameSite=Strict``), so it
cannot forge an action; a restart of the console (a new key) invalidates every old page's forms.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets

#: The cookie holding the browser's value.
COOKIE = "kw_console"
#: The form field holding the token.
FIELD = "csrf"


class Tokens:
    """The console's key and the checks made with it."""

    def __init__(self, key: bytes | None = None) -> None:
        self._key = key if key is not None else secrets.token_bytes(32)

    @staticmethod
    def new_cookie() -> str:
        return secrets.token_urlsafe(32)

    def token(self, cookie: str) -> str:
        """The token the forms of a page served to the browser with ``cookie`` carry."""
        return hmac.new(self._key, cookie.encode(), hashlib.sha256).hexdigest()

    def valid(self, cookie: str | None, token: str | None) -> bool:
        """Whether a POST's cookie and form token go together."""
        if not cookie or not token or len(cookie) > 200:
            return False
        return hmac.compare_digest(self.token(cookie), token)


def loopback(host: str) -> bool:
    """Whether a host name or address is this machine only (``localhost``, 127.0.0.0/8, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def host_allowed(header: str | None, listen_host: str) -> bool:
    """Whether a request's ``Host`` header may reach a console listening on ``listen_host``.

    A console on a loopback address answers only to loopback names: a page of another site whose
    name was re-pointed at 127.0.0.1 (DNS rebinding) would otherwise be same-origin with the console
    and could read its pages and their tokens. On any other address every name is accepted (put an
    authenticating proxy in front of it; docs/console.md).
    """
    if not loopback(listen_host):
        return True
    if not header:
        return False
    return loopback(host_name(header))


def host_name(header: str) -> str:
    """The name of a ``Host`` header, without its port (``[::1]:8089`` is ``::1``)."""
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0]


def same_origin(origin: str | None, host: str | None) -> bool:
    """Whether a request's ``Origin`` header (None: the browser sent none) names ``host`` itself.

    ``http://`` or ``https://``: behind a proxy that ends TLS the browser says https and the console
    sees http; the host is what tells one site from another.
    """
    if origin is None:
        return True
    return host is not None and origin in (f"http://{host}", f"https://{host}")
