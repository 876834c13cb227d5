"""`pgjobs demo`: the tour of `pgjobs.demo`, which needs nothing but pgjobs installed."""

from __future__ import annotations

from typing import Annotated

import typer

from pgjobs.cli.common import DatabaseUrlOption
from pgjobs.demo import DEMO_SCHEMA


def demo(
    database_url: DatabaseUrlOption = None,
    schema: Annotated[
        str,
        typer.Option(
            "--schema",
            metavar="NAME",
            help="Schema for the demo's jobs; keep it apart from real jobs.",
        ),
    ] = DEMO_SCHEMA,
) -> None:
    """A tour: enqueue sample jobs (some fail and retry), run a worker live, summarise.

    Uses the embedded local PostgreSQL unless a database is configured, and its own
    schema, pgjobs_demo. The jobs stay for `pgjobs web --schema pgjobs_demo` to show,
    until the next run replaces them.
    """
    from pgjobs.demo.tour import run_tour

    if not run_tour(database_url, schema):
        raise typer.Exit(1)
