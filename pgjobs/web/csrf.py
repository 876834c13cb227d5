"""Cross-site request forgery: every action is a POST carrying the page's token, from the
dashboard's own origin.

The token is bound to a random cookie (`pgjobs_csrf`, SameSite=Strict, HttpOnly) by an
HMAC under the dashboard's secret, so a page elsewhere can neither read it nor forge
one, and a cookie planted by a sibling domain is worth nothing without its token. The
`Origin` header (else `Referer`) must name the dashboard's own scheme, host and port:
a browser always sends it with a POST, and a request without either is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

COOKIE = "pgjobs_csrf"
FIELD = "csrf_token"
HEADER = "x-csrf-token"


class Forgery(Exception):
    """A POST that is not from the dashboard's own pages (403)."""


class Tokens:
    """Issues and checks the tokens of one dashboard (its secret lives in memory: a
    restart asks the open pages to reload once)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def nonce_of(self, request: Request) -> tuple[str, bool]:
        """The request's cookie value, or a new one (True: set the cookie)."""
        current = request.cookies.get(COOKIE)
        if current and len(current) == 43:
            return current, False
        return secrets.token_urlsafe(32), True

    def token(self, nonce: str) -> str:
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()

    def check(self, request: Request, submitted: str | None) -> None:
        """Raise `Forgery` unless the POST is same-origin and carries the right token."""
        check_origin(request)
        nonce = request.cookies.get(COOKIE)
        given = submitted or request.headers.get(HEADER)
        if not nonce or not given:
            raise Forgery("the form's security token is missing: reload the page")
        if not hmac.compare_digest(self.token(nonce), given):
            raise Forgery("the form's security token is not valid: reload the page")


def check_origin(request: Request) -> None:
    """The request comes from a page of this server (scheme, host and port)."""
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        referer = request.headers.get("referer")
        if not referer:
            raise Forgery("a POST must say where it comes from (Origin or Referer)")
        origin = referer
    given = urlsplit(origin)
    own = request.url
    own_port = own.port or (443 if own.scheme == "https" else 80)
    given_port = given.port or (443 if given.scheme == "https" else 80)
    same = (given.scheme, given.hostname, given_port) == (own.scheme, own.hostname, own_port)
    if not same:
        raise Forgery(f"a POST from another site ({given.scheme}://{given.netloc}) is refused")
