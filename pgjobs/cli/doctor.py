"""`pgjobs doctor`: the checks of pgjobs.doctor as a table, or JSON, and `--fix`.

JSON output (`--json`) is an array of `{name, status, message, fix}`; with `--fix`, what
the fixes did goes to stderr so that stdout stays one JSON document. The exit status is 1
when a check fails or a fix could not be applied.
"""

from __future__ import annotations

import sys
from contextlib import closing
from typing import TYPE_CHECKING, Annotated

import typer

from pgjobs.cli.common import DatabaseUrlOption, JsonOption, SchemaOption, open_app
from pgjobs.cli.output import make_table, print_json, print_rich

if TYPE_CHECKING:
    from pgjobs.doctor import Finding, Repaired

STYLES = {"ok": "green", "warn": "yellow", "fail": "bold red"}


def doctor(
    database_url: DatabaseUrlOption = None,
    schema: SchemaOption = None,
    as_json: JsonOption = False,
    fix: Annotated[
        bool,
        typer.Option(
            "--fix",
            help="Apply the safe fixes the checks name (autovacuum settings of pgjobs' tables, "
            "REINDEX INDEX CONCURRENTLY of an invalid index), print what they did, check again.",
        ),
    ] = False,
) -> int:
    """Check the database for what hurts a queue: dead rows and vacuum, bloat, what
    holds the xmin horizon, sessions idle in transaction, connections, invalid indexes,
    queue lag, stale heartbeats, pending migrations, notifications, the server version.

    Each check is ok, warn or fail, with its fix in one line. Exit status 1 when any
    check fails (or a fix could not be applied).
    """
    from pgjobs.doctor import diagnose, repair

    with closing(open_app(database_url, schema, migrated=False)) as app:
        findings = diagnose(app)
        repaired: list[Repaired] = []
        if fix:
            repaired = repair(app, findings)
            _print_repairs(repaired, to_stderr=as_json)
            if repaired:
                findings = diagnose(app)
    if as_json:
        print_json([finding.as_dict() for finding in findings])
    else:
        _print_table(findings)
    failed = any(finding.status == "fail" for finding in findings)
    return 1 if failed or any(not done.done for done in repaired) else 0


def _print_repairs(repaired: list[Repaired], *, to_stderr: bool) -> None:
    out = sys.stderr if to_stderr else sys.stdout
    if not repaired:
        print("fix: nothing to fix", file=out)
    for done in repaired:
        if done.done:
            print(f"fixed: {done.what}: {done.outcome}", file=out)
        else:
            print(f"not fixed: {done.what}: {done.outcome}", file=out)


def _print_table(findings: list[Finding]) -> None:
    from rich.text import Text

    table = make_table("check", "status", "message", "fix")
    for finding in findings:
        table.add_row(
            finding.name,
            Text(finding.status, style=STYLES[finding.status]),
            finding.message,
            finding.fix,
        )
    counts = {status: sum(f.status == status for f in findings) for status in STYLES}
    summary = (
        f"{len(findings)} checks: {counts['ok']} ok, {counts['warn']} warn, {counts['fail']} fail"
    )
    print_rich(table, summary)
