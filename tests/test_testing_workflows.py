"""`pgjobs.testing` and workflows: running one inline, reading its steps, asserting on it."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgjobs
from pgjobs import App, JobContext, JobState
from pgjobs.testing import Jobs

Connection = psycopg.Connection[Any]


@pytest.fixture
def ran() -> list[str]:
    """The steps' names in the order they ran."""
    return []


@pytest.fixture
def tasks(app: App, ran: list[str]) -> dict[str, Any]:
    """A few steps: `record` returns its `value`, `total` sums its dependencies'
    results, `fail` fails for good, `split` adds steps at run time."""

    @app.task(name="wf.record", pass_context=True, store_result=True)
    def record(ctx: JobContext, value: Any = None) -> Any:
        ran.append(ctx.step)
        return value

    @app.task(name="wf.total", pass_context=True, store_result=True)
    def total(ctx: JobContext) -> int:
        ran.append(ctx.step)
        return sum(value or 0 for value in ctx.results.values())

    @app.task(name="wf.fail", pass_context=True)
    def fail(ctx: JobContext) -> None:
        ran.append(ctx.step)
        raise pgjobs.FailJob("this step fails")

    @app.task(name="wf.split", pass_context=True, store_result=True)
    def split(ctx: JobContext, count: int) -> int:
        ran.append(ctx.step)
        squares = [
            ctx.add_step("wf.record", name=f"square-{n}", after=[ctx.step], value=n * n)
            for n in range(1, count + 1)
        ]
        ctx.add_step("wf.total", name="sum", after=squares)
        return count

    return {"record": record, "total": total, "fail": fail, "split": split}


def count_rows(observer: Connection, schema: str, table: str) -> int:
    query = sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, table))
    [(count,)] = observer.execute(query).fetchall()
    return int(count)


# --- running ------------------------------------------------------------------------------


def test_a_chain_runs_in_order(
    tasks: dict[str, Any], test_conn: Connection, helper: Jobs, ran: list[str]
) -> None:
    record = tasks["record"]
    wf = pgjobs.chain("c", (record, {"value": 1}), (record, {"value": 2}), (record, {}))
    wf.enqueue(test_conn)
    assert helper.workflow_states(wf) == {
        "wf.record": "available",
        "wf.record-2": "blocked",
        "wf.record-3": "blocked",
    }
    result = helper.run_workflow(wf)
    assert result.counts == {"completed": 3}
    assert ran == ["wf.record", "wf.record-2", "wf.record-3"]
    assert helper.assert_workflow(wf) == dict.fromkeys(ran, JobState.COMPLETED)
    assert wf.id is not None
    assert helper.workflow_results(wf.id) == {"wf.record": 1, "wf.record-2": 2, "wf.record-3": None}


def test_a_plain_run_releases_one_level_at_a_time(
    tasks: dict[str, Any], test_conn: Connection, helper: Jobs
) -> None:
    record = tasks["record"]
    wf = pgjobs.chain("c", (record, {}), (record, {}))
    wf.enqueue(test_conn)
    assert helper.run().counts == {"completed": 1}  # the first step released the second
    assert helper.workflow_states(wf) == {"wf.record": "completed", "wf.record-2": "available"}
    assert helper.run().counts == {"completed": 1}
    helper.assert_workflow(wf)


def test_fan_out_then_fan_in_reads_every_result(
    tasks: dict[str, Any], test_conn: Connection, helper: Jobs, ran: list[str]
) -> None:
    wf = pgjobs.Workflow("fan")
    root = wf.add(tasks["record"], name="root", value=0)
    middle = [wf.add(tasks["record"], name=f"n{i}", after=[root], value=i) for i in range(1, 6)]
    wf.add(tasks["total"], name="sink", after=middle)
    wf.enqueue(test_conn)
    assert helper.run_workflow(wf).counts == {"completed": 7}
    assert ran[0] == "root" and ran[-1] == "sink"
    assert sorted(ran[1:-1]) == ["n1", "n2", "n3", "n4", "n5"]
    helper.assert_workflow(wf)
    steps = helper.workflow_steps(wf)
    assert steps["sink"].result == 15
    assert steps["sink"].depends_on == [step.job_id for step in middle]


def test_a_failure_cancels_down_the_graph_but_not_a_finished_step(
    tasks: dict[str, Any], test_conn: Connection, helper: Jobs, ran: list[str]
) -> None:
    wf = pgjobs.Workflow("fails")
    ok = wf.add(tasks["record"], name="ok", value=5)
    bad = wf.add(tasks["fail"], name="bad")
    after_bad = wf.add(tasks["record"], name="after-bad", after=[bad])
    further = wf.add(tasks["record"], name="further", after=[after_bad])
    wf.add(tasks["total"], name="report", after=[ok, further], run_if="finished")
    wf.enqueue(test_conn)

    assert helper.run_workflow(wf).counts == {"completed": 2, "failed": 1}
    assert ran == ["ok", "bad", "report"]
    helper.assert_workflow(
        wf,
        {
            "ok": "completed",
            "bad": "failed",
            "after-bad": "cancelled",
            "further": "cancelled",
            "report": JobState.COMPLETED,
        },
    )
    steps = helper.workflow_steps(wf)
    assert steps["after-bad"].last_error == f"cancelled: dependency bad (job {bad.job_id}) failed"
    assert steps["further"].last_error == (
        f"cancelled: dependency after-bad (job {after_bad.job_id}) cancelled"
    )
    assert steps["report"].result == 5  # `further` ended without a result


def test_a_step_adds_steps_at_run_time(
    tasks: dict[str, Any], test_conn: Connection, helper: Jobs, ran: list[str]
) -> None:
    wf = pgjobs.Workflow("split")
    wf.add(tasks["split"], name="split", count=3)
    wf.enqueue(test_conn)
    assert helper.run_workflow(wf).counts == {"completed": 5}
    assert ran[0] == "split" and ran[-1] == "sum"
    states = helper.assert_workflow(
        wf,
        {
            "split": "completed",
            "square-1": "completed",
            "square-2": "completed",
            "square-3": "completed",
            "sum": "completed",
        },
    )
    assert list(states) == ["split", "square-1", "square-2", "square-3", "sum"]
    assert helper.workflow_results(wf) == {
        "split": 3,
        "square-1": 1,
        "square-2": 4,
        "square-3": 9,
        "sum": 14,
    }


def test_app_result_answers_inline_for_a_finished_step(
    app: App, tasks: dict[str, Any], test_conn: Connection, helper: Jobs
) -> None:
    wf = pgjobs.Workflow("results")
    bad = wf.add(tasks["fail"], name="bad")
    wf.add(tasks["record"], name="after-bad", after=[bad])
    wf.add(tasks["record"], name="good", value={"rows": 3})
    wf.enqueue(test_conn)
    helper.run_workflow(wf)
    ids = [step.job_id for step in wf.steps]
    assert None not in ids
    bad_id, cancelled_id, good_id = (int(i or 0) for i in ids)
    # Read on the test's connection (bound while the helper is open): no commit needed.
    assert app.result(good_id, timeout=1) == {"rows": 3}
    with pytest.raises(pgjobs.JobFailedError, match="this step fails"):
        app.result(bad_id, timeout=1)
    with pytest.raises(pgjobs.JobCancelledError, match="dependency bad"):
        app.result(cancelled_id, timeout=1)


def test_an_async_step_reads_results_and_adds_steps(
    app: App, tasks: dict[str, Any], test_conn: Connection, helper: Jobs, ran: list[str]
) -> None:
    @app.task(name="wf.async", pass_context=True, store_result=True)
    async def double(ctx: JobContext) -> int:
        await asyncio.sleep(0)
        ran.append(ctx.step)
        ctx.add_step("wf.record", name="tail", after=[ctx.step], value="end")
        return 2 * int(sum(ctx.results.values()))

    wf = pgjobs.Workflow("async")
    head = wf.add(tasks["record"], name="head", value=21)
    wf.add(double, name="double", after=[head])
    wf.enqueue(test_conn)
    assert helper.run_workflow(wf).counts == {"completed": 3}
    assert ran == ["head", "double", "tail"]
    assert helper.workflow_results(wf) == {"head": 21, "double": 42, "tail": "end"}


def test_every_job_due_runs_unless_queues_narrow_it(
    app: App, tasks: dict[str, Any], test_conn: Connection, helper: Jobs
) -> None:
    @app.task(name="other", queue="elsewhere")
    def other() -> None: ...

    other.enqueue(test_conn)
    wf = pgjobs.chain("c", (tasks["record"], {}), (tasks["record"], {}))
    wf.enqueue(test_conn)
    assert helper.run_workflow(wf, queues=["default"]).counts == {"completed": 2}
    helper.assert_enqueued(other)  # still waiting: not in those queues
    assert helper.run_workflow(wf).counts == {"completed": 1}  # the workflow's done; `other` ran


def test_a_delayed_step_waits_for_the_time_options(
    tasks: dict[str, Any], test_conn: Connection, helper: Jobs
) -> None:
    wf = pgjobs.Workflow("later")
    first = wf.add(tasks["record"], name="first", options={"delay": 3600})
    wf.add(tasks["record"], name="second", after=[first])
    wf.enqueue(test_conn)
    assert helper.run_workflow(wf).counts == {}
    assert helper.workflow_states(wf) == {"first": "available", "second": "blocked"}
    assert helper.run_workflow(wf, advance=3600).counts == {"completed": 2}
    helper.assert_workflow(wf)


def test_the_run_budget_grows_with_the_workflow(
    tasks: dict[str, Any], test_conn: Connection, helper: Jobs
) -> None:
    wf = pgjobs.Workflow("wide")
    root = wf.add(tasks["record"], name="root")
    for i in range(150):
        wf.add(tasks["record"], name=f"leaf-{i}", after=[root])
    wf.enqueue(test_conn)
    with pytest.raises(pgjobs.testing.RunawayJobsError):
        helper.run_workflow(wf, max_jobs=100)
    assert helper.run_workflow(wf).counts == {"completed": 51}
    helper.assert_workflow(wf)


# --- asserting ----------------------------------------------------------------------------


def test_a_failed_assertion_says_which_step_differs_and_why(
    tasks: dict[str, Any], test_conn: Connection, helper: Jobs
) -> None:
    wf = pgjobs.Workflow("import-42")
    fetch = wf.add(tasks["fail"], name="fetch")
    parse = wf.add(tasks["record"], name="parse", after=[fetch])
    wf.add(tasks["record"], name="load", after=[parse])
    wf.enqueue(test_conn)
    helper.run_workflow(wf)
    with pytest.raises(AssertionError) as raised:
        helper.assert_workflow(wf, {"fetch": "completed", "parse": "completed", "store": "failed"})
    message = str(raised.value)
    assert message.startswith(f"workflow 'import-42' (id {wf.id}) is not as expected:\n")
    assert "  fetch: failed, expected completed\n" in message
    assert "  parse: cancelled, expected completed\n" in message
    assert "  load: cancelled, not expected (no such step was listed)\n" in message
    assert "  store: no such step, expected failed\n" in message
    assert "last error: pgjobs.errors.FailJob: this step fails" in message
    assert f"cancelled: dependency fetch (job {fetch.job_id}) failed" in message


def test_a_blocked_step_shows_what_it_waits_for(
    tasks: dict[str, Any], test_conn: Connection, helper: Jobs
) -> None:
    wf = pgjobs.Workflow("wait")
    a = wf.add(tasks["record"], name="a", options={"delay": 60})
    b = wf.add(tasks["record"], name="b")
    wf.add(tasks["total"], name="c", after=[a, b])
    wf.enqueue(test_conn)
    helper.run_workflow(wf)
    with pytest.raises(AssertionError) as raised:
        helper.assert_workflow(wf)
    message = str(raised.value)
    assert "  a: available, expected completed\n" in message
    assert "  c: blocked, expected completed\n" in message
    assert "after a, b; waiting for a" in message


def test_which_workflow_is_checked(
    app: App, tasks: dict[str, Any], test_conn: Connection, helper: Jobs
) -> None:
    wf = pgjobs.Workflow("not-yet")
    wf.add(tasks["record"])
    with pytest.raises(ValueError, match="'not-yet' is not enqueued yet"):
        helper.run_workflow(wf)
    with pytest.raises(pgjobs.JobNotFoundError, match="no workflow with id 999"):
        helper.workflow_states(999)
    with pytest.raises(ValueError, match=r"a pgjobs\.Workflow or a workflow id"):
        helper.workflow_states("import")  # type: ignore[arg-type]
    wf.enqueue(test_conn)
    with pytest.raises(ValueError, match="must be among"):
        helper.assert_workflow(wf, {"wf.record": "done"})


# --- transactions -------------------------------------------------------------------------


def test_everything_is_rolled_back_with_the_test(
    app: App,
    tasks: dict[str, Any],
    test_conn: Connection,
    observer: Connection,
    schema: str,
) -> None:
    with Jobs(app, test_conn) as jobs:
        wf = pgjobs.Workflow("split")
        wf.add(tasks["split"], name="split", count=2)
        wf.enqueue(test_conn)
        jobs.run_workflow(wf)
        assert len(jobs.assert_workflow(wf)) == 4  # two squares and their sum were added
        assert count_rows(observer, schema, "jobs") == 0  # none of it committed
    test_conn.rollback()
    assert count_rows(test_conn, schema, "jobs") == 0
    assert count_rows(test_conn, schema, "workflows") == 0


def test_a_committed_workflow_runs_on_pgjobs_own_connections(
    app: App, tasks: dict[str, Any], conn: Connection, observer: Connection, schema: str
) -> None:
    wf = pgjobs.Workflow("split")
    wf.add(tasks["split"], name="split", count=2)
    wf.enqueue(conn)
    with Jobs(app) as jobs:  # its own autocommit connection: sees committed data only
        with pytest.raises(pgjobs.JobNotFoundError):
            jobs.workflow_states(wf)
        conn.commit()
        assert jobs.run_workflow(wf).counts == {"completed": 4}
        jobs.assert_workflow(wf)
    assert count_rows(observer, schema, "jobs") == 4  # steps added through the App's pool
