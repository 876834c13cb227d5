"""Writing a batch of outcomes finds each job's row once, whatever plan the server picks,
a batch (a claim, outcomes, a heartbeat) reads its own rows, not the whole table, and a
completion locks its rows in id order whatever the statistics say (migration 0014).

The worker's own connections never prepare statements, but `pgjobs.testing` writes
outcomes on the caller's connection, where psycopg prepares a statement after five runs
and the server may then switch to a generic plan, made without knowing the batch's size.
An earlier form of these statements got, in that plan, a scan of every running job for
each outcome: quadratic work, tens of milliseconds for a batch of a few hundred.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from pgjobs.data.claims import HEARTBEAT
from pgjobs.data.function_plans import explain_claim, explain_completion
from pgjobs.types import ClaimedJob, Outcome
from pgjobs.worker.outcomes import completed, failed_attempt, snoozed
from tests.helpers import table_scans

RUNNING = 5_000
BATCH = 200
# The scans of jobs_live that visit rows in id order, as a heartbeat locks them.
IN_ID_ORDER = ([("Index Scan", "jobs_running_idx")], [("Index Scan", "jobs_pkey")])

Connection = psycopg.Connection[Any]


def generic_plan(conn: Connection, query: sql.SQL, params: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN ANALYZE of `query` run as a prepared statement's generic plan (rolled back)."""
    text = query.as_string(conn)
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", text)))
    positional = re.sub(r"%\((\w+)\)s", lambda m: f"${names.index(m.group(1)) + 1}", text)
    placeholders = ", ".join(["%s"] * len(names))
    with conn.transaction(force_rollback=True):
        conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        conn.execute(f"PREPARE outcome_write AS {positional}")
        try:
            row = (
                psycopg.ClientCursor(conn)
                .execute(
                    f"EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE outcome_write({placeholders})",
                    [params[name] for name in names],
                )
                .fetchone()
            )
        finally:
            conn.execute("DEALLOCATE outcome_write")
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


def repeated_steps(node: dict[str, Any]) -> list[tuple[str, float, int]]:
    """Nodes of a plan run more than once: (type, rows per run, runs)."""
    found = [
        (node["Node Type"], node["Actual Rows"], node["Actual Loops"])
        for node in [node]
        if node.get("Actual Loops", 1) > 1
    ]
    for child in node.get("Plans", []):
        found += repeated_steps(child)
    return found


def claimed_and_analyzed(
    app: App, observer: Connection, *, enqueued: int, running: int
) -> list[ClaimedJob]:
    """`enqueued` jobs, `running` of them claimed by worker "w", and the table's
    statistics taken then."""
    app.enqueue_many(None, [("report", {"n": n}) for n in range(enqueued)])
    claimed, _ = app.data.claims.claim(observer, limit=running, queue=None, worker_id="w")
    observer.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(app.schema, "jobs_live")))
    return claimed


@pytest.fixture
def running_jobs(app: App, observer: Connection) -> list[ClaimedJob]:
    """RUNNING jobs claimed by worker "w", and the table's statistics taken then."""
    return claimed_and_analyzed(app, observer, enqueued=RUNNING, running=RUNNING)


def outcomes_of(kind: str, jobs: list[ClaimedJob]) -> list[Outcome]:
    if kind == "completed":
        return [completed(job) for job in jobs]
    if kind == "completed with a result":
        return [completed(job, result_json=f'{{"n": {job.id}}}') for job in jobs]
    error = {"error": "boom", "traceback": None}
    return [
        snoozed(job, 60.0) if n % 2 else failed_attempt(job, error, retry_delay=1.0)
        for n, job in enumerate(jobs)
    ]


@pytest.mark.parametrize("kind", ["completed", "completed with a result", "retried or snoozed"])
def test_a_batch_of_outcomes_visits_each_row_once_in_a_generic_plan(
    app: App, running_jobs: list[ClaimedJob], conn: Connection, kind: str
) -> None:
    # given: a batch of outcomes for some of the many jobs running
    assert len(running_jobs) == RUNNING
    batch = outcomes_of(kind, running_jobs[100 : 100 + BATCH])

    # when: the statement runs as a generic plan (a completion's, as complete_jobs
    # plans it: its own generic plan)
    if kind == "retried or snoozed":
        [statement] = app.data.claims.outcome_statements(batch, worker_id="w")
        plan = generic_plan(conn, statement.query, dict(statement.params or {}))
    else:
        plan = completion_plan(conn, app.schema, batch)

    # then: it wrote every outcome, and a step run once per outcome finds one row (its
    # job's, by id); the quadratic plans scanned every running job, or every outcome, once
    # per outcome
    assert plan["Actual Rows"] == BATCH
    repeated = repeated_steps(plan)
    assert all(rows <= 1 for _, rows, _ in repeated), repeated


def steps_on_jobs(node: dict[str, Any]) -> list[tuple[str, float]]:
    """Every step of a plan that reads `jobs`: (type, rows over all its runs)."""
    found = []
    if node.get("Relation Name") == "jobs_live":
        found.append((node["Node Type"], node["Actual Rows"] * node.get("Actual Loops", 1)))
    for child in node.get("Plans", []):
        found += steps_on_jobs(child)
    return found


def completion_plan(
    conn: Connection, schema: str, outcomes: list[Outcome], *, as_function: bool = True
) -> dict[str, Any]:
    """EXPLAIN ANALYZE of the completion of `outcomes` as `complete_jobs` plans it (or,
    `as_function=False`, as the same statement outside it would be), rolled back."""
    [[explained]] = explain_completion(
        conn,
        schema,
        outcomes=outcomes,
        worker_id="w",
        options="ANALYZE, FORMAT JSON",
        as_function=as_function,
    )
    plan: dict[str, Any] = explained[0]["Plan"]
    return plan


def custom_plan(conn: Connection, query: sql.SQL, params: dict[str, Any]) -> dict[str, Any]:
    """EXPLAIN ANALYZE of `query` as the worker runs it, unprepared (rolled back)."""
    with conn.transaction(force_rollback=True):
        row = conn.execute(sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) ") + query, params).fetchone()
    assert row is not None
    plan: dict[str, Any] = row[0][0]["Plan"]
    return plan


@pytest.mark.parametrize("kind", ["completed", "completed with a result", "heartbeat", "claim"])
def test_a_batch_reads_its_own_rows_not_the_table(
    app: App, observer: Connection, conn: Connection, kind: str
) -> None:
    # given: a table of 20,000 jobs, 1,200 of them running here, statistics taken then
    running = claimed_and_analyzed(app, observer, enqueued=20_000, running=1_200)
    batch = running[100:1_100]

    # when: a batch of 1,000 outcomes (or a heartbeat of 1,000 jobs, or a claim of 1,000)
    # runs as the worker sends it, with its parameters, so the planner knows the batch's size
    # (a claim as `claim_jobs` plans it: its own generic plan)
    if kind == "claim":
        [[explained]] = explain_claim(
            conn, app.schema, limit=len(batch), begin=10, options="ANALYZE, FORMAT JSON"
        )
        plan: dict[str, Any] = explained[0]["Plan"]
    elif kind == "heartbeat":
        params = {"ids": [job.id for job in batch], "worker_id": "w"}
        plan = custom_plan(conn, app.data.sql.render(HEARTBEAT), params)
    else:
        plan = completion_plan(conn, app.schema, outcomes_of(kind, batch))

    # then: it wrote the batch, and no step read more rows of the table than the batch
    # holds; joined by id alone, the rows were hash-joined to a scan of all 20,000
    assert plan["Actual Rows"] == len(batch)
    steps = steps_on_jobs(plan)
    assert steps and all(rows <= len(batch) for _, rows in steps), steps


def scans_of_jobs(node: dict[str, Any]) -> list[tuple[str, str | None]]:
    """Every step of a plan that reads `jobs_live` (the DELETE aside): (type, index)."""
    found = []
    if node.get("Relation Name") == "jobs_live" and node["Node Type"] != "ModifyTable":
        found.append((node["Node Type"], node.get("Index Name")))
    for child in node.get("Plans", []):
        found += scans_of_jobs(child)
    return found


@pytest.mark.parametrize("kind", ["completed", "completed with a result"])
def test_a_completion_finds_its_rows_in_id_order(
    app: App, observer: Connection, conn: Connection, kind: str
) -> None:
    # given: 1,000 outcomes of the 1,200 jobs running among 20,000
    running = claimed_and_analyzed(app, observer, enqueued=20_000, running=1_200)
    batch = outcomes_of(kind, running[100:1_100])

    # when: the completion is planned as complete_jobs plans it
    plan = completion_plan(conn, app.schema, batch)

    # then: it reads jobs_live once, through an index keyed by id: its rows are locked
    # in id order, as a heartbeat locks them, so the two cannot deadlock (a bitmap scan
    # would lock them in the order of the table's pages)
    assert plan["Actual Rows"] == len(batch)
    assert scans_of_jobs(plan) in IN_ID_ORDER


@pytest.fixture
def few_live_rows(app: App, observer: Connection) -> list[ClaimedJob]:
    """As under a steady load after an autovacuum: jobs_live vacuumed and analyzed while
    20 of its 2,000 jobs ran, the others moved to the history (few live rows over many
    pages); autovacuum off. The 20 running jobs, worker "w"'s."""
    if observer.info.server_version < 150000:
        pytest.skip("pg_stat_force_next_flush() came with PostgreSQL 15")
    live = sql.Identifier(app.schema, "jobs_live")
    observer.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(live))
    app.enqueue_many(None, [("report", {"n": n}) for n in range(2_000)])
    claimed, _ = app.data.claims.claim(observer, limit=2_000, queue=None, worker_id="w")
    finished = [completed(job) for job in claimed[20:]]
    app.data.claims.record_outcomes(observer, finished, worker_id="w")
    observer.execute(sql.SQL("VACUUM ANALYZE {}").format(live))
    return claimed[:20]


@pytest.mark.parametrize("kind", ["completed", "completed with a result"])
def test_a_completion_locks_its_rows_in_id_order_whatever_the_statistics(
    app: App, observer: Connection, conn: Connection, few_live_rows: list[ClaimedJob], kind: str
) -> None:
    # given: 10 of the 20 running jobs done, on a table of few live rows, where the
    # completion planned as a plain statement reads jobs_live in the order of its pages
    # (as the worker's statement did before migration 0014: a heartbeat and a completion
    # deadlocked under a steady load)
    batch = outcomes_of(kind, few_live_rows[::2])
    plain = completion_plan(conn, app.schema, batch, as_function=False)
    assert scans_of_jobs(plain) not in IN_ID_ORDER, scans_of_jobs(plain)

    # when: the worker writes them
    planned = completion_plan(conn, app.schema, batch)
    scans_before = table_scans(observer, app.schema, "jobs_pkey")["seq_scan"]
    written = app.data.claims.record_outcomes(observer, batch, worker_id="w")

    # then: complete_jobs reads jobs_live through an index keyed by id, so it locks the
    # rows in id order, as a heartbeat does; and the worker's write went through it, with
    # no sequential scan of jobs_live
    assert scans_of_jobs(planned) in IN_ID_ORDER
    assert written == {outcome.job_id for outcome in batch}
    assert table_scans(observer, app.schema, "jobs_pkey")["seq_scan"] == scans_before
