"""The dashboard's core: its database access, its pages' shared rendering, and the two
ways every route is served, `page` (a GET: anyone the policy lets in) and `action` (a
POST: access "all", the CSRF token and the same origin, then logged with who did it).

Pages are rendered on the server (Jinja2, autoescaped); htmx refreshes their `#live`
part every few seconds without losing the filters (they are the URL) or the scroll.
Every read runs on a pool of its own (at most `POOL_SIZE` connections) under a
`statement_timeout`, so a dashboard left open can neither starve the workers of
connections nor hold a long query on a big table.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import psycopg
from jinja2 import pass_context
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import NoMatchFound
from starlette.templating import Jinja2Templates

from pgjobs.app import App
from pgjobs.db import Database
from pgjobs.errors import DatabaseUnavailableError, PgJobsError
from pgjobs.web.access import Access, Policy, Refused
from pgjobs.web.csrf import COOKIE, FIELD, Forgery, Tokens
from pgjobs.web.format import FILTERS

log = logging.getLogger("pgjobs.web")

HERE = Path(__file__).parent
POOL_SIZE = 4
STATEMENT_TIMEOUT = 5.0  # seconds: a page's query that takes longer is cancelled
REFRESH_SECONDS = 5
# The pages in the navigation bar, by route name; a page not built is left out.
NAV = (
    ("overview", "Overview"),
    ("queues", "Queues"),
    ("jobs", "Jobs"),
    ("failing", "Failing"),
    ("workflows", "Workflows"),
    ("workers", "Workers"),
    ("schedules", "Schedules"),
    ("health", "Health"),
)
# `redact(task, args)` returns what the pages may show of a job's arguments.
Redact = Callable[[str, Mapping[str, Any]], Any]


class BadRequest(Exception):
    """The request asks for something malformed (400) or absent (404)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Dashboard:
    """One dashboard: an App of its own on the jobs' database and schema (its pool is the
    dashboard's), the access policy, the CSRF tokens and the templates."""

    app: App
    policy: Policy = field(default_factory=Policy)
    redact: Redact | None = None
    tokens: Tokens = field(default_factory=Tokens)

    def __post_init__(self) -> None:
        self.templates = Jinja2Templates(directory=str(HERE / "templates"))
        self.templates.env.filters.update(FILTERS)
        self.templates.env.globals["page_url"] = page_url
        # Links go to the dashboard's own routes, under its mount (see `url_of`).
        self.templates.env.globals["url_for"] = _template_url_for

    @classmethod
    def on(cls, url: str | None, schema: str | None, **options: Any) -> Dashboard:
        """A dashboard of the jobs at `url` and `schema` (None: pgjobs' usual defaults)."""
        app = App(url, schema=schema)
        app.database = Database(
            url, max_size=POOL_SIZE, wait=app.database.wait, statement_timeout=STATEMENT_TIMEOUT
        )
        return cls(app, **options)

    @contextmanager
    def reading(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection of the dashboard's pool, in a transaction (statement_timeout set)."""
        with self.app.database.transaction() as conn:
            yield conn

    def args_shown(self, task: str, args: Mapping[str, Any]) -> Any:
        """A job's arguments as the pages may show them (`redact`, when given)."""
        if self.redact is None:
            return args
        try:
            return self.redact(task, args)
        except Exception:
            log.exception("redact() failed; the arguments are hidden", extra={"task": task})
            return "(hidden)"

    def render(
        self,
        request: Request,
        template: str,
        context: Mapping[str, Any],
        *,
        status: int = 200,
    ) -> Response:
        """A page: `template` with the shared context (access, token, refresh)."""
        access = getattr(request.state, "access", None)
        nonce, new = self.tokens.nonce_of(request)
        shared = {
            "can_act": access is Access.ALL,
            "read_only": access is Access.READ,
            "csrf_field": FIELD,
            "csrf_token": self.tokens.token(nonce),
            "refresh_seconds": REFRESH_SECONDS,
            "schema": self.app.schema,
            "notice": request.query_params.get("notice"),
            "nav": _nav(request),
            # Only a page shown as asked refreshes itself (not an error, not a POST's).
            "auto_refresh": request.method == "GET" and status < 400,
        }
        response = self.templates.TemplateResponse(
            request, template, {**shared, **context}, status_code=status
        )
        if new:
            response.set_cookie(
                COOKIE, nonce, httponly=True, samesite="strict", path=_cookie_path(request)
            )
        response.headers["cache-control"] = "no-store"
        response.headers["x-frame-options"] = "DENY"
        response.headers["content-security-policy"] = (
            "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
            "frame-ancestors 'none'"
        )
        return response

    def error(self, request: Request, status: int, message: str) -> Response:
        """A clear error page (never a traceback), for any status."""
        response = self.render(
            request, "error.html", {"status": status, "message": message}, status=status
        )
        if status == 401:
            response.headers["www-authenticate"] = 'Basic realm="pgjobs", charset="UTF-8"'
        return response


Handler = Callable[[Dashboard, Request], Response]
ActionHandler = Callable[[Dashboard, Request, FormData, str], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


def page(dashboard: Dashboard, handler: Handler) -> Endpoint:
    """Serve a GET: the policy decides; the handler runs on a thread (it reads the
    database), and what goes wrong becomes a clear error page."""

    async def endpoint(request: Request) -> Response:
        try:
            request.state.access, request.state.who = dashboard.policy.access(request)
        except Refused as refused:
            return dashboard.error(request, refused.status, refused.message)
        return await run_in_threadpool(_served, dashboard, request, handler)

    return endpoint


def action(dashboard: Dashboard, handler: ActionHandler) -> Endpoint:
    """Serve a POST that changes something: access "all", a valid CSRF token from a page
    of this origin; the handler gets the form and who asked (it logs what it did)."""

    async def endpoint(request: Request) -> Response:
        try:
            request.state.access, who = dashboard.policy.access(request)
            if request.state.access is not Access.ALL:
                raise Refused(403, "this dashboard is read-only for you: nothing was changed")
            form = await request.form()
            submitted = form.get(FIELD)
            dashboard.tokens.check(request, submitted if isinstance(submitted, str) else None)
        except Refused as refused:
            return dashboard.error(request, refused.status, refused.message)
        except Forgery as forgery:
            return dashboard.error(request, 403, f"{forgery}. Nothing was changed.")
        return await run_in_threadpool(
            _served, dashboard, request, lambda d, r: handler(d, r, form, who)
        )

    return endpoint


def _served(dashboard: Dashboard, request: Request, handler: Handler) -> Response:
    try:
        return handler(dashboard, request)
    except BadRequest as bad:
        return dashboard.error(request, bad.status, bad.message)
    except (DatabaseUnavailableError, psycopg.OperationalError) as error:
        if isinstance(error, psycopg.errors.QueryCanceled):
            message = "the database took too long to answer this page; try narrower filters"
        else:
            message = f"the database is not reachable: {str(error).splitlines()[0]}"
        log.warning("dashboard: database unavailable", extra={"error": str(error)})
        return dashboard.error(request, 503, message)
    except PgJobsError as error:
        return dashboard.error(request, 400, str(error))


def url_of(request: Request, name: str, /, **params: Any) -> str:
    """The path of the dashboard's route `name`, under the path it is mounted at.

    Looked up in the dashboard's own routes (`request.app` is the dashboard's Starlette
    app), never the host application's: a host route of the same name ("health",
    "static") must not take over the dashboard's links. The mount's path is the
    request's `root_path`.
    """
    path = request.app.router.url_path_for(name, **params)
    return str(request.scope.get("root_path") or "").rstrip("/") + str(path)


def with_query(url: str, **query: Any) -> str:
    """`url` with these query parameters (None values left out)."""
    given = {key: value for key, value in query.items() if value is not None}
    return f"{url}?{urlencode(given, doseq=True)}" if given else url


def redirect(request: Request, route: str, notice: str | None = None, **params: Any) -> Response:
    """Back to a page after an action (303: the browser GETs it), with a one-line notice."""
    return RedirectResponse(with_query(url_of(request, route, **params), notice=notice), 303)


def logged(action_name: str, who: str, **fields: Any) -> None:
    """Every change made from the dashboard is logged, with who made it."""
    log.info("dashboard action", extra={"action": action_name, "who": who, **fields})


def page_url(request: Request, name: str, **query: Any) -> str:
    """The URL of page `name` with `query`, or "" when this dashboard has no such page."""
    try:
        return with_query(url_of(request, name), **query)
    except NoMatchFound:
        return ""


@pass_context
def _template_url_for(context: dict[str, Any], name: str, /, **params: Any) -> str:
    return url_of(context["request"], name, **params)


def _nav(request: Request) -> list[tuple[str, str, bool]]:
    """(url, title, current) of each page this dashboard has."""
    current = request.scope.get("route")
    found = []
    for name, title in NAV:
        url = page_url(request, name)
        if url:
            found.append((url, title, getattr(current, "name", None) == name))
    return found


def _cookie_path(request: Request) -> str:
    root = request.scope.get("root_path") or ""
    return root.rstrip("/") + "/" if root else "/"
