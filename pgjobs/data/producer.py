"""The producer's statements: inserting jobs, unique keys, and the queue-limit reads.

Each operation is a plan (data/steps.py), run by the synchronous or the asyncio driver
on the caller's connection, in its transaction.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from pgjobs.data.sql import SchemaSQL, fill
from pgjobs.data.steps import Atomic, CopyIn, Plan, Statement
from pgjobs.errors import PgJobsError
from pgjobs.types import JobRow

# From this many rows on, a batch is COPYed instead of sent as arrays (measured: the two
# break even between 100 and 250 rows; at 1,000 COPY takes half the time). Below it,
# creating the temporary table costs more than it saves.
COPY_THRESHOLD = 200
_UNIQUE_KEY_RACE_RETRIES = 3


# Each INSERT below comes in two forms: with this clause when a row has a unique_key,
# without it otherwise. The clause makes every row a speculative insertion, which costs
# about a fifth of a bulk insert, for nothing when no row has a key.
SKIP_HELD_UNIQUE_KEYS = """
ON CONFLICT (unique_key) WHERE unique_key IS NOT NULL AND state IN ('available', 'running')
DO NOTHING
"""

ENQUEUE = """
INSERT INTO {live} (queue, task, payload, priority, run_at, max_attempts, unique_key, meta)
SELECT i.queue, i.task, i.payload::jsonb, i.priority,
       coalesce(i.run_at, now() + make_interval(secs => i.delay)),
       i.max_attempts, i.unique_key, i.meta::jsonb
FROM unnest(
    %(queues)s::text[], %(tasks)s::text[], %(payloads)s::text[], %(priorities)s::int[],
    %(run_ats)s::timestamptz[], %(delays)s::float8[], %(max_attempts)s::int[],
    %(unique_keys)s::text[], %(metas)s::text[]
) WITH ORDINALITY AS i(queue, task, payload, priority, run_at, delay, max_attempts,
                       unique_key, meta, ord)
ORDER BY i.ord
{on_conflict}
RETURNING id, unique_key
"""

# ENQUEUE for one job, the common case: plain values instead of eight one-element arrays,
# which psycopg would adapt element by element and the server would unnest and sort. The
# placeholders are positional, in the order of JobRow's fields, so a row is its own
# parameters (psycopg maps named ones to positions at every execute: 8 µs of a 130 µs
# single enqueue).
ENQUEUE_ONE = """
INSERT INTO {live} (queue, task, payload, priority, run_at, max_attempts, unique_key, meta)
VALUES (%s, %s, %s::jsonb, %s,
        coalesce(%s::timestamptz, now() + make_interval(secs => %s)),
        %s, %s, %s::jsonb)
{on_conflict}
RETURNING id, unique_key
"""

# Large batches of plain jobs (no unique key, run_at or delay: the column defaults
# give run_at and every other column) go straight into the table by one COPY, streamed
# while the producer still validates later rows. COPY returns nothing, so their ids are
# drawn first, in ascending order, by a function of the schema (migration 0006: it runs
# with its owner's rights, so a producer needs no grant on the sequence).
RESERVE_JOB_IDS = "SELECT {reserve_job_ids}(%(count)s)"
COPY_JOBS = "COPY {live} (id, queue, task, payload, priority, max_attempts, meta) FROM STDIN"

# Large batches: COPY into a temporary table, then one INSERT from it. COPY sends the rows
# in PostgreSQL's binary format, several times cheaper on both sides than adapting and
# parsing eight arrays of that size. The table lives for the statement's transaction
# only (dropped after use, and ON COMMIT DROP as a net), so it also works through a
# transaction-mode pooler. Temporary tables need no grant beyond PUBLIC's default TEMP.
CREATE_STAGING = """
CREATE TEMPORARY TABLE {staging} (
    queue text, task text, payload text, priority int, run_at timestamptz,
    delay float8, max_attempts int, unique_key text, meta text, ord bigint
) ON COMMIT DROP
"""
# The binary COPY's column types, in the order of CREATE_STAGING.
STAGING_TYPES = (
    "text", "text", "text", "int4", "timestamptz", "float8", "int4", "text", "text", "int8",
)  # fmt: skip
COPY_TO_STAGING = "COPY {staging} FROM STDIN (FORMAT BINARY)"
ENQUEUE_STAGED = """
INSERT INTO {live} (queue, task, payload, priority, run_at, max_attempts, unique_key, meta)
SELECT s.queue, s.task, s.payload::jsonb, s.priority,
       coalesce(s.run_at, now() + make_interval(secs => s.delay)),
       s.max_attempts, s.unique_key, s.meta::jsonb
FROM {staging} AS s
ORDER BY s.ord
{on_conflict}
RETURNING id, unique_key
"""
DROP_STAGING = "DROP TABLE {staging}"

UNIQUE_KEY_HOLDERS = """
SELECT unique_key, id FROM {live}
WHERE unique_key = ANY(%(unique_keys)s::text[]) AND state IN ('available', 'running')
"""

# The producers' cache of limits: a handful of rows, read at most once a second.
QUEUE_LIMITS = "SELECT name, max_waiting FROM {queues} WHERE max_waiting IS NOT NULL"

# Reads at most `up_to` entries of the partial fetch index (jobs_fetch_idx), so the
# count costs the same for a queue of a hundred jobs and one of ten million.
COUNT_WAITING = """
SELECT count(*) FROM (
    SELECT FROM {live} WHERE queue = %(queue)s AND state = 'available' LIMIT %(up_to)s
) AS waiting
"""


def _forms(template: str) -> dict[bool, str]:
    """`template` with SKIP_HELD_UNIQUE_KEYS (True) and without it (False)."""
    return {
        True: fill(template, on_conflict=SKIP_HELD_UNIQUE_KEYS),
        False: fill(template, on_conflict=""),
    }


ENQUEUE_FORMS = _forms(ENQUEUE)
ENQUEUE_ONE_FORMS = _forms(ENQUEUE_ONE)
ENQUEUE_STAGED_FORMS = _forms(ENQUEUE_STAGED)


class Inserted(NamedTuple):
    """The ids of an enqueue's rows, in order, and which rows were inserted (False: an
    unfinished job already held the row's unique_key, and the id is that job's)."""

    ids: list[int]
    new: list[bool]


def insert_rows(sql: SchemaSQL, rows: Sequence[JobRow]) -> Plan[list[int]]:
    """Insert `rows`; one id per row, in order (see `insert_new_rows`)."""
    return (yield from insert_new_rows(sql, rows)).ids


def insert_new_rows(sql: SchemaSQL, rows: Sequence[JobRow]) -> Plan[Inserted]:
    """Insert `rows`; one id per row, in order, and whether each was inserted.

    A row whose unique_key an unfinished job holds is not inserted and gets the
    holder's id. A holder can finish between our conflicting insert and the lookup of
    its id; those rows are simply inserted again, now that the key is free.
    """
    if len(rows) == 1 and rows[0].unique_key is None:
        # The common single enqueue: nothing to reconcile.
        [(job_id, _)] = yield from _insert(sql, rows)
        return Inserted([job_id], [True])
    ids: list[int | None] = [None] * len(rows)
    new_ids: set[int] = set()
    pending = list(range(len(rows)))
    for _ in range(_UNIQUE_KEY_RACE_RETRIES):
        batch = [rows[i] for i in pending]
        inserted = yield from _insert(sql, batch)
        new_ids.update(job_id for job_id, _ in inserted)
        # Ids come from the identity sequence in insertion order (the INSERT sorts by
        # input position), so sorting them recovers which input row each belongs to.
        inserted.sort(key=lambda row: row[0])
        id_by_key = {key: job_id for job_id, key in inserted if key is not None}
        plain_ids = iter(job_id for job_id, key in inserted if key is None)
        missing = {r.unique_key for r in batch if r.unique_key and r.unique_key not in id_by_key}
        if missing:
            id_by_key.update((yield from unique_key_holders(sql, sorted(missing))))
        for index, row in zip(pending, batch, strict=True):
            ids[index] = (
                next(plain_ids) if row.unique_key is None else id_by_key.get(row.unique_key)
            )
        pending = [i for i in pending if ids[i] is None]
        if not pending:
            found = [job_id for job_id in ids if job_id is not None]
            return Inserted(found, _first_of_new(found, new_ids))
    raise PgJobsError("unique_key holders kept finishing during enqueue; try again")


def _first_of_new(ids: Sequence[int], new_ids: set[int]) -> list[bool]:
    """Whether each id is a new job's first row (two rows of one batch with the same
    unique_key both get the id of the one inserted; the first is the new one)."""
    seen: set[int] = set()
    new = []
    for job_id in ids:
        new.append(job_id in new_ids and job_id not in seen)
        seen.add(job_id)
    return new


def _insert(sql: SchemaSQL, rows: Sequence[JobRow]) -> Plan[list[tuple[int, str | None]]]:
    """Insert `rows` in one statement; (id, unique_key) of the rows actually inserted
    (ON CONFLICT DO NOTHING skips those whose key is held)."""
    unique = any(row.unique_key is not None for row in rows)
    if len(rows) >= COPY_THRESHOLD:
        inserted = yield Atomic(_insert_by_copy(sql, rows, unique))
    elif len(rows) == 1:
        # ENQUEUE_ONE's placeholders follow JobRow's fields: a row is its parameters.
        query = sql.render(ENQUEUE_ONE_FORMS[unique])
        inserted = yield Statement(query, rows[0], reuse_cursor=True)
    else:
        params = {
            "queues": [r.queue for r in rows],
            "tasks": [r.task for r in rows],
            "payloads": [r.payload_json for r in rows],
            "priorities": [r.priority for r in rows],
            "run_ats": [r.run_at for r in rows],
            "delays": [r.delay_seconds for r in rows],
            "max_attempts": [r.max_attempts for r in rows],
            "unique_keys": [r.unique_key for r in rows],
            "metas": [r.meta_json for r in rows],
        }
        inserted = yield Statement(sql.render(ENQUEUE_FORMS[unique]), params, reuse_cursor=True)
    return [(row[0], row[1]) for row in inserted]


def _insert_by_copy(sql: SchemaSQL, rows: Sequence[JobRow], unique: bool) -> Plan[Any]:
    """A large batch: COPY into a temporary table, INSERT from it, in one transaction."""
    yield Statement(sql.render(CREATE_STAGING))
    staged = ((*row, position) for position, row in enumerate(rows))
    yield CopyIn(sql.render(COPY_TO_STAGING), staged, STAGING_TYPES)
    inserted = yield Statement(sql.render(ENQUEUE_STAGED_FORMS[unique]))
    yield Statement(sql.render(DROP_STAGING))
    return inserted


def copy_plain_rows(sql: SchemaSQL, count: int, rows: Iterable[JobRow]) -> Plan[list[int]]:
    """Insert `count` plain rows (no unique_key, run_at or delay) by one COPY straight
    into the jobs table, each row sent as `rows` yields it; their ids in order.

    `rows` may raise (a row that fails validation): the COPY is then abandoned and
    nothing is written, and the caller's transaction stays usable, since the COPY runs
    in a savepoint (its own transaction on an autocommit connection).
    """
    [(ids,)] = yield Statement(sql.render(RESERVE_JOB_IDS), {"count": count})
    yield Atomic(_copy(sql, _plain_job_values(ids, rows)))
    return list(ids)


def _copy(sql: SchemaSQL, values: Iterator[tuple[Any, ...]]) -> Plan[None]:
    yield CopyIn(sql.render(COPY_JOBS), values)


def _plain_job_values(ids: Sequence[int], rows: Iterable[JobRow]) -> Iterator[tuple[Any, ...]]:
    """COPY_JOBS' rows: plain jobs with the ids reserved for them, built as `rows` yields."""
    for job_id, row in zip(ids, rows, strict=True):
        if not is_plain_row(row):
            raise PgJobsError(f"not a plain job for COPY: {row!r}")  # a bug
        yield (
            job_id, row.queue, row.task, row.payload_json, row.priority, row.max_attempts,
            row.meta_json,
        )  # fmt: skip


def is_plain_row(row: JobRow) -> bool:
    """Whether COPY can insert `row` straight into the table: no unique_key to check, and
    a run_at the column default gives (now)."""
    return row.unique_key is None and row.run_at is None and not row.delay_seconds


def unique_key_holders(sql: SchemaSQL, keys: Sequence[str]) -> Plan[dict[str, int]]:
    """{unique_key: id} of the unfinished jobs holding any of `keys`."""
    rows = yield Statement(sql.render(UNIQUE_KEY_HOLDERS), {"unique_keys": list(keys)})
    return {key: job_id for key, job_id in rows}


def queue_limits(sql: SchemaSQL) -> Plan[dict[str, int]]:
    """{queue: max_waiting} of every queue that has a limit."""
    rows = yield Statement(sql.render(QUEUE_LIMITS))
    return dict(rows)


def count_waiting(sql: SchemaSQL, queue: str, *, up_to: int) -> Plan[int]:
    """Waiting (available) jobs of `queue`, counted up to `up_to` at most."""
    params = {"queue": queue, "up_to": up_to}
    [(count,)] = yield Statement(sql.render(COUNT_WAITING), params, reuse_cursor=True)
    return int(count)
