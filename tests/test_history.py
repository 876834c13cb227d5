"""History apart from the hot table (migration 0012): finished jobs move from jobs_live to
the partitions of jobs_history in the transaction that finishes them, the `jobs` view
answers for both, and a table's old history moves over in batches."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App, FailJob
from pgjobs.admin import cancel_jobs, retry_jobs
from pgjobs.migrate import upgrade
from pgjobs.testing import Jobs
from pgjobs.worker.outcomes import completed
from tests.helpers import job, run_cli, wait_until

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def jobs(app: App) -> Iterator[Jobs]:
    @app.task(name="ok")
    def ok() -> None:
        pass

    @app.task(name="broken", max_attempts=1)
    def broken() -> None:
        raise FailJob("no")

    with Jobs(app) as helper:
        yield helper


def table_of(observer: psycopg.Connection[Any], schema: str, job_id: int) -> list[str]:
    """Which of the two tables hold the job (a partition counts as the history)."""
    found = []
    for name in ("jobs_live", "jobs_history"):
        query = sql.SQL("SELECT count(*) FROM {} WHERE id = %s").format(
            sql.Identifier(schema, name)
        )
        row = observer.execute(query, [job_id]).fetchone()
        found += [name] * (row[0] if row else 0)
    return found


def test_a_completed_job_moves_to_the_history_and_the_view_still_shows_it(
    app: App, jobs: Jobs, observer: psycopg.Connection[Any], schema: str
) -> None:
    job_id = app.enqueue(None, "ok", {})
    assert table_of(observer, schema, job_id) == ["jobs_live"]

    jobs.run()

    assert table_of(observer, schema, job_id) == ["jobs_history"]
    row = job(observer, schema, job_id)
    assert (row["state"], row["attempts"]) == ("completed", 1)
    assert row["finished_at"] is not None and row["heartbeat_at"] is None
    day = row["finished_at"].strftime("%Y%m%d")
    partition = sql.Identifier(schema, f"jobs_history_completed_{day}")
    count = observer.execute(sql.SQL("SELECT count(*) FROM {}").format(partition)).fetchone()
    assert count == (1,)


def test_failures_and_cancels_move_and_a_retry_brings_the_job_back(
    app: App, jobs: Jobs, observer: psycopg.Connection[Any], schema: str
) -> None:
    failing = app.enqueue(None, "broken", {})
    waiting = app.enqueue(None, "ok", {}, delay=3600)
    jobs.run()
    cancel_jobs(app, [waiting])
    assert table_of(observer, schema, failing) == ["jobs_history"]
    assert table_of(observer, schema, waiting) == ["jobs_history"]
    assert job(observer, schema, failing)["state"] == "failed"

    assert retry_jobs(app, [failing]) == [failing]

    assert table_of(observer, schema, failing) == ["jobs_live"]
    again = job(observer, schema, failing)
    assert (again["state"], again["finished_at"], again["max_attempts"]) == ("available", None, 2)
    jobs.run()
    assert job(observer, schema, failing)["attempts"] == 2
    assert table_of(observer, schema, failing) == ["jobs_history"]


def test_hand_written_sql_may_write_the_view(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    jobs_view = sql.Identifier(schema, "jobs")
    insert = sql.SQL("INSERT INTO {} (task) VALUES ('by_hand') RETURNING id, state, queue")
    [(job_id, state, queue)] = observer.execute(insert.format(jobs_view)).fetchall()
    assert (state, queue) == ("available", "default")

    finish = sql.SQL("UPDATE {} SET state = 'cancelled', finished_at = now() WHERE id = %s")
    observer.execute(finish.format(jobs_view), [job_id])
    assert table_of(observer, schema, job_id) == ["jobs_history"]
    observer.execute(
        sql.SQL("UPDATE {} SET priority = 7 WHERE id = %s").format(jobs_view), [job_id]
    )
    assert job(observer, schema, job_id)["priority"] == 7
    reopen = sql.SQL("UPDATE {} SET state = 'available', finished_at = NULL WHERE id = %s")
    observer.execute(reopen.format(jobs_view), [job_id])
    assert table_of(observer, schema, job_id) == ["jobs_live"]

    observer.execute(sql.SQL("DELETE FROM {} WHERE id = %s").format(jobs_view), [job_id])
    assert table_of(observer, schema, job_id) == []


@pytest.mark.parametrize("meanwhile", ["cancelled", "rescued"])
@pytest.mark.parametrize("statement", ["heartbeat", "completion", "completion with a result"])
def test_a_statement_waiting_for_a_row_taken_away_meanwhile_passes_over_it(
    app: App,
    database_url: str,
    observer: psycopg.Connection[Any],
    schema: str,
    statement: str,
    meanwhile: str,
) -> None:
    # given: a running job, cancelled (or rescued) in a transaction not committed yet
    job_id = app.enqueue(None, "ok", {})
    with psycopg.connect(database_url, autocommit=True) as worker:
        [claimed], _ = app.data.claims.claim(worker, limit=1, queue=None, worker_id="w")
        admin = psycopg.connect(database_url)
        if meanwhile == "cancelled":
            app.data.admin.lock_jobs(admin, [job_id])
            app.data.admin.cancel_jobs(admin, [job_id])
        else:
            assert app.data.maintenance.rescue(admin, rescue_after=0) == [
                (job_id, "available", False)
            ]
        beats: list[set[int] | BaseException] = []

        def heartbeat() -> None:
            claims = app.data.claims
            try:
                if statement == "heartbeat":
                    beats.append(claims.heartbeat(worker, [claimed.id], worker_id="w"))
                else:
                    result = '{"ok": 1}' if statement.endswith("result") else None
                    outcome = completed(claimed, result_json=result)
                    beats.append(claims.record_outcomes(worker, [outcome], worker_id="w"))
            except BaseException as error:
                beats.append(error)

        # when: the worker's heartbeat (or outcome) waits for the row, and the cancel commits
        beat = threading.Thread(target=heartbeat)
        beat.start()
        wait_until(lambda: waiting_for_a_lock(observer))
        admin.commit()
        admin.close()
        beat.join(10)

    # then: it found the row no longer this attempt's (no serialization failure) and
    # says so; the job stays as the other transaction left it, its outcome dropped
    assert beats == [set()]
    if meanwhile == "cancelled":
        assert table_of(observer, schema, job_id) == ["jobs_history"]
        assert job(observer, schema, job_id)["state"] == "cancelled"
    else:
        assert table_of(observer, schema, job_id) == ["jobs_live"]
        assert job(observer, schema, job_id)["state"] == "available"


def waiting_for_a_lock(observer: psycopg.Connection[Any]) -> bool:
    row = observer.execute(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    ).fetchone()
    return bool(row and row[0])


def test_migrating_moves_an_existing_tables_history_in_batches(
    capsys: Capsys, database_url: str
) -> None:
    # given: a schema at revision 0011 with finished and waiting jobs in one table
    name = "history_migration"
    upgrade(database_url, name, "0011")
    old = sql.Identifier(name, "jobs")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL(
                "INSERT INTO {} (task, state, attempts, finished_at)"
                " SELECT 't', (ARRAY['completed', 'failed', 'cancelled'])[1 + g % 3], 1,"
                "        now() - (g % 4) * interval '1 day'"
                " FROM generate_series(1, 25000) AS g"
            ).format(old)
        )
        conn.execute(
            sql.SQL("INSERT INTO {} (task) SELECT 't' FROM generate_series(1, 7)").format(old)
        )
    try:
        # when
        result = run_cli(capsys, database_url, name, "migrate")

        # then: every finished job moved, in batches, and the view shows all of them
        assert result.code == 0, result.err
        assert "moved 10,000 finished jobs into the history" in result.err
        assert "moved 25,000 finished jobs into the history" in result.err
        with psycopg.connect(database_url, autocommit=True) as conn:

            def count(table: str, where: str = "true") -> int:
                query = sql.SQL("SELECT count(*) FROM {} WHERE " + where)
                row = conn.execute(query.format(sql.Identifier(name, table))).fetchone()
                return int(row[0]) if row else -1

            assert count("jobs_live") == 7 == count("jobs_live", "state = 'available'")
            assert count("jobs_history") == 25000
            assert count("jobs") == 25007
            partitions = conn.execute(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = %s::regclass",
                [f"{name}.jobs_history"],
            ).fetchone()
            # 3 states x 4 days (today and the 3 before), + completed's for tomorrow
            assert partitions == (3 * 4 + 1,)
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def test_a_claim_through_the_view_is_refused_as_it_could_not_lock_the_row(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    # A worker from before migration 0012 claims so: two of them could take one job.
    job_id = app.enqueue(None, "ok", {})
    claim = sql.SQL("UPDATE {} SET state = 'running', worker_id = 'old' WHERE id = %s")

    with pytest.raises(psycopg.errors.FeatureNotSupported, match="predates pgjobs migration"):
        observer.execute(claim.format(sql.Identifier(schema, "jobs")), [job_id])
    assert job(observer, schema, job_id)["state"] == "available"
