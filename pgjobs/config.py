"""Where pgjobs finds its database and schema: explicit values, then the environment.

The embedded cluster is the last resort so that a fresh checkout works with no setup,
and it is started only when a connection is actually needed.
"""

from __future__ import annotations

import os

from pgjobs.errors import ConfigurationError

DEFAULT_SCHEMA = "pgjobs"
# PostgreSQL truncates identifiers at NAMEDATALEN - 1 bytes; refuse rather than truncate.
_MAX_IDENTIFIER_BYTES = 63


def database_url_from_env() -> str | None:
    """The URL from `PGJOBS_DATABASE_URL`, then `DATABASE_URL`, or None for the embedded one."""
    return os.environ.get("PGJOBS_DATABASE_URL") or os.environ.get("DATABASE_URL") or None


def check_explicit_url(url: str | None) -> str | None:
    """Refuse an empty URL given on purpose (`--database-url ''`, `App("")`), which would
    otherwise mean the environment's URL or the embedded cluster without a word."""
    if url is not None and (not isinstance(url, str) or not url.strip()):
        raise ConfigurationError(
            f"the database URL is empty ({url!r}); give a postgresql:// URL, or none at all "
            "for PGJOBS_DATABASE_URL, DATABASE_URL or the embedded cluster"
        )
    return url


def resolve_database_url(explicit: str | None) -> str:
    """The URL to connect to, starting the embedded cluster when nothing is configured."""
    url = check_explicit_url(explicit) or database_url_from_env()
    if url:
        return normalize_url(url)
    from pgjobs.embedded import default_database_url

    return default_database_url()


def normalize_url(url: str) -> str:
    """Accept SQLAlchemy-style URLs (`postgresql+psycopg://`) as well as libpq ones."""
    scheme, sep, rest = validate_database_url(url).partition("://")
    if sep and scheme.startswith(("postgresql+", "postgres+")):
        return f"postgresql://{rest}"
    return url


def validate_database_url(url: str) -> str:
    """Refuse what cannot name a PostgreSQL database: another database's URL, or text that
    is neither a URL nor a libpq `key=value` connection string.

    The message never repeats the URL, which may hold a password.
    """
    scheme, sep, _ = url.partition("://")
    if sep and scheme.partition("+")[0] not in ("postgresql", "postgres"):
        raise ConfigurationError(f"the database URL must start with postgresql://, not {scheme}://")
    if not sep and "=" not in url:
        raise ConfigurationError(
            "the database URL is neither a PostgreSQL URL "
            "(postgresql://user:password@host/dbname) nor a key=value connection string"
        )
    return url


def resolve_schema(explicit: str | None) -> str:
    """The schema name from the argument, `PGJOBS_SCHEMA`, or the default, validated."""
    if explicit is not None:
        return validate_schema(explicit)
    return validate_schema(os.environ.get("PGJOBS_SCHEMA") or DEFAULT_SCHEMA)


def validate_schema(schema: str) -> str:
    """Reject names PostgreSQL would silently truncate or that cannot name a schema."""
    if not isinstance(schema, str):
        raise ConfigurationError(f"schema name must be a string, got {schema!r}")
    if not schema.strip():
        raise ConfigurationError("schema name must not be empty")
    if len(schema.encode()) > _MAX_IDENTIFIER_BYTES:
        raise ConfigurationError(
            f"schema name {schema!r} is longer than {_MAX_IDENTIFIER_BYTES} bytes"
        )
    if "\x00" in schema:
        raise ConfigurationError("schema name must not contain NUL characters")
    return schema
