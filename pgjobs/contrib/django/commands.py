"""What `manage.py pgjobs_migrate` and `manage.py pgjobs_work` share.

Each stands for a `pgjobs` command and takes its options, read from that command itself,
so an option added to `pgjobs work` is at once one of `pgjobs_work`; their values are
checked and converted as the `pgjobs` command converts them, then the command's own
function runs. What the environment gives `pgjobs` (the database, the schema, the App)
comes from Django's settings here. Errors a user can cause are one line, as Django
reports a `CommandError`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

import psycopg
import typer
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError

from pgjobs.contrib.django import conf
from pgjobs.db import first_line
from pgjobs.errors import PgJobsError

SETTINGS_HELP = {
    "database_url": "PostgreSQL URL. Default: the PGJOBS_DATABASE_URL setting, else "
    'DATABASES["default"].',
    "schema": "The pgjobs schema. Default: the PGJOBS_SCHEMA setting, else pgjobs.",
}


class PgjobsCommand(BaseCommand):
    """A management command that runs the `pgjobs` command named `pgjobs_command`."""

    pgjobs_command = ""
    option_help: ClassVar[Mapping[str, str]] = {}

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        taken = set(parser._option_string_actions)  # Django's own (--settings, -v, ...)
        for option in self.options():
            names = [name for name in option.opts if name not in taken]
            if not names:
                continue
            text = {**SETTINGS_HELP, **self.option_help}.get(option.name, option.help or "")
            if option.default not in (None, False) and "Default" not in text:
                text = f"{text} [default: {option.default}]"
            text = text.replace("%", "%%")  # argparse formats help with %
            if option.is_flag:
                flag = {"dest": option.name, "action": "store_const"}
                parser.add_argument(*names, const=True, help=text, **flag)
                negative = [name for name in option.secondary_opts if name not in taken]
                if negative:
                    parser.add_argument(*negative, const=False, help=f"Not {names[0]}.", **flag)
            else:
                parser.add_argument(*names, dest=option.name, metavar=option.metavar, help=text)

    def options(self) -> list[Any]:
        """The options of the `pgjobs` command (typer's own Click objects)."""
        from typer.main import get_command

        from pgjobs.cli import cli

        command = get_command(cli).commands[self.pgjobs_command]  # type: ignore[attr-defined]
        return [param for param in command.params if param.param_type_name == "option"]

    def given(self, options: Mapping[str, Any]) -> dict[str, Any]:
        """The pgjobs options given (on the command line or to `call_command`),
        converted as `pgjobs` converts them."""
        values = {}
        for option in self.options():
            value = options.get(option.name)
            if value is None:
                continue
            try:
                values[option.name] = option.type.convert(value, option, None)
            except Exception as error:  # Click's BadParameter, from typer's own Click
                if hasattr(error, "format_message"):  # it names the option
                    raise CommandError(error.format_message()) from None
                raise CommandError(f"{option.opts[0]}: {error}") from None
        return values


@contextmanager
def reported() -> Iterator[None]:
    """Errors a user can cause as one line (a `CommandError`), and the exit status of a
    `pgjobs` command that ends with one (a worker's)."""
    try:
        yield
    except typer.Exit as done:
        if done.exit_code:
            raise SystemExit(done.exit_code) from None
    except (PgJobsError, ImproperlyConfigured) as error:
        raise CommandError(first_line(error)) from error
    except psycopg.Error as error:
        raise CommandError(f"database error: {first_line(error)}") from error


def settings_defaults(values: dict[str, Any]) -> dict[str, Any]:
    """`values` with the database and schema of Django's settings where none was given."""
    return {
        **values,
        "database_url": values.get("database_url") or conf.database_url(),
        "schema": values.get("schema") or conf.schema(),
    }
