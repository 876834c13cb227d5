"""`manage.py pgjobs_migrate`: `pgjobs migrate` on the database and schema of the settings."""

from __future__ import annotations

from typing import Any

from pgjobs.contrib.django.commands import PgjobsCommand, reported, settings_defaults


class Command(PgjobsCommand):
    """Create or upgrade the pgjobs schema (idempotent); `--sql` prints the SQL instead."""

    help = "Create or upgrade the pgjobs schema (idempotent), like `pgjobs migrate`."
    pgjobs_command = "migrate"

    def handle(self, *args: Any, **options: Any) -> None:
        from pgjobs.cli.migrate import migrate

        with reported():
            migrate(**settings_defaults(self.given(options)))
