"""Who may see the dashboard and who may act: enforced by the server on every request.

Three ways in, one result per request, an `Access` level:
- `authorize(request)`, the host application's callback when the dashboard is mounted:
  it returns "all", "read" or None (None: 403);
- `--auth user:password`: HTTP Basic, 401 with `WWW-Authenticate` until it is given;
- neither: everyone who reaches the port, which `pgjobs web` allows on loopback only.

`read_only` caps every level at "read". The level is checked again where an action is
done, not only where its button is drawn: a read-only visitor's POST is refused (403)
whatever the page or the client sends.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress
import socket
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from starlette.requests import HTTPConnection

from pgjobs.errors import ConfigurationError


class Access(str, Enum):
    """What a request may do: look (READ) or also act (ALL)."""

    READ = "read"
    ALL = "all"


# The host application's say on a request: "all", "read" or None (refused).
Authorize = Callable[[HTTPConnection], Any]


class Refused(Exception):
    """The request may not see the dashboard: `status` 401 (who are you?) or 403."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class BasicAuth:
    """`--auth user:password`: one account, compared in constant time."""

    user: str
    password: str

    @classmethod
    def parse(cls, text: str) -> BasicAuth:
        user, colon, password = text.partition(":")
        if not colon or not user or not password:
            raise ConfigurationError("--auth must be USER:PASSWORD, both non-empty")
        return cls(user, password)

    def user_of(self, header: str | None) -> str | None:
        """The user an `Authorization: Basic ...` header proves, or None."""
        if not header or not header.lower().startswith("basic "):
            return None
        try:
            decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        user, _, password = decoded.partition(":")
        same_user = hmac.compare_digest(user.encode(), self.user.encode())
        same_password = hmac.compare_digest(password.encode(), self.password.encode())
        return user if same_user and same_password else None


@dataclass(frozen=True)
class Policy:
    """How the dashboard decides each request's `Access`, and whom to name in the log."""

    authorize: Authorize | None = None
    basic: BasicAuth | None = None
    read_only: bool = False

    def access(self, request: HTTPConnection) -> tuple[Access, str]:
        """The request's level and who it is (for the log of actions); `Refused` else."""
        if self.authorize is not None:
            level = _level(self.authorize(request))
            who = _user_name(request)
        elif self.basic is not None:
            user = self.basic.user_of(request.headers.get("authorization"))
            if user is None:
                raise Refused(401, "authentication required")
            level, who = Access.ALL, user
        else:
            level, who = Access.ALL, _client(request)
        if self.read_only:
            level = Access.READ
        return level, who


def _level(answer: object) -> Access:
    if answer is None or answer is False:
        raise Refused(403, "you may not see this dashboard")
    try:
        return Access(answer)
    except ValueError:
        raise ConfigurationError(
            f"authorize() must return 'all', 'read' or None, not {answer!r}"
        ) from None


def _user_name(request: HTTPConnection) -> str:
    """The host application's user when it set one (Starlette's `request.user`)."""
    user = request.scope.get("user")
    name = getattr(user, "display_name", None) or getattr(user, "username", None)
    return str(name) if name else _client(request)


def _client(request: HTTPConnection) -> str:
    return request.client.host if request.client else "unknown"


def is_loopback(host: str) -> bool:
    """Whether binding `host` listens on this machine only (a name resolves first)."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a).is_loopback for a in addresses)
