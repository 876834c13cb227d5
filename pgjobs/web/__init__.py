"""pgjobs' web dashboard (the `web` extra): `pgjobs web`, or mounted in your ASGI app.

    from fastapi import FastAPI
    from pgjobs.web import create_app

    api = FastAPI()
    api.mount("/jobs", create_app(app, authorize=lambda request: "read"))

See docs/dashboard.md. Starlette, Jinja2 and uvicorn are imported only here and below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pgjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from pgjobs.app import App
    from pgjobs.web.access import Authorize
    from pgjobs.web.dashboard import Redact


def require_web() -> None:
    """Fail with the fix when the `web` extra is not installed."""
    try:
        import jinja2  # noqa: F401
        import starlette  # noqa: F401
    except ImportError:
        raise ConfigurationError(
            "the dashboard needs the web extra: pip install 'pgjobs-queue[web]'"
        ) from None


def create_app(
    app_or_url: App | str | None = None,
    *,
    schema: str | None = None,
    authorize: Authorize | None = None,
    read_only: bool = False,
    redact: Redact | None = None,
    auth: str | None = None,
) -> Starlette:
    """The dashboard as an ASGI application, to mount in FastAPI, Starlette or Django.

    `app_or_url`: your `pgjobs.App` (its database and schema; the dashboard opens a small
    pool of its own) or a database URL (None: `PGJOBS_DATABASE_URL`, as the CLI).
    `authorize(request)` returns "all" (look and act), "read" (look) or None (403) for
    each request; `auth="user:password"` asks for HTTP Basic instead. `read_only` takes
    every action away, whatever `authorize` says. `redact(task, args)` returns what the
    pages show of a job's arguments.
    """
    require_web()
    from pgjobs.app import App
    from pgjobs.web.access import BasicAuth, Policy
    from pgjobs.web.dashboard import Dashboard
    from pgjobs.web.server import build

    if authorize is not None and auth is not None:
        raise ConfigurationError("give authorize= or auth=, not both")
    if isinstance(app_or_url, App):
        url: Any = app_or_url.database.url
        schema = schema or app_or_url.schema
    else:
        url = app_or_url
    policy = Policy(
        authorize=authorize,
        basic=None if auth is None else BasicAuth.parse(auth),
        read_only=read_only,
    )
    dashboard = Dashboard.on(url, schema, policy=policy, redact=redact)
    if isinstance(app_or_url, App):
        # The schedules page shows what the App declares, and runs them with its args.
        dashboard.app.schedules = app_or_url.schedules
    return build(dashboard)
