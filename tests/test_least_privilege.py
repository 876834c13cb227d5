"""Least privilege and hostile names.

An owner role runs `pgjobs migrate`; producers and workers then run under roles holding
only the GRANTs docs/guarantees.md documents (`GRANTS` below is that SQL), and cannot change the
table's structure. Schema, queue and task names with quotes, spaces, semicolons and
non-ASCII letters go through enqueue, NOTIFY, claim and completion untouched.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from pgjobs import App, Workflow, history
from pgjobs.data.producer import COPY_THRESHOLD
from pgjobs.migrate import upgrade
from tests.helpers import WorkerProcess, create_runs_table, run_cli, runs, state_counts, wait_until
from tests.poison_app import ODD_TASK_NAME

# What docs/guarantees.md tells the owner to run after `pgjobs migrate`, for the role that
# workers, producers and the admin commands use. The id is an identity column, so
# inserting needs no grant on its sequence; LISTEN, NOTIFY and advisory locks need none.
GRANTS = """
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT, INSERT, UPDATE, DELETE
    ON {schema}.jobs, {schema}.jobs_live, {schema}.jobs_history,
       {schema}.workers, {schema}.workflows, {schema}.task_limits, {schema}.rate_starts
    TO {role};
GRANT SELECT, INSERT, UPDATE ON {schema}.queues, {schema}.schedules TO {role};
GRANT SELECT ON {schema}.queue_summary, {schema}.failing_tasks TO {role};
GRANT EXECUTE ON FUNCTION {schema}.jobs_history_drop(text) TO {role};
"""
# A producer that only enqueues (and reads its jobs back) needs less: the queues table
# holds the limits that enqueue checks.
PRODUCER_GRANTS = """
GRANT USAGE ON SCHEMA {schema} TO {role};
GRANT SELECT, INSERT ON {schema}.jobs, {schema}.jobs_live, {schema}.workflows TO {role};
GRANT SELECT ON {schema}.queues TO {role};
"""
PASSWORD = "pgjobs-test"  # trust auth ignores it; password auth (a container) needs it


@dataclass
class Roles:
    """Login roles of one test, and URLs that connect as each."""

    owner: str
    worker: str
    producer: str
    schema: str
    urls: dict[str, str]


def apply_grants(conn: psycopg.Connection[Any], template: str, schema: str, role: str) -> None:
    for statement in filter(str.strip, template.split(";")):
        conn.execute(
            sql.SQL(statement).format(schema=sql.Identifier(schema), role=sql.Identifier(role))
        )


@pytest.fixture
def roles(database_url: str) -> Iterator[Roles]:
    """An owner that may create schemas, and a worker and a producer role with no rights.

    Roles belong to the whole cluster, so each test gets its own names and drops them.
    """
    suffix = uuid.uuid4().hex[:8]
    names = {kind: f"pgjobs_{kind}_{suffix}" for kind in ("owner", "worker", "producer")}
    with psycopg.connect(database_url, autocommit=True) as admin:
        database = admin.info.dbname
        for name in names.values():
            admin.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                    sql.Identifier(name), sql.Literal(PASSWORD)
                )
            )
        admin.execute(
            sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(database), sql.Identifier(names["owner"])
            )
        )
        urls = {
            kind: make_conninfo(database_url, user=name, password=PASSWORD)
            for kind, name in names.items()
        }
        yield Roles(names["owner"], names["worker"], names["producer"], f"s_{suffix}", urls)
        for name in names.values():
            # Drops what the role owns (the schema) and revokes what it was granted.
            admin.execute(sql.SQL("DROP OWNED BY {} CASCADE").format(sql.Identifier(name)))
            admin.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


@pytest.fixture
def migrated_by_owner(roles: Roles, capsys: pytest.CaptureFixture[str]) -> Roles:
    """The owner migrated a schema and granted the documented rights; runs table added."""
    result = run_cli(capsys, roles.urls["owner"], roles.schema, "migrate")
    assert result.code == 0, result.err
    with psycopg.connect(roles.urls["owner"], autocommit=True) as owner:
        apply_grants(owner, GRANTS, roles.schema, roles.worker)
        apply_grants(owner, PRODUCER_GRANTS, roles.schema, roles.producer)
        # The test App's tasks record their runs: the test's table, not pgjobs'.
        create_runs_table(owner, roles.schema)
        owner.execute(
            sql.SQL("GRANT INSERT ON {} TO {}").format(
                sql.Identifier(roles.schema, "runs"), sql.Identifier(roles.worker)
            )
        )
    return roles


@pytest.mark.slow
def test_worker_role_runs_jobs_with_only_the_documented_grants(
    migrated_by_owner: Roles, database_url: str
) -> None:
    roles = migrated_by_owner
    url = roles.urls["worker"]
    # given jobs enqueued as the worker role: one that succeeds, one that is retried
    # once, and one left "running" by a worker that vanished, for the rescuer
    app = App(url, schema=roles.schema)
    ok_id, flaky_id, orphan_id = app.enqueue_many(
        None, [("record", {"label": "ok"}), ("flaky", {"failures": 1}), ("record", {})]
    )
    # and a workflow of two steps, the second released by the first one's completion
    workflow = Workflow("as the worker role", app=app)
    first = workflow.add("record", label="first")
    second = workflow.add("record", after=[first], label="second")
    workflow.enqueue(None)
    app.close()
    with psycopg.connect(database_url, autocommit=True) as admin:
        # the queue is capped, so its jobs are claimed within limits (data/limits.py)
        admin.execute(
            sql.SQL("INSERT INTO {} (name, max_running) VALUES ('default', 10)").format(
                sql.Identifier(roles.schema, "queues")
            )
        )
        admin.execute(
            sql.SQL(
                "UPDATE {} SET state = 'running', attempts = 1, worker_id = 'gone:1:x',"
                " heartbeat_at = now() - interval '1 hour', began_at = now() - interval"
                " '1 hour' WHERE id = %s"
            ).format(sql.Identifier(roles.schema, "jobs_live")),
            (orphan_id,),
        )

    # when a real worker process runs as that role
    with WorkerProcess(url, roles.schema, "--rescue-after", "2", "--concurrency", "2") as worker:
        worker.start().wait_ready()

        # then claim, retry, rescue, heartbeat and completion all work
        wait_until(
            lambda: state_counts(url, roles.schema) == {"completed": 5},
            timeout=20,
            message=worker.describe,
        )
        assert "permission denied" not in worker.logs()
        assert worker.stop() == 0
    with psycopg.connect(database_url) as conn:
        ran = {(r["job_id"], r["attempt"]) for r in runs(conn, roles.schema)}
    assert ran == {
        (ok_id, 1),
        (flaky_id, 1),
        (flaky_id, 2),
        (orphan_id, 2),
        (first.job_id, 1),
        (second.job_id, 1),
    }


def test_admin_commands_work_as_the_worker_role(
    migrated_by_owner: Roles, capsys: pytest.CaptureFixture[str]
) -> None:
    roles = migrated_by_owner
    url, schema = roles.urls["worker"], roles.schema
    enqueued = run_cli(capsys, url, schema, "enqueue", "noop", "--payload", "{}", "--delay", "60")
    assert enqueued.code == 0, enqueued.err
    job_id = enqueued.out.strip()
    workflow = Workflow("admin", app=App(url, schema=schema))
    workflow.add("noop", after=[workflow.add("noop")])
    workflow.enqueue(None)
    workflow_id = workflow.id
    assert workflow.app is not None
    workflow.app.close()
    for command in (
        ("stats",),
        ("list",),
        ("show", job_id),
        ("cancel", job_id),
        ("retry", job_id),
        ("prune",),
        ("workflow", str(workflow_id)),
        ("cancel", "--workflow", str(workflow_id)),
    ):
        result = run_cli(capsys, url, schema, *command)
        assert result.code == 0, (command, result.err)


SCHEMA_CHANGES = (
    "DROP VIEW {schema}.jobs",
    "DROP TABLE {schema}.jobs_live",
    "TRUNCATE {schema}.jobs_live",
    "TRUNCATE {schema}.jobs_history",
    "ALTER TABLE {schema}.jobs_live ADD COLUMN extra int",
    "CREATE INDEX ON {schema}.jobs_live (task)",
    "ALTER TABLE {schema}.jobs_history DETACH PARTITION {schema}.jobs_history_partitions",
    "CREATE TABLE {schema}.other (id int)",
    "DROP SCHEMA {schema} CASCADE",
    "DROP FUNCTION {schema}.jobs_notify_available()",
    "DROP TABLE {schema}.alembic_version",
)


def test_worker_role_cannot_change_the_schema(migrated_by_owner: Roles) -> None:
    roles = migrated_by_owner
    with psycopg.connect(roles.urls["worker"], autocommit=True) as conn:
        for statement in SCHEMA_CHANGES:
            query = sql.SQL(statement).format(schema=sql.Identifier(roles.schema))
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(query)
                pytest.fail(f"the worker role could run {statement}")


def test_producer_role_can_enqueue_but_not_touch_jobs(migrated_by_owner: Roles) -> None:
    roles = migrated_by_owner
    url = roles.urls["producer"]
    app = App(url, schema=roles.schema)
    with psycopg.connect(url) as conn:
        job_id = app.enqueue(conn, "noop", {}, unique_key="once")
        assert app.enqueue(conn, "noop", {}, unique_key="once") == job_id
        # a large batch COPYs straight into jobs, its ids drawn by reserve_job_ids
        batch = app.enqueue_many(conn, [("noop", {"n": n}) for n in range(COPY_THRESHOLD)])
        assert len(set(batch)) == COPY_THRESHOLD and min(batch) > job_id
        # a workflow: its row, and its steps' ids drawn by reserve_job_ids
        workflow = Workflow("least privilege", app=app)
        workflow.add("noop", after=[workflow.add("noop")])
        assert len(workflow.enqueue(conn)) == 2
        conn.commit()
    app.close()
    jobs = sql.Identifier(roles.schema, "jobs")
    for statement in (
        sql.SQL("UPDATE {} SET state = 'cancelled'").format(jobs),
        sql.SQL("DELETE FROM {}").format(jobs),
    ):
        with (
            psycopg.connect(url, autocommit=True) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute(statement)


ODD_SCHEMA = "t \"sch'ema; ü"
ODD_QUEUE = 'q"ue ue'


@pytest.fixture
def odd_schema(database_url: str) -> Iterator[str]:
    name = f"{ODD_SCHEMA} {uuid.uuid4().hex[:8]}"
    upgrade(database_url, name)
    with psycopg.connect(database_url, autocommit=True) as conn:
        create_runs_table(conn, name)
    yield name
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


@pytest.mark.slow
def test_odd_schema_queue_and_task_names_run_end_to_end(
    database_url: str, odd_schema: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # given a worker serving only the odd queue, woken only by NOTIFY (the poll is 30 s
    # away), so the notification channel of the odd schema must work too
    with WorkerProcess(
        database_url,
        odd_schema,
        "--queues",
        ODD_QUEUE,
        "--poll-interval",
        "30",
        app="tests.poison_app:app",
    ) as worker:
        worker.start().wait_ready()

        # when a job is enqueued from Python and another from the CLI
        app = App(database_url, schema=odd_schema)
        api_id = app.enqueue(None, ODD_TASK_NAME, {"label": "api"}, queue=ODD_QUEUE)
        app.close()
        cli = run_cli(
            capsys,
            database_url,
            odd_schema,
            "enqueue",
            ODD_TASK_NAME,
            "--payload",
            '{"label": "cli \'; --"}',
            "--queue",
            ODD_QUEUE,
        )
        assert cli.code == 0, cli.err

        # then both run, with names and payloads intact
        wait_until(
            lambda: state_counts(database_url, odd_schema) == {"completed": 2},
            timeout=10,
            message=worker.describe,
        )
        assert worker.stop() == 0
    with psycopg.connect(database_url) as conn:
        rows = conn.execute(
            sql.SQL("SELECT id, queue, task FROM {} ORDER BY id").format(
                sql.Identifier(odd_schema, "jobs")
            )
        ).fetchall()
        labels = [r["label"] for r in runs(conn, odd_schema)]
    assert rows == [
        (api_id, ODD_QUEUE, ODD_TASK_NAME),
        (int(cli.out), ODD_QUEUE, ODD_TASK_NAME),
    ]
    assert sorted(labels) == ["api", "cli '; --"]


def test_the_worker_role_drops_a_past_day_of_history_and_the_producer_cannot(
    migrated_by_owner: Roles,
) -> None:
    # given: a job the worker role finished four days ago, in a partition the owner's
    # function made for it
    roles = migrated_by_owner
    app = App(roles.urls["worker"], schema=roles.schema)
    job_id = app.enqueue(None, "record", {})
    with psycopg.connect(roles.urls["worker"], autocommit=True) as worker:
        worker.execute(
            sql.SQL(
                "UPDATE {} SET state = 'completed', finished_at = now() - interval '4 days'"
                " WHERE id = %s"
            ).format(sql.Identifier(roles.schema, "jobs_live")),
            [job_id],
        )
        [old, *later] = [p for p in app.data.history.partitions(worker) if p.state == "completed"]
        name = sql.Literal(old.name)
        drop = sql.SQL("SELECT {}({})").format(
            sql.Identifier(roles.schema, "jobs_history_drop"), name
        )
        # then: the producer may not drop it, nor may the worker drop today's
        with (
            psycopg.connect(roles.urls["producer"], autocommit=True) as producer,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            producer.execute(drop)
        with pytest.raises(psycopg.errors.InvalidParameterValue):
            worker.execute(
                sql.SQL("SELECT {}({})").format(
                    sql.Identifier(roles.schema, "jobs_history_drop"), sql.Literal(later[0].name)
                )
            )
        # when: retention runs as the worker role, which does not own the history
        dropped = history.drop_expired(worker, app.data.history, {"completed": 86400.0})

        # then: the owner's function detached and dropped the day
        assert dropped == {"completed": 1}
        assert old.name not in {p.name for p in app.data.history.partitions(worker)}
    app.close()
