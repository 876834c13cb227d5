"""`PgjobsBackend`: Django's Tasks framework (Django 6, or the backport on 5.2) on pgjobs.

The tasks are tests/django_site/tasks.py's; the workers real `manage.py pgjobs_work`
processes. Every error checked is the framework's own class, under its name in the
installed framework.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest
from asgiref.sync import async_to_sync

from tests.django_site.workers import StartDjangoWorker
from tests.helpers import create_runs_table, job, jobs, runs, stays_true, wait_until

Connection = psycopg.Connection[Any]
# The backport's names of Django 6's exceptions.
BACKPORT_NAMES = {
    "InvalidTask": "InvalidTaskError",
    "InvalidTaskBackend": "InvalidTaskBackendError",
}
# django_project, django_schema and start_django_worker.
pytest_plugins = ["tests.django_site.fixtures"]


def framework(name: str) -> Any:
    """A name of the installed framework: Django 6's `django.tasks`, else the backport's
    (whose exceptions end in Error)."""
    try:
        import django.tasks as tasks
        import django.tasks.exceptions as exceptions
        import django.tasks.signals as signals
    except ImportError:
        import django_tasks as tasks
        import django_tasks.exceptions as exceptions
        import django_tasks.signals as signals

        name = BACKPORT_NAMES.get(name, name)
    [home] = [module for module in (tasks, exceptions, signals) if hasattr(module, name)][:1]
    return getattr(home, name)


def finished(result: Any) -> bool:
    """Refresh a TaskResult; whether it has finished."""
    result.refresh()
    return bool(result.is_finished)


@pytest.fixture
def runs_table(django_schema: str, observer: Connection) -> str:
    create_runs_table(observer, django_schema)
    return django_schema


def test_the_backend_says_what_it_supports(django_schema: str) -> None:
    backend = framework("task_backends")["default"]
    assert type(backend).__name__ == "PgjobsBackend"
    assert backend.supports_defer  # run_after: test_priority_queue_and_run_after_are_honoured
    assert backend.supports_async_task  # test_a_task_runs_and_its_result_is_read_back
    assert backend.supports_get_result  # the same
    assert backend.supports_priority  # test_priority_queue_and_run_after_are_honoured


def test_a_task_enqueues_in_the_current_transaction(
    django_schema: str, observer: Connection
) -> None:
    from django.db import transaction

    from tests.django_site.tasks import add

    enqueued: list[Any] = []

    def received(sender: Any, task_result: Any, **kwargs: Any) -> None:
        enqueued.append(task_result)

    framework("task_enqueued").connect(received)  # held weakly: until the test ends
    # when: a task enqueued in a block that rolls back, then in one that commits
    with pytest.raises(RuntimeError), transaction.atomic():
        add.enqueue(1, 2)
        raise RuntimeError
    with transaction.atomic():
        result = add.enqueue(3, b=4)
        assert jobs(observer, django_schema) == []  # not before the commit
        with pytest.raises(framework("TaskResultDoesNotExist")):
            add.get_result(result.id)  # results are read as workers see them: committed
    # then: one job, the committed one, which the result names
    [row] = jobs(observer, django_schema)
    assert result.id == str(row["id"])
    assert result.status == framework("TaskResultStatus").READY
    assert (row["task"], row["payload"]) == (
        "tests.django_site.tasks.add",
        {"args": [3], "kwargs": {"b": 4}},
    )
    assert (row["queue"], row["priority"], row["state"]) == ("default", 0, "available")
    # then: the framework's signal was sent for each enqueue, the rolled back one too
    assert [sent.args for sent in enqueued] == [[1, 2], [3]]
    # then: the async form reads it as well
    again = async_to_sync(add.aget_result)(result.id)
    assert (again.status, again.kwargs) == (result.status, {"b": 4})


def test_priority_queue_and_run_after_go_into_the_job(
    django_schema: str, observer: Connection
) -> None:
    from tests.django_site.tasks import add

    later = datetime.now(timezone.utc) + timedelta(hours=1)
    # when: a task enqueued with the framework's options
    result = add.using(priority=7, queue_name="mail", run_after=later).enqueue(1, 1)
    # then: they are the job's, and the result read back has them
    row = job(observer, django_schema, int(result.id))
    assert (row["priority"], row["queue"], row["run_at"]) == (7, "mail", later)
    again = add.get_result(result.id)
    assert (again.task.priority, again.task.queue_name, again.task.run_after) == (7, "mail", later)
    assert again.status == framework("TaskResultStatus").READY
    assert (again.args, again.kwargs) == ([1, 1], {})


def test_bad_input_raises_the_frameworks_errors(django_schema: str, observer: Connection) -> None:
    from tests.django_site.tasks import add, note

    task, invalid = framework("task"), framework("InvalidTask")
    # a task that is not a module-level function
    with pytest.raises(invalid, match="module level"):

        @task
        def inner() -> None: ...

    # arguments that are not JSON
    with pytest.raises(TypeError, match="Unsupported type"):
        add.enqueue({1, 2}, 3)
    with pytest.raises(TypeError, match="Unsupported type"):
        add.enqueue(1, b=object())
    # options the framework refuses
    with pytest.raises(invalid, match="Queue 'elsewhere' is not valid"):
        add.using(queue_name="elsewhere")
    with pytest.raises(invalid, match="priority must be a whole number"):
        add.using(priority=101)
    with pytest.raises(invalid, match="run_after must be an aware datetime"):
        add.using(run_after=datetime(2030, 1, 1))
    # results that do not exist: not an id, no such job, a job that is no Django task's
    missing = framework("TaskResultDoesNotExist")
    from django.db import connection

    pgjobs_job = note.enqueue(connection, label="not a Django task")
    for result_id in ("not-a-number", "999999999", str(pgjobs_job)):
        with pytest.raises(missing):
            add.get_result(result_id)
    # nothing was enqueued but the pgjobs job
    assert [row["id"] for row in jobs(observer, django_schema)] == [pgjobs_job]


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"RETRIES": 3}, "backend has no OPTIONS RETRIES (it knows DATABASE, MAX_ATTEMPTS)"),
        ({"MAX_ATTEMPTS": 0}, "OPTIONS MAX_ATTEMPTS must be a whole number >= 1, got 0"),
        ({"DATABASE": "nowhere"}, "OPTIONS DATABASE 'nowhere' is not in DATABASES"),
    ],
)
def test_an_option_pgjobs_does_not_support_is_refused(
    django_schema: str, options: dict[str, Any], error: str
) -> None:
    from django.test import override_settings

    backend = {"BACKEND": "pgjobs.contrib.django.PgjobsBackend", "OPTIONS": options}
    with (
        override_settings(TASKS={"default": backend}),
        pytest.raises(framework("InvalidTaskBackend")) as raised,
    ):
        framework("task_backends")["default"]
    assert error in str(raised.value)


def test_with_a_queue_database_of_its_own_the_job_is_committed_at_once(
    django_schema: str, database_url: str, observer: Connection
) -> None:
    from django.db import transaction
    from django.test import override_settings

    from tests.django_site.tasks import add

    # given: PGJOBS_DATABASE_URL (here the same server, named by URL)
    backend = {"BACKEND": "pgjobs.contrib.django.PgjobsBackend"}
    queue_database = override_settings(PGJOBS_DATABASE_URL=database_url, TASKS={"default": backend})
    # when: the block rolls back
    with queue_database, pytest.raises(RuntimeError), transaction.atomic():
        result = add.enqueue(1, 2)
        raise RuntimeError
    # then: the job, enqueued on pgjobs' own connection, stays
    assert [str(row["id"]) for row in jobs(observer, django_schema)] == [result.id]


def test_a_task_runs_and_its_result_is_read_back(
    runs_table: str, observer: Connection, start_django_worker: StartDjangoWorker
) -> None:
    from tests.django_site.tasks import add, multiply, pair

    status = framework("TaskResultStatus")
    # given: a task, an async one, and one whose value JSON changes
    added, multiplied, paired = add.enqueue(2, 3), multiply.enqueue(6, 7), pair.enqueue(1, 2)
    assert not added.is_finished
    # when: a worker runs them
    worker = start_django_worker()
    for result in (added, multiplied, paired):
        wait_until(lambda result=result: finished(result), message=worker.describe)
    # then: refresh() and get_result() read their state and stored value
    assert (added.status, added.return_value) == (status.SUCCESSFUL, 5)
    assert (multiplied.status, multiplied.return_value) == (status.SUCCESSFUL, 42)
    assert paired.return_value == [1, 2]
    again = add.get_result(added.id)
    assert (again.status, again.return_value, again.attempts, again.errors) == (
        status.SUCCESSFUL,
        5,
        1,
        [],
    )
    assert again.enqueued_at <= again.started_at <= again.finished_at
    # then: the framework's task_finished signal was sent for each
    wait_until(lambda: len(runs(observer, runs_table)) == 3, message=worker.describe)
    assert sorted(run["label"] for run in runs(observer, runs_table)) == [
        "add SUCCESSFUL",
        "multiply SUCCESSFUL",
        "pair SUCCESSFUL",
    ]


def test_a_pending_retry_is_ready_with_its_error_then_the_task_succeeds(
    runs_table: str, start_django_worker: StartDjangoWorker
) -> None:
    from tests.django_site.tasks import flaky

    status = framework("TaskResultStatus")
    worker = start_django_worker()
    # when: the first attempt raises (PGJOBS_APP retries 2 s later)
    result = flaky.enqueue("import")
    wait_until(lambda: result.refresh() or result.errors, message=worker.describe)
    # then: the job waits for its retry: READY, with the first attempt's error
    assert result.status == status.READY
    [error] = result.errors
    assert error.exception_class is ValueError
    assert "ValueError: import: the first attempt fails" in error.traceback
    # then: the second attempt succeeds, and its context knew the first
    wait_until(lambda: finished(result), message=worker.describe)
    assert result.status == status.SUCCESSFUL
    assert result.return_value == {"id": result.id, "attempt": 2, "errors": 1}
    assert result.attempts == 2


def test_a_task_out_of_attempts_fails_with_its_exception(
    runs_table: str, observer: Connection, start_django_worker: StartDjangoWorker
) -> None:
    from tests.django_site.tasks import broken

    # given: the "once" backend, OPTIONS MAX_ATTEMPTS 1
    result = broken.enqueue("disk on fire")
    assert job(observer, runs_table, int(result.id))["max_attempts"] == 1
    # when: its one attempt raises
    worker = start_django_worker()
    wait_until(lambda: finished(result), message=worker.describe)
    # then: FAILED, with the exception's class and traceback; no return value
    assert result.status == framework("TaskResultStatus").FAILED
    [error] = result.errors
    assert error.exception_class is OSError
    assert "OSError: disk on fire" in error.traceback
    with pytest.raises(ValueError, match="Task failed"):
        result.return_value  # noqa: B018
    wait_until(lambda: runs(observer, runs_table), message=worker.describe)
    assert [run["label"] for run in runs(observer, runs_table)] == ["broken FAILED"]


def test_priority_queue_and_run_after_are_honoured(
    runs_table: str, observer: Connection, start_django_worker: StartDjangoWorker
) -> None:
    from tests.django_site.tasks import run

    # given: jobs of several priorities, one in another queue, one for later
    later = datetime.now(timezone.utc) + timedelta(seconds=3)
    delayed = run.using(run_after=later).enqueue("later")
    run.using(priority=-5).enqueue("low")
    run.using(priority=5).enqueue("high")
    elsewhere = run.using(queue_name="slow").enqueue("slow queue")
    # when: a worker of one thread serves the default queue
    worker = start_django_worker("--concurrency", "1", "--queues", "default")

    def ran() -> list[str]:
        return [r["label"] for r in runs(observer, runs_table) if r["attempt"] is not None]

    wait_until(lambda: len(ran()) == 3, timeout=15, message=worker.describe)
    # then: the higher priority first, the delayed one not before its time, the other
    # queue's job not at all
    assert ran() == ["high", "low", "later"]
    [later_run] = [r for r in runs(observer, runs_table) if r["label"] == "later"]
    assert later_run["at"] >= later
    delayed.refresh()
    assert delayed.started_at >= later
    stays_true(lambda: not finished(elsewhere), 0.5)
    assert elsewhere.status == framework("TaskResultStatus").READY
