"""Workflows on real worker processes: steps run only after their dependencies, each once
unless a worker is lost, failures cancel down the graph, and the graph is enqueued in
the caller's transaction or not at all."""

from __future__ import annotations

import signal
from collections import Counter
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.rows import dict_row

import pgjobs
from pgjobs import App, InvalidWorkflowError, Workflow
from tests.helpers import REPO_ROOT, StartWorker, runs, wait_until
from tests.workflow_app import app as workflow_app

WORKFLOW_APP = "tests.workflow_app:app"
FINISHED = {"completed", "failed", "cancelled"}
Connection = psycopg.Connection[Any]


@pytest.fixture
def wf_app(app: App) -> App:
    """The workflow test App, on the test's database and schema."""
    workflow_app.configure(database_url=app.database.url, schema=app.schema)
    return workflow_app


def steps(observer: Connection, schema: str, workflow_id: int) -> dict[str, dict[str, Any]]:
    """The workflow's steps by name: every column of their job rows."""
    query = sql.SQL("SELECT * FROM {} WHERE workflow_id = %s ORDER BY id").format(
        sql.Identifier(schema, "jobs")
    )
    with observer.cursor(row_factory=dict_row) as cur:
        return {row["step"]: row for row in cur.execute(query, (workflow_id,))}


def finished(observer: Connection, schema: str, workflow_id: int) -> dict[str, dict[str, Any]]:
    """The steps once every one is finished (empty, so falsy, until then)."""
    found = steps(observer, schema, workflow_id)
    return found if found and all(s["state"] in FINISHED for s in found.values()) else {}


def wait_finished(
    observer: Connection, schema: str, workflow_id: int, timeout: float = 30.0
) -> dict[str, dict[str, Any]]:
    return wait_until(
        lambda: finished(observer, schema, workflow_id),
        timeout=timeout,
        message=lambda: f"workflow {workflow_id}: {steps(observer, schema, workflow_id)}",
    )


def assert_dependencies_first(found: dict[str, dict[str, Any]]) -> None:
    """No step started before every one of its dependencies had finished."""
    by_id = {row["id"]: row for row in found.values()}
    for row in found.values():
        if row["started_at"] is None:
            continue
        for dependency in row["depends_on"] or ():
            before = by_id[dependency]
            assert before["finished_at"] is not None, (row["step"], before["step"])
            assert before["finished_at"] <= row["started_at"], (row["step"], before["step"])


def test_a_chain_runs_in_order_on_two_workers(
    wf_app: App, runs_table: str, observer: Connection, start_worker: StartWorker
) -> None:
    step = wf_app.get_task("wf.step")
    workflow = pgjobs.chain("chain", *[(step, {"value": n}) for n in range(6)])
    for _ in range(2):
        start_worker("--concurrency", "4", app=WORKFLOW_APP)

    workflow.enqueue(None)

    found = wait_finished(observer, runs_table, workflow.id or 0)
    assert [s["state"] for s in found.values()] == ["completed"] * 6
    assert [run["label"] for run in runs(observer, runs_table)] == list(found)
    assert [s["result"] for s in found.values()] == list(range(6))
    assert_dependencies_first(found)


def test_fan_out_and_fan_in_release_the_last_step_once_with_every_result(
    wf_app: App, runs_table: str, observer: Connection, start_worker: StartWorker
) -> None:
    step, total = wf_app.get_task("wf.step"), wf_app.get_task("wf.total")
    workflow = Workflow("fan")
    root = workflow.add(step, name="root", value=0)
    middle = [workflow.add(step, after=[root], value=n) for n in range(1, 41)]
    workflow.add(total, name="sum", after=middle)
    for _ in range(2):
        start_worker("--concurrency", "8", app=WORKFLOW_APP)

    workflow.enqueue(None)

    found = wait_finished(observer, runs_table, workflow.id or 0)
    assert Counter(s["state"] for s in found.values()) == {"completed": 42}
    assert found["sum"]["result"] == sum(range(1, 41))
    assert Counter(run["label"] for run in runs(observer, runs_table))["sum"] == 1
    assert len(runs(observer, runs_table)) == 42  # every step ran once
    assert_dependencies_first(found)


def test_a_failure_cancels_its_dependents_down_the_graph_but_not_run_if_finished(
    wf_app: App, runs_table: str, observer: Connection, start_worker: StartWorker
) -> None:
    step, fail = wf_app.get_task("wf.step"), wf_app.get_task("wf.fail")
    workflow = Workflow("failing")
    ok = workflow.add(step, name="ok", value=1)
    broken = workflow.add(fail, name="broken")
    after_broken = workflow.add(step, name="after-broken", after=[broken])
    workflow.add(step, name="further", after=[after_broken, ok])
    workflow.add(step, name="cleanup", after=[broken, ok], run_if="finished", value="clean")
    start_worker("--concurrency", "2", app=WORKFLOW_APP)

    workflow.enqueue(None)

    found = wait_finished(observer, runs_table, workflow.id or 0)
    states = {name: row["state"] for name, row in found.items()}
    assert states == {
        "ok": "completed",
        "broken": "failed",
        "after-broken": "cancelled",
        "further": "cancelled",
        "cleanup": "completed",
    }
    assert found["after-broken"]["errors"][-1]["error"] == (
        f"cancelled: dependency broken (job {found['broken']['id']}) failed"
    )
    assert "after-broken" in found["further"]["errors"][-1]["error"]
    assert found["cleanup"]["result"] == "clean"
    ran = {run["label"] for run in runs(observer, runs_table)}
    assert ran == {"ok", "broken", "cleanup"}


def test_a_rolled_back_enqueue_leaves_no_step_and_no_workflow(
    wf_app: App, conn: Connection, observer: Connection, schema: str
) -> None:
    step = wf_app.get_task("wf.step")
    workflow = pgjobs.group("rolled back", (step, {}), (step, {}), then=(step, {}))

    ids = workflow.enqueue(conn)
    assert len(ids) == 3
    conn.rollback()

    for table in ("jobs", "workflows"):
        query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
        assert observer.execute(query).fetchone() == (0,)


def test_a_step_whose_worker_is_killed_runs_again_and_its_dependents_wait_for_it(
    wf_app: App, runs_table: str, observer: Connection, start_worker: StartWorker
) -> None:
    step = wf_app.get_task("wf.step")
    workflow = Workflow("killed")
    first = workflow.add(step, name="first", value=1)
    slow = workflow.add(step, name="slow", after=[first], value=2, seconds=2.0)
    workflow.add(step, name="last", after=[slow], value=3)
    doomed = start_worker("--concurrency", "1", "--rescue-after", "1", app=WORKFLOW_APP)
    workflow.enqueue(None)
    wait_until(lambda: "slow" in {r["label"] for r in runs(observer, runs_table)})

    doomed.send(signal.SIGKILL)
    doomed.wait_exit()
    start_worker("--concurrency", "1", "--rescue-after", "1", app=WORKFLOW_APP)

    found = wait_finished(observer, runs_table, workflow.id or 0)
    assert [s["state"] for s in found.values()] == ["completed"] * 3
    labels = Counter(run["label"] for run in runs(observer, runs_table))
    assert labels == {"first": 1, "slow": 2, "last": 1}
    lost = [e for e in found["slow"]["errors"] if e["error"].startswith("worker lost")]
    assert len(lost) == 1  # the second run is accounted for
    assert_dependencies_first(found)


def test_a_step_adds_steps_at_run_time_and_their_total_reads_their_results(
    wf_app: App, runs_table: str, observer: Connection, start_worker: StartWorker
) -> None:
    workflow = Workflow("split")
    workflow.add(wf_app.get_task("wf.split"), name="split", count=5)
    start_worker("--concurrency", "4", app=WORKFLOW_APP)

    workflow.enqueue(None)

    found = wait_until(
        lambda: (f := finished(observer, runs_table, workflow.id or 0)) and "sum" in f and f,
        timeout=30,
    )
    assert found["sum"]["result"] == sum(n * n for n in range(1, 6))
    assert {name for name in found} == {"split", "sum"} | {f"square-{n}" for n in range(1, 6)}
    assert Counter(s["state"] for s in found.values()) == {"completed": 7}
    assert_dependencies_first(found)


def test_adding_a_step_again_returns_the_first_one(
    wf_app: App, conn: Connection, schema: str
) -> None:
    from pgjobs.testing import Jobs

    calls: list[int] = []

    @wf_app.task(name="wf.adds-twice", pass_context=True)
    def adds_twice(ctx: pgjobs.JobContext) -> None:
        first = ctx.add_step("wf.step", name="child", value=1)
        calls.append(first)
        calls.append(ctx.add_step("wf.step", name="child", value=2))
        with pytest.raises(InvalidWorkflowError, match="'nowhere'"):
            ctx.add_step("wf.step", after=["nowhere"])

    try:
        workflow = Workflow("twice")
        workflow.add(adds_twice)
        workflow.enqueue(conn)
        with Jobs(wf_app, conn) as jobs:
            jobs.run().raise_errors()  # the children are left waiting
        assert calls[0] == calls[1]
    finally:
        del wf_app.tasks["wf.adds-twice"]


# --- bad input -------------------------------------------------------------------------------


def test_a_workflow_refuses_a_bad_graph_when_the_step_is_added(wf_app: App) -> None:
    step = wf_app.get_task("wf.step")
    workflow, other = Workflow("one"), Workflow("two")
    elsewhere = other.add(step, name="elsewhere")
    workflow.add(step, name="a")

    with pytest.raises(InvalidWorkflowError, match=r"'b' waits for .*another workflow"):
        workflow.add(step, name="b", after=[elsewhere])
    with pytest.raises(InvalidWorkflowError, match="'c' waits for 'later'"):
        workflow.add(step, name="c", after=["later"])
    with pytest.raises(InvalidWorkflowError, match="named 'a' already"):
        workflow.add(step, name="a")
    with pytest.raises(InvalidWorkflowError, match="run_if"):
        workflow.add(step, run_if="sometimes")
    with pytest.raises(InvalidWorkflowError, match="unique_key"):
        workflow.add(step, options={"unique_key": "k"})
    with pytest.raises(pgjobs.InvalidJobError, match="do not fit"):
        workflow.add(step, nonsense=1)
    assert isinstance(InvalidWorkflowError("x"), ValueError)
    assert [s.name for s in workflow.steps] == ["a"]  # the refused steps were not added


def test_an_empty_workflow_or_one_enqueued_twice_is_refused(
    wf_app: App, conn: Connection, schema: str
) -> None:
    with pytest.raises(InvalidWorkflowError, match="no steps"):
        Workflow("empty", app=wf_app).enqueue(conn)
    with pytest.raises(InvalidWorkflowError, match="give it the App"):
        Workflow("names only").add("wf.step").workflow.enqueue(conn)

    workflow = Workflow("once")
    workflow.add(wf_app.get_task("wf.step"))
    workflow.enqueue(conn)
    with pytest.raises(InvalidWorkflowError, match="enqueued already"):
        workflow.enqueue(conn)
    with pytest.raises(InvalidWorkflowError, match="enqueued already"):
        workflow.add(wf_app.get_task("wf.step"))


# --- the docs' examples ----------------------------------------------------------------------


def docs_example(number: int, app: App) -> dict[str, Any]:
    """Run the `number`th Python block of docs/workflows.md as a script; its namespace,
    its App pointed at the test's database and schema."""
    from tests.helpers.readme import code_blocks

    text = (REPO_ROOT / "docs" / "workflows.md").read_text()
    namespace: dict[str, Any] = {"__name__": "__main__"}
    exec(code_blocks(text, "python")[number], namespace)
    namespace["app"].configure(database_url=app.database.url, schema=app.schema)
    return namespace


def test_the_docs_examples_run_as_written(app: App, conn: Connection, schema: str) -> None:
    from pgjobs.testing import Jobs

    example = docs_example(0, app)
    workflow_id = example["enqueue_import"](conn, "https://example.com/a.csv")
    with Jobs(example["app"], conn) as jobs:
        jobs.run(drain=True).raise_errors()
    found = steps(conn, schema, workflow_id)
    assert {name: row["state"] for name, row in found.items()} == {
        "fetch": "completed",
        "parse": "completed",
        "report": "completed",
    }
    assert found["parse"]["result"] == 3

    docs_example(1, app)  # asserts its own step names

    fan_out = docs_example(2, app)
    workflow = Workflow("squares")
    workflow.add(fan_out["split"], name="split", count=4)
    workflow.enqueue(conn)
    with Jobs(fan_out["app"], conn) as jobs:
        jobs.run(drain=True).raise_errors()
    found = steps(conn, schema, workflow.id or 0)
    assert found["total"]["result"] == 0 + 1 + 4 + 9
    assert sorted(found) == [
        "split",
        "split.__main__.square",
        "split.__main__.square-2",
        "split.__main__.square-3",
        "split.__main__.square-4",
        "total",
    ]


# --- retries, snoozes, other connections -----------------------------------------------------


def test_a_retried_or_snoozed_step_holds_its_dependents_until_it_completes(
    app: App, conn: Connection, schema: str
) -> None:
    from pgjobs.testing import Jobs

    attempts: list[str] = []

    @app.task(name="shaky", pass_context=True)
    def shaky(ctx: pgjobs.JobContext) -> None:
        attempts.append(f"shaky {ctx.attempt}")
        if ctx.attempt == 1:
            raise RuntimeError("first attempt fails")

    @app.task(name="sleepy", pass_context=True)
    def sleepy(ctx: pgjobs.JobContext) -> None:
        attempts.append(f"sleepy {ctx.attempt}")
        if ctx.attempt == 1:
            raise pgjobs.SnoozeJob(30)

    @app.task(name="after")
    def after() -> None:
        attempts.append("after")

    workflow = Workflow("bumpy")
    workflow.add(after, after=[workflow.add(shaky), workflow.add(sleepy)])
    workflow.enqueue(conn)
    with Jobs(app, conn) as jobs:
        jobs.run(drain=True)  # the first attempts: a retry and a snooze, both delayed
        assert steps(conn, schema, workflow.id or 0)["after"]["state"] == "blocked"
        assert steps(conn, schema, workflow.id or 0)["after"]["waiting_for"] == 2
        jobs.run(drain=True, delayed=True)

    assert attempts == ["shaky 1", "sleepy 1", "shaky 2", "sleepy 2", "after"]
    assert {s["state"] for s in steps(conn, schema, workflow.id or 0).values()} == {"completed"}


def test_a_workflow_is_enqueued_on_asyncio_and_sqlalchemy_connections(
    app: App, database_url: str, observer: Connection, schema: str
) -> None:
    import asyncio

    import sqlalchemy as sa
    from sqlalchemy.orm import Session

    @app.task(name="step")
    def step() -> None: ...

    async def enqueue_async() -> list[int]:
        async with await psycopg.AsyncConnection.connect(database_url) as aconn:
            ids = await pgjobs.chain("async", (step, {}), (step, {}), app=app).enqueue_async(aconn)
            await aconn.commit()
            return ids

    engine = sa.create_engine(sa.engine.make_url(database_url).set(drivername="postgresql+psycopg"))
    with Session(engine) as session:
        session_ids = pgjobs.chain("orm", (step, {}), (step, {})).enqueue(session)
        session.commit()
    engine.dispose()
    async_ids = asyncio.run(enqueue_async())

    query = sql.SQL("SELECT id, state FROM {} ORDER BY id").format(sql.Identifier(schema, "jobs"))
    states = dict(observer.execute(query).fetchall())
    assert [states[i] for i in session_ids] == ["available", "blocked"]
    assert [states[i] for i in async_ids] == ["available", "blocked"]


def test_a_cancelled_workflow_ignores_its_running_steps_late_outcome_and_additions(
    wf_app: App, runs_table: str, observer: Connection, start_worker: StartWorker
) -> None:
    from pgjobs.admin import cancel_workflow
    from tests.helpers import stays_true

    workflow = Workflow("cancelled")
    running = workflow.add(wf_app.get_task("wf.waits-for-cancel"), name="running")
    workflow.add(wf_app.get_task("wf.step"), name="next", after=[running])
    worker = start_worker("--concurrency", "1", app=WORKFLOW_APP)
    workflow.enqueue(None)
    wait_until(lambda: runs(observer, runs_table), message=worker.describe)

    cancelled = cancel_workflow(wf_app, workflow.id or 0)

    assert sorted(cancelled) == sorted(s.job_id for s in workflow.steps)
    wait_until(lambda: "refused" in {r["label"] for r in runs(observer, runs_table)})
    stays_true(
        lambda: (
            {n: s["state"] for n, s in steps(observer, runs_table, workflow.id or 0).items()}
            == {"running": "cancelled", "next": "cancelled"}
        ),
        duration=0.5,
    )
    assert "late" not in steps(observer, runs_table, workflow.id or 0)
