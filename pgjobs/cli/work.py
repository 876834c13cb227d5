"""`pgjobs work --app MODULE:ATTR`: run a worker until SIGTERM or SIGINT."""

from __future__ import annotations

from typing import Annotated

import typer

from pgjobs.cli.common import DatabaseUrlOption, SchemaOption, app_option, load_app, parse_duration
from pgjobs.errors import ConfigurationError

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def work(
    app_reference: Annotated[
        str,
        app_option("The App to serve, as module:attribute (the current directory is on the path)."),
    ],
    queues: Annotated[
        str | None,
        typer.Option(
            metavar="QUEUES", help="Queues to serve: a,b or a=6,b=3 (weights). Default: all."
        ),
    ] = None,
    concurrency: Annotated[
        int, typer.Option(metavar="N", help="Threads, i.e. jobs run at once.")
    ] = 10,
    async_concurrency: Annotated[
        int,
        typer.Option(metavar="N", help="async def tasks run at once on the worker's event loop."),
    ] = 100,
    prefetch: Annotated[
        int | None,
        typer.Option(
            metavar="N",
            help=(
                "Jobs claimed ahead, waiting for a free thread, at most. What is held is also "
                "bounded in time (--claim-window). Default: 1,024."
            ),
        ),
    ] = None,
    claim_window: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Claim ahead no more than the threads are expected to start within "
            "SECONDS, from measured task durations (more than 0, at most 1).",
        ),
    ] = 0.25,
    async_claim_commit: Annotated[
        bool,
        typer.Option(
            "--async-claim-commit",
            help="Claims commit without waiting for the disk: faster pickup, but a server "
            "crash may undo a claim and run its job again with no entry in errors.",
        ),
    ] = False,
    shutdown_timeout: Annotated[
        float,
        typer.Option(metavar="SECONDS", help="Seconds running jobs get to finish on SIGTERM."),
    ] = 30.0,
    rescue_after: Annotated[
        float,
        typer.Option(
            metavar="SECONDS",
            help="Seconds without heartbeat before a job is rescued; at least 1 (workers "
            "beat every SECONDS/4, at most 10 s).",
        ),
    ] = 60.0,
    poll_interval: Annotated[
        float, typer.Option(metavar="SECONDS", help="Seconds between polls for delayed jobs.")
    ] = 1.0,
    retention: Annotated[
        str,
        typer.Option(
            metavar="RETENTION",
            help="How long finished jobs stay before the maintenance leader deletes them: "
            "STATE=DURATION pairs (others keep their default), 'off' for a state or for all. "
            "Default: completed=1d,failed=7d,cancelled=1d.",
        ),
    ] = "completed=1d,failed=7d,cancelled=1d",
    log_format: Annotated[str, typer.Option(metavar="FORMAT", help="text or json.")] = "text",
    log_level: Annotated[
        str, typer.Option(metavar="LEVEL", help="DEBUG, INFO, WARNING or ERROR.")
    ] = "INFO",
    listen_database_url: Annotated[
        str | None,
        typer.Option(
            "--listen-database-url",
            metavar="URL",
            envvar="PGJOBS_LISTEN_DATABASE_URL",
            show_envvar=True,
            help="PostgreSQL URL for LISTEN alone (direct or session-pooled), when the main "
            "URL is a transaction pooler such as PgBouncer. Default: the main URL.",
        ),
    ] = None,
    periodic: Annotated[
        bool,
        typer.Option(
            "--periodic/--no-periodic",
            help="Enqueue the App's periodic tasks while this worker leads the maintenance.",
        ),
    ] = True,
    metrics_port: Annotated[
        int | None,
        typer.Option(
            metavar="PORT",
            help="Serve Prometheus metrics at http://HOST:PORT/metrics (needs the metrics "
            "extra). Default: off.",
        ),
    ] = None,
    metrics_host: Annotated[
        str, typer.Option(metavar="HOST", help="Address the metrics server listens on.")
    ] = "127.0.0.1",
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
) -> None:
    """Run a worker: claim jobs, run them, retry failures; SIGTERM drains and exits."""
    from pgjobs.logs import configure_logging
    from pgjobs.worker import Worker, WorkerSettings
    from pgjobs.worker.queues import QueueSpec
    from pgjobs.worker.retention import RetentionPolicy

    # Every option is checked before the App's module is imported or anything connects,
    # so a typo costs one line and no thread.
    if log_format not in ("text", "json"):
        raise ConfigurationError(f"--log-format must be text or json, got {log_format!r}")
    if log_level.upper() not in LOG_LEVELS:
        raise ConfigurationError(
            f"--log-level must be DEBUG, INFO, WARNING or ERROR, got {log_level!r}"
        )
    settings = WorkerSettings(
        concurrency=concurrency,
        async_concurrency=async_concurrency,
        prefetch=prefetch,
        claim_window=claim_window,
        async_claim_commit=async_claim_commit,
        queues=QueueSpec.parse(queues),
        shutdown_timeout=shutdown_timeout,
        rescue_after=rescue_after,
        poll_interval=poll_interval,
        retention=RetentionPolicy.parse(
            _once_per_state(retention), lambda text: parse_duration(text, "--retention")
        ),
        listen_database_url=listen_database_url,
        periodic=periodic,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
    )
    if metrics_port is not None:
        from pgjobs.worker.metrics import require_prometheus

        require_prometheus()
    app = load_app(app_reference)
    app.configure(database_url=database_url, schema=schema)
    configure_logging(log_format, log_level)
    # `run` checks the schema first, on the worker's own connection (the App's pool would
    # keep one more connection open for nothing).
    raise typer.Exit(Worker(app, settings).run())


def _once_per_state(retention: str) -> str:
    """`--retention` as given, unless it names a state twice (`completed=1d,completed=2d`),
    which would otherwise keep the last without a word."""
    states = [part.partition("=")[0].strip() for part in retention.split(",")]
    repeated = sorted({state for state in states if state and states.count(state) > 1})
    if repeated:
        raise ConfigurationError(f"--retention gives {', '.join(repeated)} more than once")
    return retention
