"""`pgjobs web`: the dashboard, served by uvicorn (the `web` extra)."""

from __future__ import annotations

from typing import Annotated

import typer

from pgjobs.cli.common import DatabaseUrlOption, SchemaOption, open_app
from pgjobs.errors import ConfigurationError


def web(
    host: Annotated[
        str, typer.Option(metavar="HOST", help="Address to listen on (loopback by default).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(metavar="PORT", help="Port to listen on.")] = 8080,
    auth: Annotated[
        str | None,
        typer.Option(
            metavar="USER:PASSWORD",
            envvar="PGJOBS_WEB_AUTH",
            show_envvar=True,
            help="Ask for these credentials (HTTP Basic); required beyond loopback.",
        ),
    ] = None,
    read_only: Annotated[
        bool, typer.Option("--read-only", help="Show everything, change nothing.")
    ] = False,
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Serve the web dashboard: queues, jobs, failures, workers, schedules.

    It listens on 127.0.0.1:8080 unless told otherwise, and refuses to listen on any
    other address without --auth: whoever reaches the port could retry, cancel and
    delete jobs. Put it behind TLS (a reverse proxy) when it leaves the machine.
    """
    from pgjobs.web import create_app, require_web
    from pgjobs.web.access import BasicAuth, is_loopback

    require_web()
    if not 0 < port < 65536:
        raise ConfigurationError(f"--port must be between 1 and 65535, got {port}")
    if auth is not None:
        BasicAuth.parse(auth)  # a malformed value is refused before anything starts
    elif not is_loopback(host):
        raise ConfigurationError(
            f"refusing to serve the dashboard on {host} without authentication: give "
            "--auth USER:PASSWORD (or listen on 127.0.0.1 and use an SSH tunnel)"
        )
    schema = _schema_to_show(database_url, schema)
    import uvicorn

    dashboard = create_app(database_url, schema=schema, auth=auth, read_only=read_only)
    where = f"http://{host}:{port}/"
    typer.echo(f"pgjobs dashboard on {where}{' (read-only)' if read_only else ''}", err=True)
    uvicorn.run(dashboard, host=host, port=port, log_level="warning", server_header=False)


def _schema_to_show(database_url: str | None, schema: str | None) -> str | None:
    """The schema to serve, checked to be migrated. Given none, on a database where
    pgjobs' default schema is not migrated but `pgjobs demo`'s is, the demo's jobs are
    shown (said on stderr): the tour leaves them for the dashboard."""
    from pgjobs.config import resolve_schema
    from pgjobs.demo import DEMO_SCHEMA
    from pgjobs.errors import SchemaBehindError, SchemaNotMigratedError

    try:
        open_app(database_url, schema).close()
        return schema
    except SchemaBehindError:
        raise
    except SchemaNotMigratedError:
        if schema is not None:
            raise
        default = resolve_schema(None)
        try:
            open_app(database_url, DEMO_SCHEMA).close()
        except SchemaNotMigratedError:
            raise SchemaNotMigratedError(
                f"the schema {default} is not migrated: run `pgjobs migrate`, or `pgjobs "
                "demo` for a tour whose jobs the dashboard then shows"
            ) from None
    typer.echo(
        f"the schema {default} is not migrated: showing {DEMO_SCHEMA}, the demo's jobs "
        "(--schema chooses another)",
        err=True,
    )
    return DEMO_SCHEMA
