"""What the commands share: their options, how their help reads, and the helpers they call.

Everything heavy (the App and the database driver behind it, rich, the worker) is
imported inside the functions that need it, so that `pgjobs --help` stays quick.
"""

from __future__ import annotations

import importlib
import math
import os
import re
import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperArgument, TyperCommand

from pgjobs.errors import ConfigurationError

if TYPE_CHECKING:
    from pgjobs.app import App

DatabaseUrlOption = Annotated[
    str | None,
    typer.Option(
        "--database-url",
        metavar="URL",
        envvar=["PGJOBS_DATABASE_URL", "DATABASE_URL"],
        show_envvar=True,
        help="PostgreSQL URL. Default: the embedded local cluster.",
    ),
]
SchemaOption = Annotated[
    str | None,
    typer.Option(
        "--schema",
        metavar="NAME",
        envvar="PGJOBS_SCHEMA",
        show_envvar=True,
        help="The pgjobs schema. Default: pgjobs.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhdw]?)")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
# Far beyond any real retention, and far inside what a timedelta and a PostgreSQL
# timestamp can hold (`now() - interval` fails past 4713 BC).
_LONGEST_DURATION_DAYS = 36500


class Command(TyperCommand):
    """A command whose help names each argument by its metavar alone.

    Typer prints an argument as `{ID}...` in the usage line and `ID <list[int]>` below it;
    a reader wants `ID...`. (Options carry a metavar of their own.) The parameters are
    typed loosely because the Click that typer vendors is private to it.
    """

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        return pieces + [_argument_label(param) for param in self._arguments(ctx)]

    def format_options(self, ctx: Any, formatter: Any) -> None:
        arguments = [
            (_argument_label(param), param.help or "")
            for param in self._arguments(ctx)
            if not param.hidden
        ]
        options = [
            record
            for param in self.get_params(ctx)
            if param.param_type_name == "option" and (record := param.get_help_record(ctx))
        ]
        for title, rows in (("Arguments", arguments), ("Options", options)):
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)

    def _arguments(self, ctx: Any) -> list[TyperArgument]:
        return [param for param in self.get_params(ctx) if isinstance(param, TyperArgument)]


def _argument_label(argument: TyperArgument) -> str:
    name = argument.metavar or (argument.name or "").upper()
    return f"{name}..." if argument.nargs != 1 else name


def debug_enabled() -> bool:
    """`PGJOBS_DEBUG=1` shows full tracebacks instead of one-line errors."""
    return os.environ.get("PGJOBS_DEBUG", "") not in ("", "0")


def parse_duration(text: str, option: str = "--older-than") -> float:
    """Seconds in "3600", "45s", "30m", "12h", "7d" or "2w", up to 100 years; errors name
    `option`."""
    match = _DURATION.fullmatch(text.strip())
    if match is None:
        raise ConfigurationError(
            f"{option} takes seconds or a duration like 7d, 12h or 30m, not {text!r}"
        )
    seconds = float(match[1]) * _UNIT_SECONDS[match[2]]
    if not math.isfinite(seconds) or seconds > _LONGEST_DURATION_DAYS * 86400:
        raise ConfigurationError(
            f"{option} must be at most {_LONGEST_DURATION_DAYS}d (100 years), not {text!r}"
        )
    return seconds


def load_app(reference: str) -> App:
    """Import `module:attribute` (from the current directory too) and check it is an App.

    A module that fails to import is reported with the real cause, which is often a
    missing dependency of the user's module rather than the module itself.
    """
    from pgjobs.app import App
    from pgjobs.db import first_line

    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigurationError(f"--app must look like module:attribute, got {reference!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as error:
        if isinstance(error, ModuleNotFoundError) and _names_module(error, module_name):
            raise ConfigurationError(f"--app: cannot import module {module_name!r}") from error
        cause = first_line(error)
        if not isinstance(error, ImportError):
            cause = f"{type(error).__name__}: {cause}"
        raise ConfigurationError(f"--app: importing {module_name!r} failed: {cause}") from error
    if not hasattr(module, attribute):
        raise ConfigurationError(f"--app: module {module_name!r} has no attribute {attribute!r}")
    app = getattr(module, attribute)
    if not isinstance(app, App):
        raise ConfigurationError(
            f"--app: {reference} is not a pgjobs.App (found {type(app).__name__})"
        )
    return app


def _names_module(error: ModuleNotFoundError, module_name: str) -> bool:
    """True when the missing module is the one asked for (or its package), not one of
    its imports."""
    missing = error.name or ""
    return module_name == missing or module_name.startswith(missing + ".")


def open_app(database_url: str | None, schema: str | None, *, migrated: bool = True) -> App:
    """An App for a command; checks that the schema exists when the command needs it."""
    from pgjobs.app import App

    app = App(database_url, schema=schema)
    if migrated:
        try:
            require_migrated(app)
        except BaseException:
            app.close()
            raise
    return app


def require_migrated(app: App) -> None:
    """Raise a clear error when the schema is not migrated, or lacks a migration this
    pgjobs ships (`pgjobs.schema_revision`), before a command relies on it."""
    from pgjobs.schema_revision import require_current_schema

    require_current_schema(app)


def command_group(name: str, description: str) -> typer.Typer:
    """A group of sub-commands (`pgjobs embedded ...`): its help when called bare."""
    return typer.Typer(name=name, help=description, no_args_is_help=True, rich_markup_mode=None)


def app_option(description: str) -> Any:
    """The `--app MODULE:ATTR` option (also `PGJOBS_APP`), described for its command."""
    return typer.Option(
        "--app", metavar="MODULE:ATTR", envvar="PGJOBS_APP", show_envvar=True, help=description
    )
