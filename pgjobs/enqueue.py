"""Turning enqueue calls into rows: validation and JSON encoding.

Everything is checked before a statement runs, so bad input raises a precise error and
writes nothing, even inside the caller's transaction. The rows are inserted by
data/producer.py.
"""

from __future__ import annotations

import json
import reprlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from typing import Any, NamedTuple, TypedDict

# `Unpack` types `**options: Unpack[EnqueueOptions]` in app.py and tasks.py.
if sys.version_info >= (3, 11):
    from typing import Unpack as Unpack
else:  # pragma: no cover - Python 3.10
    from typing_extensions import Unpack as Unpack

from pgjobs.bounds import INT_MAX, MAX_DELAY_SECONDS, check_seconds, check_timestamp
from pgjobs.data.producer import COPY_THRESHOLD
from pgjobs.errors import InvalidJobError, PayloadNotSerializableError
from pgjobs.storable import json_is_storable, text_is_storable
from pgjobs.types import JobRow

MAX_QUEUE_NAME_LENGTH = 200  # queue names travel as NOTIFY payloads (8000 bytes max)
# A btree entry must fit in a third of a page (about 2,700 bytes); well under that, a
# key is still far longer than any sensible one.
MAX_UNIQUE_KEY_BYTES = 1000
# Metadata travels with every claim of its job: ids and trace context, not data.
MAX_META_BYTES = 65_536
# One encoder for every payload: `json.dumps` with options builds a new one per call.
_PAYLOAD_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"), ensure_ascii=False)


class EnqueueOptions(TypedDict, total=False):
    """The per-job options, as keyword arguments of `enqueue` and `Task.options`.

    `queue`; `priority` (higher runs first); `run_at` (aware datetime) or `delay`
    (seconds or timedelta); `max_attempts`; `unique_key` (at most one unfinished job);
    `meta` (a dict of JSON values stored with the job in `jobs.meta`, for middleware
    and hooks: a tenant id, a request id).
    """

    queue: str | None
    priority: int | None
    run_at: datetime | None
    delay: float | timedelta | None
    max_attempts: int | None
    unique_key: str | None
    meta: Mapping[str, Any] | None


@dataclass(frozen=True)
class JobOptions:
    """Per-job options (see `EnqueueOptions`); None means "the task's or the app's default"."""

    queue: str | None = None
    priority: int | None = None
    run_at: datetime | None = None
    delay: float | timedelta | None = None
    max_attempts: int | None = None
    unique_key: str | None = None
    meta: Mapping[str, Any] | None = None

    def merged_over(self, defaults: JobOptions) -> JobOptions:
        """These options, falling back to `defaults` field by field."""
        if self is NO_OPTIONS:
            return defaults  # the common case, and a bulk enqueue pays it per job
        return JobOptions(
            **{
                f.name: mine
                if (mine := getattr(self, f.name)) is not None
                else getattr(defaults, f.name)
                for f in fields(JobOptions)
            }
        )


NO_OPTIONS = JobOptions()


def encode_payload(task: str, payload: Mapping[str, Any]) -> str:
    """JSON for the payload, or an error naming the argument that cannot be stored.

    The whole payload is encoded once; only when that fails is each argument encoded
    on its own, to name the culprit.
    """
    if not isinstance(payload, Mapping):
        raise PayloadNotSerializableError(
            f"payload of task {task!r} must be a mapping of argument names to values, "
            f"not {type(payload).__name__}"
        )
    try:
        text = _PAYLOAD_ENCODER.encode(payload)
    except (TypeError, ValueError, RecursionError):
        text = None
    if text is not None and json_is_storable(text):
        return text
    for name, value in payload.items():
        if not isinstance(name, str):
            raise PayloadNotSerializableError(
                f"argument names of task {task!r} must be strings, got {name!r}"
            )
        if not text_is_storable(name):
            raise PayloadNotSerializableError(
                f"argument name {name!r} of task {task!r} holds a NUL character or a lone "
                "surrogate, which PostgreSQL cannot store"
            )
        try:
            encoded = json.dumps(value, allow_nan=False, ensure_ascii=False)
        except (TypeError, ValueError) as error:
            raise PayloadNotSerializableError(
                f"argument {name!r} of task {task!r} is not JSON-serialisable: {error}"
            ) from error
        except RecursionError:
            raise PayloadNotSerializableError(
                f"argument {name!r} of task {task!r} is nested too deeply to encode as JSON"
            ) from None
        if not json_is_storable(encoded):
            raise PayloadNotSerializableError(
                f"argument {name!r} of task {task!r} holds a NUL character or a lone "
                "surrogate, which PostgreSQL cannot store"
            )
    raise PayloadNotSerializableError(f"payload of task {task!r} cannot be stored as JSON")


def encode_meta(task: str, meta: Mapping[str, Any]) -> str | None:
    """JSON for a job's metadata (None when empty), or `InvalidJobError` saying why not."""
    if not isinstance(meta, Mapping) or not all(isinstance(key, str) for key in meta):
        raise InvalidJobError(
            f"meta of a job of task {task!r} must be a dict with string keys, got "
            f"{reprlib.repr(meta)}"
        )
    if not meta:
        return None
    try:
        text = _PAYLOAD_ENCODER.encode(dict(meta))
    except (TypeError, ValueError, RecursionError) as error:
        raise InvalidJobError(
            f"meta of a job of task {task!r} is not JSON-serialisable: {error}"
        ) from None
    if not json_is_storable(text):
        raise InvalidJobError(
            f"meta of a job of task {task!r} holds a NUL character or a lone surrogate, "
            "which PostgreSQL cannot store"
        )
    if len(text) > MAX_META_BYTES // 4 and len(text.encode()) > MAX_META_BYTES:
        raise InvalidJobError(
            f"meta of a job of task {task!r} is {len(text.encode())} bytes of JSON, over "
            f"the limit of {MAX_META_BYTES} (keep identifiers there, not data)"
        )
    return text


def _check_text(name: str, value: object, *, max_length: int | None = None) -> str:
    """A non-empty string PostgreSQL can store (and index, within `max_length` bytes)."""
    if not isinstance(value, str) or not value.strip():
        raise InvalidJobError(f"{name} must be a non-empty string, got {value!r}")
    if not text_is_storable(value):
        raise InvalidJobError(
            f"{name} {value!r} holds a NUL character or a lone surrogate, "
            "which PostgreSQL cannot store"
        )
    if max_length is not None and len(value.encode()) > max_length:
        raise InvalidJobError(f"{name} is longer than {max_length} bytes")
    return value


def _check_int(name: str, value: object, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidJobError(f"{name} must be an integer, got {value!r}")
    if not minimum <= value <= INT_MAX:
        raise InvalidJobError(f"{name} must be between {minimum} and {INT_MAX}, got {value}")
    return value


def _delay_seconds(delay: float | timedelta | None) -> float:
    if delay is None:
        return 0.0
    return check_seconds("delay", delay, error=InvalidJobError, maximum=MAX_DELAY_SECONDS)


class CheckedOptions(NamedTuple):
    """A job's options after validation, as the row stores them."""

    queue: str
    priority: int
    run_at: datetime | None
    delay_seconds: float
    max_attempts: int
    unique_key: str | None


def check_options(options: JobOptions) -> CheckedOptions:
    """Validate merged options; raises `InvalidJobError` naming the bad one."""
    queue = _check_text("queue", options.queue, max_length=MAX_QUEUE_NAME_LENGTH)
    if options.run_at is not None and options.delay is not None:
        raise InvalidJobError("give either run_at or delay, not both")
    run_at = options.run_at
    if run_at is not None:
        if not isinstance(run_at, datetime):
            raise InvalidJobError(f"run_at must be a datetime, got {run_at!r}")
        if run_at.tzinfo is None or run_at.utcoffset() is None:
            raise InvalidJobError(
                f"run_at must be timezone-aware (naive datetime {run_at.isoformat()} given)"
            )
        check_timestamp("run_at", run_at, error=InvalidJobError)
    unique_key = options.unique_key
    if unique_key is not None:
        _check_text("unique_key", unique_key, max_length=MAX_UNIQUE_KEY_BYTES)
    return CheckedOptions(
        queue=queue,
        priority=_check_int("priority", options.priority, minimum=-INT_MAX),
        run_at=run_at,
        delay_seconds=_delay_seconds(options.delay),
        max_attempts=_check_int("max_attempts", options.max_attempts, minimum=1),
        unique_key=unique_key,
    )


# The options last checked and the result. A bulk enqueue mostly passes one options
# object (a task's or the App's defaults) for every job; checking it once instead of per
# job is a fifth of the Python cost. Options are frozen, so the object is the key; a
# race between threads only costs a check.
_last_checked: tuple[JobOptions, CheckedOptions] | None = None


def build_row(task: str, payload: Mapping[str, Any], options: JobOptions) -> JobRow:
    """Validate one job completely; raises before anything touches the database."""
    global _last_checked
    _check_text("task name", task)
    last = _last_checked
    if last is not None and last[0] is options:
        checked = last[1]
    else:
        checked = check_options(options)
        _last_checked = (options, checked)
    return JobRow(
        checked.queue,
        task,
        encode_payload(task, payload),
        checked.priority,
        checked.run_at,
        checked.delay_seconds,
        checked.max_attempts,
        checked.unique_key,
        None if options.meta is None else encode_meta(task, options.meta),
    )


# The options that make a job more than a plain row: a key to check against the unfinished
# jobs, or a run_at worked out by the server. A task's or the App's defaults set none.
_NOT_PLAIN = ("unique_key", "run_at", "delay")
_OPTION_NAMES = frozenset(f.name for f in fields(JobOptions))


def unpack_item(item: object) -> tuple[Any, Any, JobOptions]:
    """A bulk item's task name, arguments and options, or `InvalidJobError` saying what an
    item must be (a bare task name would otherwise unpack as its letters)."""
    if type(item) is tuple and len(item) == 2:  # the common case, checked cheaply
        return item[0], item[1], NO_OPTIONS
    if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) not in (2, 3):
        raise InvalidJobError(
            "each item of enqueue_many must be a tuple (task name, arguments) or "
            f"(task name, arguments, options), got {reprlib.repr(item)}"
        )
    if len(item) == 2:
        return item[0], item[1], NO_OPTIONS
    options = item[2]
    if not isinstance(options, Mapping):
        raise InvalidJobError(
            "the options of an enqueue_many item must be a dict of enqueue options "
            f"(queue, priority, delay, ...), got {reprlib.repr(options)}"
        )
    unknown = set(options) - _OPTION_NAMES
    if unknown:
        raise InvalidJobError(
            f"unknown enqueue options {sorted(map(str, unknown))}; the options are "
            f"{', '.join(sorted(_OPTION_NAMES))}"
        )
    return item[0], item[1], JobOptions(**options)


def copies_straight(items: Sequence[Sequence[Any]]) -> bool:
    """Whether a bulk enqueue is large and plain enough to COPY straight into the table
    (unless a queue limit needs checking first, which the caller asks)."""
    return len(items) >= COPY_THRESHOLD and all(map(is_plain_item, items))


def is_plain_item(item: Sequence[Any]) -> bool:
    """Whether a bulk item `(task, arguments[, options])` makes a plain row: COPY can
    insert it straight into the table, the column defaults supplying run_at."""
    if type(item) is not tuple and (
        isinstance(item, (str, bytes)) or not isinstance(item, Sequence)
    ):
        return False  # the general path reports what is wrong with it
    if len(item) == 2:
        return True
    if len(item) != 3 or not isinstance(options := item[2], Mapping):
        return False
    return all(options.get(name) is None for name in _NOT_PLAIN)
