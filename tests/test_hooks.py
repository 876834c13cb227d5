"""Hooks and middleware in-process, on a real database: `job_enqueued` and enqueue
middleware for every way of enqueueing, `jobs.meta`, inline runs (`pgjobs.testing`),
and the contract's edges (unknown events, a middleware that never calls call_next)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

import pgjobs
from pgjobs import App, Event, InvalidJobError, JobInfo, MiddlewareError
from pgjobs.testing import Jobs
from tests.helpers import run_cli, wait_until

Connection = psycopg.Connection[Any]


@pytest.fixture
def seen(app: App) -> list[Event]:
    """Every job_enqueued event of `app`, in order."""
    events: list[Event] = []
    app.on("job_enqueued")(events.append)
    return events


def meta_of(conn: Connection, schema: str, job_id: int) -> Any:
    row = conn.execute(f'SELECT meta FROM "{schema}".jobs WHERE id = %s', (job_id,)).fetchone()
    assert row is not None
    return row[0]


def test_job_enqueued_fires_once_per_inserted_job_and_not_for_a_held_unique_key(
    app: App, test_conn: Connection, seen: list[Event]
) -> None:
    first = app.enqueue(test_conn, "t.a", {"x": 1}, unique_key="k")
    again = app.enqueue(test_conn, "t.a", {"x": 2}, unique_key="k")
    ids = app.enqueue_many(
        test_conn, [("t.b", {"n": n}, {"unique_key": f"u{n % 2}"}) for n in range(4)]
    )

    assert again == first
    assert ids[2:] == ids[:2]  # the last two found the first two's keys held
    assert [(e.name, e.job.id, e.job.task, e.job.args) for e in seen if e.job] == [
        ("job_enqueued", first, "t.a", {"x": 1}),
        ("job_enqueued", ids[0], "t.b", {"n": 0}),
        ("job_enqueued", ids[1], "t.b", {"n": 1}),
    ]
    assert all(e.job and e.job.attempt == 0 and e.worker_id is None for e in seen)


def test_enqueue_middleware_sets_meta_for_every_way_of_enqueueing(
    app: App, test_conn: Connection, schema: str
) -> None:
    @app.enqueue_middleware
    def tenant(jobs: list[JobInfo]) -> None:
        for job in jobs:
            job.meta["tenant"] = "acme"

    single = app.enqueue(test_conn, "t.a", {}, meta={"request_id": "r1"})
    small = app.enqueue_many(test_conn, [("t.a", {})] * 3)
    large = app.enqueue_many(test_conn, [("t.a", {"n": n}) for n in range(250)])  # by COPY
    workflow = pgjobs.Workflow("wf", app=app)
    step = workflow.add("t.a", name="one")
    workflow.add("t.b", after=[step])
    steps = workflow.enqueue(test_conn)

    assert meta_of(test_conn, app.schema, single) == {"request_id": "r1", "tenant": "acme"}
    for job_id in [*small, large[0], large[-1], *steps]:
        assert meta_of(test_conn, app.schema, job_id) == {"tenant": "acme"}


def test_a_generator_enqueue_middleware_wraps_the_write(app: App, test_conn: Connection) -> None:
    trail: list[Any] = []

    @app.enqueue_middleware
    def around(jobs: list[JobInfo]) -> Iterator[None]:
        trail.append(("before", [job.id for job in jobs]))
        try:
            yield
        except Exception as error:
            trail.append(("failed", type(error).__name__))
            raise
        trail.append(("after", [job.id for job in jobs]))

    ids = app.enqueue_many(test_conn, [("t.a", {}), ("t.b", {})])
    assert trail == [("before", [None, None]), ("after", ids)]

    trail.clear()
    with pytest.raises(psycopg.errors.DivisionByZero):
        test_conn.execute("SELECT 1 / 0")
    with pytest.raises(psycopg.errors.InFailedSqlTransaction):
        app.enqueue(test_conn, "t.a", {})  # the write fails: the transaction is aborted
    assert trail == [("before", [None]), ("failed", "InFailedSqlTransaction")]
    test_conn.rollback()


def test_an_enqueue_middleware_error_writes_nothing(
    app: App, test_conn: Connection, seen: list[Event]
) -> None:
    @app.enqueue_middleware
    def refuse(jobs: list[JobInfo]) -> None:
        if any(job.args.get("forbidden") for job in jobs):
            raise PermissionError("not for this tenant")

    kept = app.enqueue(test_conn, "t.a", {})
    with pytest.raises(PermissionError):
        app.enqueue_many(test_conn, [("t.a", {}), ("t.a", {"forbidden": True})])

    count = test_conn.execute(f'SELECT count(*) FROM "{app.schema}".jobs').fetchone()
    assert count == (1,)
    assert [e.job.id for e in seen if e.job] == [kept]


def test_bad_meta_is_refused_before_anything_is_written(app: App, test_conn: Connection) -> None:
    with pytest.raises(InvalidJobError, match=r"meta of a job of task 't\.a' is not JSON"):
        app.enqueue(test_conn, "t.a", {}, meta={"when": object()})
    with pytest.raises(InvalidJobError, match="must be a dict with string keys"):
        app.enqueue(test_conn, "t.a", {}, meta={1: "x"})  # type: ignore[dict-item]
    with pytest.raises(InvalidJobError, match="over the limit of 65536"):
        app.enqueue(test_conn, "t.a", {}, meta={"blob": "x" * 70_000})

    @app.enqueue_middleware
    def unstorable(jobs: list[JobInfo]) -> None:
        jobs[0].meta["bad"] = {1, 2}

    with pytest.raises(InvalidJobError, match="not JSON-serialisable"):
        app.enqueue(test_conn, "t.a", {})
    count = test_conn.execute(f'SELECT count(*) FROM "{app.schema}".jobs').fetchone()
    assert count == (0,)


def test_unknown_events_and_wrong_registrations_raise_at_once(app: App) -> None:
    with pytest.raises(ValueError, match="unknown event 'job_finished'; the events are"):
        app.on("job_finished")
    with pytest.raises(TypeError, match="must be callable"):
        app.middleware("not a function")  # type: ignore[arg-type]

    async def async_enqueue_middleware(jobs: list[JobInfo]) -> None:
        pass

    with pytest.raises(TypeError, match="plain function or a generator function"):
        app.enqueue_middleware(async_enqueue_middleware)


def test_async_enqueue_awaits_async_hooks_and_runs_enqueue_middleware(
    app: App, database_url: str
) -> None:
    heard: list[tuple[int | None, dict[str, Any]]] = []

    @app.on("job_enqueued")
    async def note(event: Event) -> None:
        await asyncio.sleep(0)
        assert event.job is not None
        heard.append((event.job.id, event.job.meta))

    @app.enqueue_middleware
    def tag(jobs: list[JobInfo]) -> None:
        for job in jobs:
            job.meta["via"] = "async"

    async def main() -> list[int]:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            one = await app.enqueue_async(conn, "t.a", {})
            many = await app.enqueue_many_async(conn, [("t.a", {}), ("t.a", {})])
            await conn.rollback()
            return [one, *many]

    ids = asyncio.run(main())
    assert heard == [(job_id, {"via": "async"}) for job_id in ids]


def test_inline_runs_call_hooks_and_middleware_in_the_tests_thread(
    app: App, test_conn: Connection
) -> None:
    calls: list[str] = []

    @app.task(name="t.double")
    def double(n: int) -> int:
        calls.append("task")
        return n * 2

    @app.task(name="t.async_double")
    async def async_double(n: int) -> int:
        calls.append("async task")
        return n * 2

    @app.middleware
    def wrap(job: JobInfo, call_next: Callable[[], Any]) -> Any:
        calls.append(f"mw {job.task} {job.args} {job.meta}")
        value = call_next()
        calls.append(f"mw got {value}")
        return value

    @app.middleware
    async def async_wrap(job: JobInfo, call_next: Callable[[], Any]) -> Any:
        calls.append(f"async mw {job.task}")
        return await call_next()

    @app.on("job_completed")
    def done(event: Event) -> None:
        assert event.job is not None and event.duration is not None
        calls.append(f"completed {event.job.task} attempt {event.job.attempt}")

    with Jobs(app, test_conn) as jobs:
        double.options(meta={"k": "v"}).enqueue(test_conn, n=2)
        jobs.run()
        async_double.enqueue(test_conn, n=3)
        jobs.run()

    assert calls == [
        "mw t.double {'n': 2} {'k': 'v'}",
        "task",
        "mw got 4",
        "completed t.double attempt 1",
        "async mw t.async_double",
        "async task",
        "completed t.async_double attempt 1",
    ]


def test_a_middleware_that_never_calls_call_next_fails_the_attempt(
    app: App, test_conn: Connection
) -> None:
    ran: list[int] = []

    @app.task(name="t.work", max_attempts=2)
    def work() -> None:
        ran.append(1)

    @app.middleware
    def forgetful(job: JobInfo, call_next: Callable[[], Any]) -> Any:
        return "skipped"

    failures: list[Event] = []
    app.on("job_retried")(failures.append)

    with Jobs(app, test_conn) as jobs:
        job_id = work.enqueue(test_conn)
        result = jobs.run()
        job = jobs.get(job_id)

    assert ran == []  # the task never ran, and the job is not counted done
    assert result.counts == {"retried": 1}
    assert job.state == "available"
    assert "returned without calling call_next()" in (job.last_error or "")
    assert "test_hooks" in (job.last_error or "")  # the middleware is named
    assert isinstance(failures[0].exception, MiddlewareError)


def test_a_raising_hook_changes_no_outcome(
    app: App, test_conn: Connection, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task(name="t.fine")
    def fine() -> str:
        return "ok"

    @app.on("job_started")
    @app.on("job_completed")
    def broken(event: Event) -> None:
        raise RuntimeError("hook bug")

    @app.on("job_enqueued")
    def broken_too(event: Event) -> None:
        raise RuntimeError("producer hook bug")

    with Jobs(app, test_conn) as jobs:
        job_id = fine.enqueue(test_conn)
        result = jobs.run()
        assert jobs.get(job_id).state == "completed"
    assert result.counts == {"completed": 1}
    failed = [r for r in caplog.records if r.getMessage() == "hook failed"]
    assert [r.event for r in failed] == ["job_enqueued", "job_started", "job_completed"]
    assert all(r.hook.endswith(("broken", "broken_too")) for r in failed)


def test_show_prints_the_jobs_meta(
    app: App, capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    job_id = app.enqueue(None, "t.a", {}, meta={"tenant": "acme", "ids": [1, 2]})
    plain = app.enqueue(None, "t.a", {})

    shown = run_cli(capsys, database_url, schema, "show", str(job_id))
    assert shown.code == 0
    assert 'meta          {"ids": [1, 2], "tenant": "acme"}' in shown.out  # jsonb's order
    as_json = run_cli(capsys, database_url, schema, "show", str(job_id), "--json")
    assert '"meta": {' in as_json.out
    assert "meta" not in run_cli(capsys, database_url, schema, "show", str(plain)).out


def test_the_cli_enqueues_with_meta_and_refuses_bad_meta(
    app: App, capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    done = run_cli(capsys, database_url, schema, "enqueue", "t.a", "--meta", '{"tenant": "x"}')
    assert done.code == 0
    job_id = int(done.out)
    with psycopg.connect(database_url) as conn:
        assert meta_of(conn, schema, job_id) == {"tenant": "x"}

    for bad, says in (("[1]", "--meta must be a JSON object"), ("{", "--meta is not valid JSON")):
        refused = run_cli(capsys, database_url, schema, "enqueue", "t.a", "--meta", bad)
        assert refused.code != 0
        assert says in refused.err
        assert "Traceback" not in refused.err


def test_a_hung_hook_is_named_in_the_log_and_events_beyond_the_bound_are_dropped(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import threading
    import time

    from pgjobs.hooks import Hooks
    from pgjobs.worker import hook_dispatch
    from pgjobs.worker.events import EventBus

    monkeypatch.setattr(hook_dispatch, "SLOW_HOOK", 0.05)
    monkeypatch.setattr(hook_dispatch, "MAX_WAITING", 3)
    release = threading.Event()
    handled: list[str] = []
    hooks = Hooks()

    @hooks.on("worker_started")
    def stuck(event: Event) -> None:
        handled.append(event.name)
        release.wait(10)

    dispatcher = hook_dispatch.HookDispatcher(hooks, EventBus())
    dispatcher.start()
    dispatcher.send(Event("worker_started", worker_id="w"))
    wait_until(lambda: handled, timeout=5)
    time.sleep(0.1)  # the handler has now run longer than SLOW_HOOK: time must pass
    for _ in range(5):  # 3 wait, 2 are dropped
        dispatcher.send(Event("worker_started", worker_id="w"))

    slow = [r for r in caplog.records if r.getMessage().startswith("a hook is slow")]
    assert len(slow) == 1 and slow[0].hook.endswith("stuck")
    assert dispatcher.dropped == 2
    assert any(r.getMessage().startswith("hook events dropped") for r in caplog.records)
    release.set()
    assert dispatcher.close(5) is False  # all that waited was handled, but 2 were dropped
    assert handled == ["worker_started"] * 4
