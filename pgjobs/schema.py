"""pgjobs' tables, defined once as SQLAlchemy metadata.

The Alembic migrations create exactly this shape; `tests/test_migrations.py` runs
autogenerate against a migrated schema to prove the two never drift apart.

Bloat under churn: every job is inserted once and updated two or three times (claim,
outcome, sometimes a retry). The state changes touch the partial indexes' predicate, so
they cannot be HOT updates whatever we do; heartbeats only touch `heartbeat_at`, which no
index covers, so they stay HOT. The table is created with `fillfactor = 80` so that the
new row version of a claim or heartbeat usually lands on the same page, and with a more
eager autovacuum than PostgreSQL's defaults, because a queue table turns over its live
rows constantly. The big values (`payload`, `errors`) are TOASTed and never rewritten by
a claim or a heartbeat.

Since migration 0012 the rows that churn live apart: `jobs_live` holds waiting, blocked
and running jobs (the table above), `jobs_history` finished ones, in partitions of one
final state and UTC day that retention drops whole, and `jobs` is a view of both. So the
live table and its indexes stay as small as the work in flight, whatever history is kept.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, INT8MULTIRANGE, JSONB

from pgjobs.types import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_QUEUE,
    FINISHED_STATES,
    STATES,
    UNFINISHED_STATES,
    JobState,
)

JOBS_STORAGE_PARAMETERS = {
    "fillfactor": "80",
    "autovacuum_vacuum_scale_factor": "0.02",
    "autovacuum_vacuum_insert_scale_factor": "0.05",
    "autovacuum_analyze_scale_factor": "0.02",
}


def _state_list(states: tuple[JobState, ...]) -> str:
    return ", ".join(f"'{s.value}'" for s in states)


def _job_columns(*, finished_at_nullable: bool = True) -> list[sa.Column[object]]:
    """The columns of a job after its id, in table order: `jobs_live` and `jobs_history`
    have the same (pgjobs.data.history.JOB_COLUMNS lists them for the statements that
    move rows from one to the other)."""
    tz = sa.DateTime(timezone=True)
    return [
        sa.Column("queue", sa.Text, nullable=False, server_default=DEFAULT_QUEUE),
        sa.Column("task", sa.Text, nullable=False),
        sa.Column("payload", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("state", sa.Text, nullable=False, server_default="available"),
        sa.Column("priority", sa.Integer, nullable=False, server_default="0"),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column(
            "max_attempts", sa.Integer, nullable=False, server_default=str(DEFAULT_MAX_ATTEMPTS)
        ),
        sa.Column("run_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("created_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("started_at", tz, nullable=True),
        sa.Column("finished_at", tz, nullable=finished_at_nullable),
        sa.Column("heartbeat_at", tz, nullable=True),
        sa.Column("errors", JSONB, nullable=False, server_default=sa.text("'[]'::jsonb")),
        sa.Column("worker_id", sa.Text, nullable=True),
        sa.Column("unique_key", sa.Text, nullable=True),
        # The tick a periodic job was enqueued for (migration 0003); NULL for other jobs.
        sa.Column("scheduled_at", tz, nullable=True),
        # When the running attempt was readied for a worker's thread; NULL while the job
        # waits, claimed, in a worker's buffer (migration 0007).
        sa.Column("began_at", tz, nullable=True),
        # A task's stored return value (migration 0009).
        sa.Column("result", JSONB, nullable=True),
        # Workflows (migration 0009): the step graph, kept on the steps' own rows.
        sa.Column("workflow_id", sa.BigInteger, nullable=True),
        sa.Column("step", sa.Text, nullable=True),
        sa.Column("run_if", sa.Text, nullable=True),
        sa.Column("depends_on", ARRAY(sa.BigInteger), nullable=True),
        sa.Column("dependents", ARRAY(sa.BigInteger), nullable=True),
        sa.Column("waiting_for", sa.Integer, nullable=True),
        # The limit buckets a running job holds (migration 0010).
        sa.Column("limit_buckets", ARRAY(sa.Text), nullable=True),
        # Metadata that travels with the job: trace context, tenant ids (migration 0011).
        sa.Column("meta", JSONB, nullable=True),
    ]


def _job_checks() -> list[sa.CheckConstraint]:
    return [
        sa.CheckConstraint("run_if IN ('completed', 'finished')", name="jobs_run_if_check"),
        sa.CheckConstraint("max_attempts >= 1", name="jobs_max_attempts_check"),
    ]


def build_metadata(schema: str) -> sa.MetaData:
    """Metadata holding pgjobs' tables, for Alembic comparison and for readers. The
    `jobs` view (live rows and history together, migration 0012) is not a table here."""
    metadata = sa.MetaData(schema=schema)
    tz = sa.DateTime(timezone=True)
    jobs = sa.Table(
        "jobs_live",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        *_job_columns(),
        sa.CheckConstraint(f"state IN ({_state_list(STATES)})", name="jobs_state_check"),
        *_job_checks(),
    )
    # The claim query: waiting jobs of a queue in the order they are served.
    sa.Index(
        "jobs_fetch_idx",
        jobs.c.queue,
        jobs.c.priority.desc(),
        jobs.c.run_at,
        jobs.c.id,
        postgresql_where=sa.text("state = 'available'"),
    )
    # The claim query of a worker that serves every queue.
    sa.Index(
        "jobs_fetch_any_queue_idx",
        jobs.c.priority.desc(),
        jobs.c.run_at,
        jobs.c.id,
        postgresql_where=sa.text("state = 'available'"),
    )
    # At most one unfinished job per unique_key.
    sa.Index(
        "jobs_unique_key_idx",
        jobs.c.unique_key,
        unique=True,
        postgresql_where=sa.text(
            f"unique_key IS NOT NULL AND state IN ({_state_list(UNFINISHED_STATES)})"
        ),
    )
    # Outcome writes and heartbeats find running jobs by id; the rescuer scans them all.
    # Keyed by id, not worker: see migration 0002 for the plan a shared key led to.
    sa.Index("jobs_running_idx", jobs.c.id, postgresql_where=sa.text("state = 'running'"))
    # Pruning and listings of finished jobs.
    sa.Index(
        "jobs_finished_idx",
        jobs.c.finished_at,
        postgresql_where=sa.text(f"state IN ({_state_list(FINISHED_STATES)})"),
    )
    # Jobs that failed an attempt, by when they finished (NULL: not yet): the
    # `failing_tasks` view reads the last hour's through it (see migration 0005).
    sa.Index(
        "jobs_errors_idx",
        jobs.c.finished_at,
        postgresql_where=sa.text("errors <> '[]'::jsonb"),
    )
    # Periodic jobs: one job per task and tick, whichever worker enqueued it.
    sa.Index(
        "jobs_scheduled_idx",
        jobs.c.task,
        jobs.c.scheduled_at,
        unique=True,
        postgresql_where=sa.text("scheduled_at IS NOT NULL"),
    )
    # A workflow's steps by name, each name once per workflow.
    sa.Index(
        "jobs_workflow_step_idx",
        jobs.c.workflow_id,
        jobs.c.step,
        unique=True,
        postgresql_where=sa.text("workflow_id IS NOT NULL"),
    )
    # A limit bucket's use: the running jobs holding it (migration 0010).
    sa.Index(
        "jobs_limit_buckets_idx",
        jobs.c.limit_buckets,
        postgresql_using="gin",
        postgresql_where=sa.text("state = 'running' AND limit_buckets IS NOT NULL"),
    )
    # Finished jobs (migration 0012), partitioned by final state and UTC day; the
    # partitions are made as they are needed and are not part of the metadata.
    history = sa.Table(
        "jobs_history",
        metadata,
        sa.Column("id", sa.BigInteger, nullable=False),
        *_job_columns(finished_at_nullable=False),
        sa.CheckConstraint(
            f"state IN ({_state_list(FINISHED_STATES)})", name="jobs_history_state_check"
        ),
        *_job_checks(),
        postgresql_partition_by="RANGE (state, finished_at)",
    )
    sa.Index("jobs_history_id_idx", history.c.id)
    sa.Index("jobs_history_finished_idx", history.c.finished_at)
    sa.Index(
        "jobs_history_workflow_step_idx",
        history.c.workflow_id,
        history.c.step,
        postgresql_where=sa.text("workflow_id IS NOT NULL"),
    )
    # Concurrency and rate limits of tasks, as the workers declare them (migration 0010).
    sa.Table(
        "task_limits",
        metadata,
        sa.Column("task", sa.Text, primary_key=True),
        sa.Column("concurrency", sa.Integer, nullable=True),
        sa.Column("concurrency_key", sa.Text, nullable=True),
        sa.Column("rate_count", sa.Integer, nullable=True),
        sa.Column("rate_period", sa.Float, nullable=True),
        sa.Column("rate_key", sa.Text, nullable=True),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "concurrency IS NULL OR concurrency >= 1", name="task_limits_concurrency_check"
        ),
        sa.CheckConstraint(
            "(rate_count IS NULL) = (rate_period IS NULL)"
            " AND (rate_count IS NULL OR (rate_count >= 1 AND rate_period > 0))",
            name="task_limits_rate_check",
        ),
    )
    # Starts of rate-limited jobs, by bucket, for the sliding window (migration 0010).
    rate_starts = sa.Table(
        "rate_starts",
        metadata,
        sa.Column("bucket", sa.Text, nullable=False),
        sa.Column("at", tz, nullable=False),
        sa.Column("until", tz, nullable=False),
    )
    sa.Index("rate_starts_bucket_at_idx", rate_starts.c.bucket, rate_starts.c.at)
    sa.Index("rate_starts_until_idx", rate_starts.c.until)
    # Workflows: a name for each graph of steps (migration 0009).
    sa.Table(
        "workflows",
        metadata,
        sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("created_at", tz, nullable=False, server_default=sa.func.now()),
    )
    # Periodic jobs: each schedule's state (see migration 0003).
    sa.Table(
        "schedules",
        metadata,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("expression", sa.Text, nullable=False),
        sa.Column("timezone", sa.Text, nullable=False),
        sa.Column("done_until", tz, nullable=False),
        sa.Column("last_tick", tz, nullable=True),
        sa.Column("last_job_id", sa.BigInteger, nullable=True),
        sa.Column("created_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.func.now()),
    )
    # Queue control: a queue without a row is running and unlimited.
    sa.Table(
        "queues",
        metadata,
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("paused", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("max_waiting", sa.Integer, nullable=True),
        sa.Column("max_running", sa.Integer, nullable=True),
        sa.Column("updated_at", tz, nullable=False, server_default=sa.func.now()),
        sa.CheckConstraint(
            "max_waiting IS NULL OR max_waiting >= 0", name="queues_max_waiting_check"
        ),
        sa.CheckConstraint(
            "max_running IS NULL OR max_running >= 1", name="queues_max_running_check"
        ),
    )
    # The worker registry (see migration 0005): one row per running worker.
    sa.Table(
        "workers",
        metadata,
        sa.Column("id", sa.Text, primary_key=True),
        sa.Column("host", sa.Text, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("queues", ARRAY(sa.Text), nullable=True),
        sa.Column("concurrency", sa.Integer, nullable=False),
        sa.Column("version", sa.Text, nullable=False),
        sa.Column("rescue_after", sa.Float, nullable=False),
        sa.Column("started_at", tz, nullable=False, server_default=sa.func.now()),
        sa.Column("last_heartbeat_at", tz, nullable=False, server_default=sa.func.now()),
        # The jobs the worker readied for its threads and not yet settled (0007).
        sa.Column("ready_jobs", INT8MULTIRANGE, nullable=True),
        # The duties besides upkeep this worker may lead: periodic, retention (0008).
        sa.Column(
            "duties",
            ARRAY(sa.Text),
            nullable=False,
            server_default=sa.text("'{periodic,retention}'"),
        ),
    )
    return metadata
