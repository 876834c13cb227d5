"""Managing workflows by hand: cancel (a step, by filter, a whole workflow), retry of
steps, the rescue of a lost step, retention of finished workflows, and the commands that
show them (`pgjobs show`, `pgjobs workflow`, `pgjobs list --workflow`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest
from psycopg import sql

import pgjobs
from pgjobs import App, FailJob, JobNotFoundError, Workflow
from pgjobs.admin import (
    JobFilter,
    cancel_jobs,
    cancel_matching,
    cancel_workflow,
    get_workflow,
    list_jobs,
    prune_jobs,
    retry_jobs,
    retry_matching,
)
from pgjobs.data.sql import results_channel
from pgjobs.errors import JobStateError
from pgjobs.testing import Jobs
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.retention import DAY, Retention, RetentionPolicy
from tests.helpers import (
    Result,
    ago,
    completed,
    job,
    job_ids,
    make_job,
    run_cli,
    stays_true,
    update_job,
)

Capsys = pytest.CaptureFixture[str]
Connection = psycopg.Connection[Any]


@dataclass
class Tasks:
    """The test's tasks: `ok` stores {"n": n}; `flaky` fails while its name is in
    `failing`. Both record the order they ran in (`ran`, by step name)."""

    app: App
    ran: list[str] = field(default_factory=list)
    failing: set[str] = field(default_factory=set)

    def register(self) -> Tasks:
        @self.app.task(name="ok", store_result=True, pass_context=True)
        def ok(ctx: pgjobs.JobContext, n: int = 0) -> dict[str, int]:
            self.ran.append(step_name(ctx))
            return {"n": n}

        @self.app.task(name="flaky", pass_context=True, max_attempts=1)
        def flaky(ctx: pgjobs.JobContext) -> None:
            self.ran.append(ctx.step)
            if ctx.step in self.failing:
                raise FailJob(f"{ctx.step} broke")

        return self


def step_name(ctx: pgjobs.JobContext) -> str:
    try:
        return ctx.step
    except RuntimeError:  # a plain job
        return f"job {ctx.job_id}"


@pytest.fixture
def tasks(app: App) -> Tasks:
    return Tasks(app).register()


@pytest.fixture
def jobs(app: App) -> Iterator[Jobs]:
    """Runs jobs as a worker would, on a connection of its own (everything committed)."""
    with Jobs(app) as helper:
        yield helper


@pytest.fixture
def cli(capsys: Capsys, database_url: str, schema: str) -> Any:
    def run(*args: str) -> Result:
        return run_cli(capsys, database_url, schema, *args)

    return run


def states(observer: Connection, schema: str, *ids: int) -> list[str]:
    return [job(observer, schema, job_id)["state"] for job_id in ids]


def listen(observer: Connection, channel: str) -> None:
    observer.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))


def notified(observer: Connection, channel: str) -> bool:
    return any(n.channel == channel for n in observer.notifies(timeout=2, stop_after=1))


# --- cancel -------------------------------------------------------------------------------


def test_cancelling_a_blocked_step_cancels_its_dependents_and_releases_run_if_finished(
    app: App, tasks: Tasks, observer: Connection, schema: str
) -> None:
    wf = Workflow("w", app=app)
    a = wf.add("ok", name="a")
    b = wf.add("ok", name="b", after=[a])
    c = wf.add("ok", name="c", after=[b])
    d = wf.add("ok", name="d", after=[b], run_if="finished")
    ids = wf.enqueue(None)
    listen(observer, results_channel(schema))

    assert cancel_jobs(app, [ids[1]]) == [ids[1]]

    assert states(observer, schema, *ids) == ["available", "cancelled", "cancelled", "available"]
    assert job(observer, schema, ids[2])["errors"][-1]["error"] == (
        f"cancelled: dependency b (job {ids[1]}) cancelled"
    )
    assert job(observer, schema, ids[3])["waiting_for"] == 0
    assert notified(observer, results_channel(schema))  # App.result waiters wake up
    assert (a.job_id, c.job_id, d.job_id) == (ids[0], ids[2], ids[3])


def test_a_cancelled_step_whose_dependents_were_released_runs_them(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str
) -> None:
    wf = Workflow("w", app=app)
    a = wf.add("ok", name="a")
    wf.add("ok", name="b", after=[a])
    wf.add("ok", name="report", after=[a], run_if="finished")
    ids = wf.enqueue(None)

    cancel_jobs(app, [ids[0]])
    jobs.run(drain=True)

    assert tasks.ran == ["report"]
    assert states(observer, schema, *ids) == ["cancelled", "cancelled", "completed"]


def test_cancel_by_filter_takes_blocked_steps_and_settles_their_dependents(
    app: App, tasks: Tasks, observer: Connection, schema: str
) -> None:
    wf = Workflow("w", app=app)
    a = wf.add("ok", name="a")
    b = wf.add("flaky", name="b", after=[a])
    wf.add("ok", name="c", after=[b])
    ids = wf.enqueue(None)

    done = cancel_matching(app, JobFilter(states=["blocked"], tasks=["flaky"]))

    assert (done.changed, done.skipped) == (1, 0)
    assert states(observer, schema, *ids) == ["available", "cancelled", "cancelled"]


def test_cancel_workflow_cancels_every_unfinished_step_and_nothing_else(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str, cli: Any
) -> None:
    wf = Workflow("w", app=app)
    a = wf.add("ok", name="a")
    b = wf.add("ok", name="b", after=[a])
    wf.add("ok", name="c", after=[b])
    wf.add("ok", name="elsewhere", options={"queue": "later"})
    ids = wf.enqueue(None)
    other = app.enqueue(None, "ok", {})
    jobs.run(queues=["default"])  # a completes (and so does the plain job)
    assert states(observer, schema, *ids) == ["completed", "available", "blocked", "available"]

    result = cli("cancel", "--workflow", str(wf.id))

    assert (result.code, result.err) == (0, "")
    assert result.out == (f"cancelled 3 steps of workflow {wf.id}: {ids[1]}, {ids[2]}, {ids[3]}\n")
    assert states(observer, schema, *ids) == ["completed", "cancelled", "cancelled", "cancelled"]
    assert states(observer, schema, other) == ["completed"]
    assert cancel_workflow(app, wf.id or 0) == []
    again = cli("cancel", "--workflow", str(wf.id))
    assert again.out == f"workflow {wf.id} has no unfinished step: nothing cancelled\n"


def test_cancel_workflow_of_an_unknown_id_is_one_line(app: App, cli: Any) -> None:
    with pytest.raises(JobNotFoundError, match="no workflow with id 404"):
        cancel_workflow(app, 404)

    result = cli("cancel", "--workflow", "404")

    assert (result.code, result.out) == (1, "")
    assert result.err == "pgjobs: error: no workflow with id 404\n"
    mixed = cli("cancel", "3", "--workflow", "404")
    assert mixed.code == 1 and mixed.err.count("\n") == 1


# --- retry --------------------------------------------------------------------------------


def failed_chain(app: App, tasks: Tasks, jobs: Jobs) -> list[int]:
    """a (flaky, failed) -> b -> c, both cancelled by a's failure."""
    tasks.failing.add("a")
    wf = Workflow("w", app=app)
    a = wf.add("flaky", name="a")
    b = wf.add("ok", name="b", after=[a])
    wf.add("ok", name="c", after=[b])
    ids = wf.enqueue(None)
    jobs.run(drain=True)
    tasks.ran.clear()
    tasks.failing.clear()
    return ids


def test_a_step_whose_dependency_failed_is_refused_until_the_dependency_is_retried(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str, cli: Any
) -> None:
    a, b, c = failed_chain(app, tasks, jobs)
    assert states(observer, schema, a, b, c) == ["failed", "cancelled", "cancelled"]

    refused = cli("retry", str(b))

    assert (refused.code, refused.out) == (1, "")
    assert refused.err == (
        f"pgjobs: error: job {b} (step 'b') cannot be retried: its dependency 'a' "
        f"(job {a}) is failed; retry step 'a' first\n"
    )
    assert states(observer, schema, a, b, c) == ["failed", "cancelled", "cancelled"]
    # when: the dependency is retried, its cancelled dependents stay cancelled
    assert retry_jobs(app, [a]) == [a]
    assert states(observer, schema, a, b, c) == ["available", "cancelled", "cancelled"]
    # then: each may be retried in turn, and waits for what has not run yet
    assert retry_jobs(app, [b]) == [b]
    assert retry_jobs(app, [c]) == [c]
    assert states(observer, schema, a, b, c) == ["available", "blocked", "blocked"]
    assert [job(observer, schema, i)["waiting_for"] for i in (b, c)] == [1, 1]
    jobs.run(drain=True)
    assert tasks.ran == ["a", "b", "c"]
    assert states(observer, schema, a, b, c) == ["completed"] * 3


def test_retrying_a_chain_at_once_waits_in_order(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str
) -> None:
    a, b, c = failed_chain(app, tasks, jobs)

    assert retry_jobs(app, [c, a, b]) == [c, a, b]

    assert states(observer, schema, a, b, c) == ["available", "blocked", "blocked"]
    jobs.run(drain=True)
    assert tasks.ran == ["a", "b", "c"]


def test_a_step_that_runs_if_finished_is_retried_however_its_dependency_ended(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str
) -> None:
    tasks.failing.update({"a", "report"})
    wf = Workflow("w", app=app)
    a = wf.add("flaky", name="a")
    wf.add("flaky", name="report", after=[a], run_if="finished")
    a_id, report = wf.enqueue(None)
    jobs.run(drain=True)
    assert states(observer, schema, a_id, report) == ["failed", "failed"]
    tasks.failing.clear()

    assert retry_jobs(app, [report]) == [report]

    assert states(observer, schema, a_id, report) == ["failed", "available"]


def test_a_retried_step_holds_its_blocked_dependents_until_it_completes(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str
) -> None:
    # given: report waits for a and for x; a failed, x has not run yet
    tasks.failing.add("a")
    wf = Workflow("w", app=app)
    a = wf.add("flaky", name="a")
    x = wf.add("ok", name="x", options={"queue": "later"})
    wf.add("ok", name="report", after=[a, x], run_if="finished")
    a_id, x_id, report = wf.enqueue(None)
    jobs.run(drain=True, queues=["default"])
    assert job(observer, schema, report)["waiting_for"] == 1
    tasks.failing.clear()
    # when: a is retried, report waits for it again
    retry_jobs(app, [a_id])
    assert (
        job(observer, schema, report)["state"],
        job(observer, schema, report)["waiting_for"],
    ) == (
        "blocked",
        2,
    )
    # then: a completing leaves report waiting for x; x completing releases it
    jobs.run(drain=True, queues=["default"])
    assert states(observer, schema, a_id, x_id, report) == ["completed", "available", "blocked"]
    jobs.run(drain=True, queues=["later"])
    jobs.run(drain=True)
    assert tasks.ran == ["a", "a", "x", "report"]
    assert states(observer, schema, report) == ["completed"]


def test_a_step_added_at_run_time_after_its_dependency_failed_waits_for_its_retry(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str
) -> None:
    # given: a failed; then a running step adds `late`, after a (finished) and after
    # gate (not run yet): a's row does not list `late` as a dependent
    @app.task(name="spawner", pass_context=True)
    def spawner(ctx: pgjobs.JobContext) -> None:
        ctx.add_step("ok", after=["a", "gate"], name="late", run_if="finished")

    tasks.failing.add("a")
    wf = Workflow("w", app=app)
    a = wf.add("flaky", name="a")
    wf.add("ok", name="gate", options={"queue": "later"})
    wf.add("spawner", name="spawner", after=[a], run_if="finished")
    a_id, gate, _ = wf.enqueue(None)
    jobs.run(drain=True, queues=["default"])
    [late] = [j for j in list_jobs(app, workflow_id=wf.id) if j.step == "late"]
    assert (late.state, job(observer, schema, late.id)["waiting_for"]) == ("blocked", 1)
    tasks.failing.clear()
    # when: a is retried, late waits for it too, and a lists it
    retry_jobs(app, [a_id])
    assert job(observer, schema, late.id)["waiting_for"] == 2
    assert late.id in job(observer, schema, a_id)["dependents"]
    # then: late runs only once both have completed
    jobs.run(drain=True, queues=["default"])
    assert states(observer, schema, late.id) == ["blocked"]
    jobs.run(drain=True, queues=["later"])
    jobs.run(drain=True)
    assert states(observer, schema, a_id, gate, late.id) == ["completed"] * 3


def finish_in_transaction(conn: Connection, schema: str, job_id: int) -> None:
    """What a worker's outcome write does to a step: complete it, then settle its
    dependents, in one transaction (left open)."""
    jobs_table = sql.Identifier(schema, "jobs")
    conn.execute(
        sql.SQL("UPDATE {} SET state = 'completed', finished_at = now() WHERE id = %s").format(
            jobs_table
        ),
        (job_id,),
    )
    conn.execute(
        sql.SQL("SELECT {}(ARRAY[%s]::bigint[], ARRAY['completed'])").format(
            sql.Identifier(schema, "settle_steps")
        ),
        (job_id,),
    )


def cancelled_after_running(app: App, observer: Connection, schema: str) -> tuple[int, int]:
    """a running; b, waiting for it, cancelled by hand."""
    wf = Workflow("w", app=app)
    a = wf.add("ok", name="a")
    wf.add("ok", name="b", after=[a])
    a_id, b = wf.enqueue(None)
    update_job(observer, schema, a_id, state="running", attempts=1, worker_id="w:1")
    cancel_jobs(app, [b])
    return a_id, b


def test_a_retry_that_waits_for_a_dependency_finishing_meanwhile_releases_the_step(
    app: App, tasks: Tasks, observer: Connection, schema: str, database_url: str
) -> None:
    a, b = cancelled_after_running(app, observer, schema)
    with psycopg.connect(database_url) as worker:
        # given: a's outcome is written, not committed yet (a's row is locked)
        finish_in_transaction(worker, schema, a)
        # when: b is retried meanwhile, it waits for a's row
        retried = ThreadPoolExecutor(1).submit(retry_jobs, app, [b])
        stays_true(lambda: not retried.done(), 0.3)
        worker.commit()
        assert retried.result(timeout=10) == [b]
    # then: the retry saw a completed
    assert states(observer, schema, a, b) == ["completed", "available"]


def test_a_dependency_finishing_while_its_step_is_retried_releases_the_step(
    app: App, tasks: Tasks, observer: Connection, schema: str, database_url: str
) -> None:
    a, b = cancelled_after_running(app, observer, schema)
    with psycopg.connect(database_url) as admin, Jobs(app, admin):
        # given: b is retried in a transaction not committed yet (a's row is locked)
        assert retry_jobs(app, [b]) == [b]
        assert job(admin, schema, b)["state"] == "blocked"
        # when: a's outcome is written meanwhile, it waits for the retry
        with psycopg.connect(database_url) as worker:
            finishing = ThreadPoolExecutor(1).submit(finish_in_transaction, worker, schema, a)
            stays_true(lambda: not finishing.done(), 0.3)
            admin.commit()
            finishing.result(timeout=10)
            worker.commit()
    # then: a's settle found b blocked and released it
    assert states(observer, schema, a, b) == ["completed", "available"]
    assert job(observer, schema, b)["waiting_for"] == 0


def test_bulk_retry_retries_a_chain_and_skips_a_step_whose_dependency_stays_failed(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str
) -> None:
    a, b, c = failed_chain(app, tasks, jobs)

    skipping = retry_matching(app, JobFilter(tasks=["ok"]))  # b and c, not a

    assert (skipping.changed, skipping.skipped) == (0, 2)
    assert states(observer, schema, a, b, c) == ["failed", "cancelled", "cancelled"]
    everything = retry_matching(app, JobFilter(), batch_size=2)
    assert (everything.changed, everything.skipped) == (3, 0)
    assert states(observer, schema, a, b, c) == ["available", "blocked", "blocked"]
    jobs.run(drain=True)
    assert tasks.ran == ["a", "b", "c"]


def test_retry_by_id_is_all_or_nothing_with_a_refused_step(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str
) -> None:
    a, b, c = failed_chain(app, tasks, jobs)
    plain = make_job(app, observer, state="failed", finished_at=ago())

    with pytest.raises(JobStateError) as refused:
        retry_jobs(app, [plain, c])

    assert list(refused.value.problems) == [c]
    assert "retry step 'b' first" in refused.value.problems[c]
    assert states(observer, schema, plain, a, b, c) == [
        "failed",
        "failed",
        "cancelled",
        "cancelled",
    ]


# --- rescue -------------------------------------------------------------------------------


def test_a_rescue_that_fails_a_step_settles_its_dependents_and_wakes_waiters(
    app: App, tasks: Tasks, observer: Connection, schema: str
) -> None:
    wf = Workflow("w", app=app)
    a = wf.add("ok", name="a", options={"max_attempts": 1})
    wf.add("ok", name="b", after=[a])
    wf.add("ok", name="report", after=[a], run_if="finished")
    a_id, b, report = wf.enqueue(None)
    # a's only attempt began on a worker that then fell silent
    update_job(
        observer, schema, a_id, state="running", attempts=1, worker_id="gone:1",
        started_at=ago(120), began_at=ago(120), heartbeat_at=ago(120),
    )  # fmt: skip
    listen(observer, results_channel(schema))

    rescued = app.data.maintenance.rescue(observer, rescue_after=30)

    assert rescued == [(a_id, "failed", True)]
    assert states(observer, schema, a_id, b, report) == ["failed", "cancelled", "available"]
    assert job(observer, schema, b)["errors"][-1]["error"] == (
        f"cancelled: dependency a (job {a_id}) failed"
    )
    assert notified(observer, results_channel(schema))


def test_cancelling_or_failing_a_plain_job_by_hand_or_by_rescue_wakes_result_waiters(
    app: App, observer: Connection, schema: str
) -> None:
    waiting = make_job(app, observer)
    lost = make_job(
        app, observer, state="running", attempts=1, max_attempts=1, worker_id="gone:1",
        began_at=ago(120), heartbeat_at=ago(120),
    )  # fmt: skip
    listen(observer, results_channel(schema))

    cancel_jobs(app, [waiting])
    assert notified(observer, results_channel(schema))
    assert app.data.maintenance.rescue(observer, rescue_after=30) == [(lost, "failed", True)]
    assert notified(observer, results_channel(schema))


# --- retention ----------------------------------------------------------------------------


def finished_long_ago(observer: Connection, schema: str, *ids: int) -> None:
    for job_id in ids:
        update_job(observer, schema, job_id, finished_at=ago(2 * DAY))


def workflows(observer: Connection, schema: str) -> list[int]:
    query = sql.SQL("SELECT id FROM {} ORDER BY id").format(sql.Identifier(schema, "workflows"))
    return [row[0] for row in observer.execute(query)]


def test_prune_keeps_a_workflows_finished_steps_until_every_step_has_finished(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str
) -> None:
    wf = Workflow("w", app=app)
    a = wf.add("ok", name="a")
    wf.add("ok", name="b", after=[a], options={"queue": "later"})
    a_id, b = wf.enqueue(None)
    plain = make_job(app, observer, **completed(finished_ago=2 * DAY))
    jobs.run(queues=["default"])
    finished_long_ago(observer, schema, a_id)

    # b has not run: a stays, so that b can read its result
    assert prune_jobs(app, DAY) == 1
    assert job_ids(observer, schema) == [a_id, b]
    # b finished just now: a goes, b stays for its own retention, and so does the workflow
    jobs.run(queues=["later"])
    assert prune_jobs(app, DAY) == 1
    assert job_ids(observer, schema) == [b]
    assert workflows(observer, schema) == [wf.id]
    # b's retention passes: the workflow goes with it
    finished_long_ago(observer, schema, b)
    assert prune_jobs(app, DAY) == 1
    assert job_ids(observer, schema) == [] and workflows(observer, schema) == []
    assert plain not in job_ids(observer, schema)


def test_prune_reaches_steps_behind_more_kept_steps_than_a_batch(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str
) -> None:
    # given: the oldest finished steps belong to an unfinished workflow, more than a batch
    busy = Workflow("busy", app=app)
    kept = [busy.add("ok", name=f"k{n}") for n in range(3)]
    busy.add("ok", name="last", after=kept, options={"queue": "later"})
    done = Workflow("done", app=app)
    done.add("ok", name="only")
    *kept_ids, last = busy.enqueue(None)
    [only] = done.enqueue(None)
    jobs.run(queues=["default"])
    finished_long_ago(observer, schema, *kept_ids)
    update_job(observer, schema, only, finished_at=ago(DAY + 60))

    deleted = prune_jobs(app, DAY, batch_size=2)

    assert deleted == 1
    assert job_ids(observer, schema) == [*kept_ids, last]
    assert workflows(observer, schema) == [busy.id]


def test_the_workers_retention_keeps_unfinished_workflows_too(
    app: App, tasks: Tasks, jobs: Jobs, observer: Connection, schema: str, database_url: str
) -> None:
    wf = Workflow("w", app=app)
    a = wf.add("ok", name="a")
    wf.add("ok", name="b", after=[a], options={"queue": "later"})
    a_id, b = wf.enqueue(None)
    jobs.run(queues=["default"])
    finished_long_ago(observer, schema, a_id)
    connection = ResilientConnection(database_url, "maintenance")
    try:
        retention = Retention(
            connection, app.data.maintenance, RetentionPolicy(), history=app.data.history
        )
        assert retention.run_once() == {"completed": 0, "failed": 0, "cancelled": 0}
        jobs.run(queues=["later"])
        finished_long_ago(observer, schema, b)
        assert retention.run_once() == {"completed": 2, "failed": 0, "cancelled": 0}
    finally:
        connection.close()
    assert job_ids(observer, schema) == [] and workflows(observer, schema) == []


# --- showing workflows --------------------------------------------------------------------


@pytest.fixture
def shown(app: App, tasks: Tasks, jobs: Jobs) -> Workflow:
    """fetch (completed, result {"n": 3}) -> boom (failed) -> load (cancelled); report
    after both (run_if finished, completed)."""
    tasks.failing.add("boom")
    wf = Workflow("import-42", app=app)
    fetch = wf.add("ok", name="fetch", n=3)
    boom = wf.add("flaky", name="boom", after=[fetch])
    wf.add("ok", name="load", after=[boom])
    wf.add("ok", name="report", after=[fetch, boom], run_if="finished")
    wf.enqueue(None)
    jobs.run(drain=True)
    return wf


def test_show_prints_a_steps_workflow_dependencies_and_result(cli: Any, shown: Workflow) -> None:
    fetch, boom, load, _ = (step.job_id for step in shown.steps)

    result = cli("show", str(load))
    fetched = cli("show", str(fetch))

    assert result.code == 0, result.err
    assert f"workflow_id   {shown.id}\n" in result.out
    assert "step          load\n" in result.out
    assert "run_if        completed\n" in result.out
    assert f"depends_on    {boom} boom (failed)\n" in result.out
    assert f"cancelled: dependency boom (job {boom}) failed" in result.out
    assert "result" not in result.out  # none stored
    assert 'result        {"n": 3}\n' in fetched.out
    assert "depends_on" not in fetched.out  # a first step
    as_json = json.loads(cli("show", str(load), "--json").out)
    assert (as_json["workflow_id"], as_json["step"], as_json["run_if"]) == (
        shown.id,
        "load",
        "completed",
    )
    assert as_json["depends_on"] == [boom]
    assert json.loads(cli("show", str(fetch), "--json").out)["result"] == {"n": 3}


def test_show_of_a_plain_job_has_no_workflow_lines(cli: Any, app: App) -> None:
    plain = app.enqueue(None, "ok", {})

    out = cli("show", str(plain)).out

    assert not any(name in out for name in ("workflow_id", "depends_on", "run_if", "result"))


def test_workflow_command_shows_each_step_and_counts_by_state(cli: Any, shown: Workflow) -> None:
    fetch, boom, load, report = (step.job_id for step in shown.steps)

    result = cli("workflow", str(shown.id))

    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0].startswith(f"workflow {shown.id} 'import-42', enqueued ")
    assert lines[0].endswith(": 4 steps: 2 completed, 1 failed, 1 cancelled")
    rows = {line.split()[0]: line.split() for line in lines[1:] if line.split()}
    assert rows["fetch"][:5] == ["fetch", str(fetch), "ok", "completed", "-"]
    assert rows["boom"][:6] == ["boom", str(boom), "flaky", "failed", "fetch", "1/1"]
    assert rows["load"][:6] == ["load", str(load), "ok", "cancelled", "boom", "0/20"]
    assert f"cancelled: dependency boom (job {boom}) failed" in " ".join(rows["load"])
    assert rows["report"][:7] == ["report", str(report), "ok", "completed", "fetch,", "boom", "(if"]


def test_workflow_json_lists_the_steps_with_their_dependencies_and_results(
    cli: Any, shown: Workflow
) -> None:
    fetch, boom, _, report = (step.job_id for step in shown.steps)

    graph = json.loads(cli("workflow", str(shown.id), "--json").out)

    assert (graph["id"], graph["name"]) == (shown.id, "import-42")
    assert graph["counts"] == {"completed": 2, "failed": 1, "cancelled": 1}
    steps = {step["step"]: step for step in graph["steps"]}
    assert list(steps) == ["fetch", "boom", "load", "report"]
    assert steps["report"]["id"] == report
    assert steps["fetch"]["result"] == {"n": 3}
    assert (steps["report"]["depends_on"], steps["report"]["after"]) == (
        [fetch, boom],
        ["fetch", "boom"],
    )
    assert (steps["report"]["run_if"], steps["boom"]["last_error"]) == (
        "finished",
        "pgjobs.errors.FailJob: boom broke",
    )


def test_workflow_of_an_unknown_id_is_one_line(cli: Any, app: App) -> None:
    result = cli("workflow", "404")

    assert (result.code, result.out) == (1, "")
    assert result.err == "pgjobs: error: no workflow with id 404\n"
    with pytest.raises(JobNotFoundError):
        get_workflow(app, 2**63)


def test_list_workflow_lists_only_its_steps(cli: Any, app: App, shown: Workflow) -> None:
    app.enqueue(None, "ok", {})
    other = Workflow("other", app=app)
    other.add("ok")
    other.enqueue(None)

    listed = json.loads(cli("list", "--workflow", str(shown.id), "--json").out)

    assert [j["step"] for j in listed] == ["report", "load", "boom", "fetch"]
    table = cli("list", "--workflow", str(shown.id)).out.splitlines()
    column = table[0].split().index("step")
    assert [line.split()[column] for line in table[2:]] == ["report", "load", "boom", "fetch"]
    assert list_jobs(app, workflow_id=2**63) == []
