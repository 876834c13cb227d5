"""Statement text bound to a schema: identifiers quoted once with `psycopg.sql`, cached.

Statements are written against placeholders (`{jobs}`, `{live}`, `{queues}`, `{workers}`,
`{schedules}`, ...) and bind every value as a parameter. Each data module keeps its own
statements beside the functions that run them; `SchemaSQL(schema).render(TEMPLATE)`
turns one into the text for a schema. Batches travel as arrays and are expanded with
`unnest`, so a batch of any size is one statement and one round trip.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from psycopg import sql

# The temporary table of a large enqueue (data/producer.py), in the session's own schema.
STAGING_TABLE = "pgjobs_enqueue_staging"


def fill(template: str, **parts: str) -> str:
    """`template` with other statement text put in for `{name}` placeholders (a shared
    subquery, a variant's clause), before the identifiers are filled in."""
    for name, part in parts.items():
        template = template.replace("{" + name + "}", part)
    return template


def notify_channel(schema: str) -> str:
    """The LISTEN/NOTIFY channel of a schema; hashed so any schema name fits in 63 bytes.

    Must match `pg_notify('pgjobs_' || md5(TG_TABLE_SCHEMA), ...)` in the trigger.
    """
    return "pgjobs_" + hashlib.md5(schema.encode()).hexdigest()


def control_channel(schema: str) -> str:
    """The channel of messages to workers (cancelled jobs), apart from the jobs channel
    so that no queue name can be mistaken for one."""
    return "pgjobs_control_" + hashlib.md5(schema.encode()).hexdigest()


def results_channel(schema: str) -> str:
    """The channel that wakes `App.result` waiters when jobs they may wait for finish."""
    return "pgjobs_results_" + hashlib.md5(schema.encode()).hexdigest()


class SchemaSQL:
    """pgjobs' statements for one schema, rendered once each."""

    def __init__(self, schema: str) -> None:
        self.schema = schema
        self.channel = notify_channel(schema)
        self.control_channel = control_channel(schema)
        self.results_channel = results_channel(schema)
        self.jobs = sql.Identifier(schema, "jobs")
        self.live = sql.Identifier(schema, "jobs_live")
        # Alembic's version table lives in the schema too (migrations/env.py).
        self.version_table = sql.Identifier(schema, "alembic_version")
        self._identifiers = {
            # The view of every job; `live` and `history` are its two tables (migration
            # 0012): waiting, blocked and running jobs, and finished ones.
            "jobs": self.jobs,
            "live": self.live,
            "history": sql.Identifier(schema, "jobs_history"),
            "history_partition": sql.Identifier(schema, "jobs_history_partition"),
            "history_drop": sql.Identifier(schema, "jobs_history_drop"),
            "move_finished_batch": sql.Identifier(schema, "jobs_move_finished_batch"),
            "queues": sql.Identifier(schema, "queues"),
            "workers": sql.Identifier(schema, "workers"),
            "schedules": sql.Identifier(schema, "schedules"),
            "alembic_version": self.version_table,
            "reserve_job_ids": sql.Identifier(schema, "reserve_job_ids"),
            "claim_jobs": sql.Identifier(schema, "claim_jobs"),
            "complete_jobs": sql.Identifier(schema, "complete_jobs"),
            "settle_steps": sql.Identifier(schema, "settle_steps"),
            "workflows": sql.Identifier(schema, "workflows"),
            "task_limits": sql.Identifier(schema, "task_limits"),
            "rate_starts": sql.Identifier(schema, "rate_starts"),
            "staging": sql.Identifier("pg_temp", STAGING_TABLE),
        }
        self._rendered: dict[str, sql.SQL] = {}

    def render(self, template: str) -> sql.SQL:
        """`template` with this schema's identifiers, as plain text rendered once.

        psycopg renders a `Composed` again at every execute (a tenth of the client's CPU
        in a single-job enqueue); a plain `SQL` is only encoded. Identifiers are quoted
        the same in every client encoding, so the text serves every connection.
        """
        rendered = self._rendered.get(template)
        if rendered is None:
            composed = sql.SQL(template).format(**self._identifiers)
            rendered = self._rendered[template] = sql.SQL(composed.as_string())
        return rendered


def int_array(values: Sequence[int]) -> str:
    """An integer array parameter as PostgreSQL's array text, e.g. `{1,2,3}`.

    Bound like any parameter and cast in the statement (`::bigint[]`); psycopg's own
    list adaptation is pure Python per element, and the worker sends thousands a second.
    """
    return "{" + ",".join(map(str, values)) + "}"


def id_ranges(ids: Sequence[int]) -> str:
    """Sorted ids as an int8multirange literal of their runs: `{[1,4),[7,8)}`."""
    runs: list[list[int]] = []
    for job_id in ids:
        if runs and job_id == runs[-1][1]:
            runs[-1][1] = job_id + 1
        else:
            runs.append([job_id, job_id + 1])
    return "{" + ",".join(f"[{low},{high})" for low, high in runs) + "}"
