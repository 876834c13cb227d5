"""`pgjobs retry` and `pgjobs cancel` by filter: in batches, counted, confirmed."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from typing import Any

import psycopg
import pytest

from pgjobs import App, ConfigurationError
from pgjobs.admin import (
    JobFilter,
    cancel_matching,
    change_selected,
    retry_matching,
    select_jobs,
)
from tests.helpers import (
    REPO_ROOT,
    ago,
    cancelled,
    completed,
    failed,
    job,
    make_job,
    run_cli,
    running,
    update_job,
)

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def cli(capsys: Capsys, database_url: str, schema: str) -> Any:
    def run(*args: str) -> Any:
        return run_cli(capsys, database_url, schema, *args)

    return run


def states(observer: psycopg.Connection[Any], schema: str, ids: list[int]) -> list[str]:
    return [job(observer, schema, job_id)["state"] for job_id in ids]


def test_retry_by_task_changes_only_that_tasks_failed_and_cancelled_jobs(
    app: App, observer: psycopg.Connection[Any], schema: str, cli: Any
) -> None:
    mine = [
        make_job(app, observer, task="a", **failed()),
        make_job(app, observer, task="a", **cancelled()),
    ]
    others = [
        make_job(app, observer, task="b", **failed()),
        make_job(app, observer, task="a", **completed()),
    ]

    result = cli("retry", "--task", "a", "--yes")

    assert (result.code, result.out) == (0, "retried 2 jobs\n"), result.err
    assert states(observer, schema, mine) == ["available", "available"]
    assert states(observer, schema, others) == ["failed", "completed"]


def test_cancel_by_queue_and_age_leaves_younger_and_other_jobs(
    app: App, observer: psycopg.Connection[Any], schema: str, cli: Any
) -> None:
    old = [
        make_job(app, observer, queue="mail", created_at=ago(7200)),
        make_job(app, observer, queue="mail", created_at=ago(7200), **running()),
    ]
    young = make_job(app, observer, queue="mail")
    elsewhere = make_job(app, observer, queue="default", created_at=ago(7200))

    result = cli("cancel", "--queue", "mail", "--older-than", "1h", "--yes")

    assert (result.code, result.out) == (0, "cancelled 2 jobs\n"), result.err
    assert states(observer, schema, old) == ["cancelled", "cancelled"]
    assert states(observer, schema, [young, elsewhere]) == ["available", "available"]


def test_cancel_by_state_changes_only_that_state(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    waiting = make_job(app, observer)
    busy = make_job(app, observer, **running())

    changed = cancel_matching(app, JobFilter(states=["running"]))

    assert (changed.changed, changed.skipped) == (1, 0)
    assert states(observer, schema, [waiting, busy]) == ["available", "cancelled"]


def test_a_bulk_change_works_in_batches_until_every_job_is_done(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    ids = [make_job(app, observer, **failed()) for _ in range(7)]

    changed = retry_matching(app, JobFilter(), batch_size=2)

    assert (changed.changed, changed.skipped) == (7, 0)
    assert set(states(observer, schema, ids)) == {"available"}


def test_jobs_enqueued_after_the_count_are_left_alone(
    app: App, observer: psycopg.Connection[Any], schema: str
) -> None:
    counted = make_job(app, observer, queue="mail")
    selection = select_jobs(app, "cancel", JobFilter(queues=["mail"]))
    later = make_job(app, observer, queue="mail")

    changed = change_selected(app, selection)

    assert selection.count == 1
    assert changed.changed == 1
    assert states(observer, schema, [counted, later]) == ["cancelled", "available"]


def test_retry_leaves_a_job_whose_unique_key_is_taken(
    app: App, observer: psycopg.Connection[Any], schema: str, cli: Any
) -> None:
    first = make_job(app, observer, unique_key="k", **failed())
    second = make_job(app, observer, unique_key="k", **failed())
    holder_free = make_job(app, observer, **failed())

    result = cli("retry", "--state", "failed", "--yes")

    assert result.code == 0, result.err
    assert result.out.startswith("retried 2 jobs; 1 job left as they were (their unique_key")
    assert states(observer, schema, [first, second, holder_free]) == [
        "available",
        "failed",
        "available",
    ]


def test_no_match_changes_nothing_and_says_so(
    app: App, observer: psycopg.Connection[Any], cli: Any
) -> None:
    make_job(app, observer, task="a", **failed())

    result = cli("retry", "--task", "nope", "--yes")

    assert (result.code, result.out) == (
        0,
        "no failed or cancelled jobs of task 'nope': nothing retried\n",
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("retry",), "give the ids of the jobs to retry, or filters"),
        (("cancel", "1", "--queue", "q"), "give job ids or filters to cancel, not both"),
        (("retry", "--state", "completed"), "retry applies to failed or cancelled jobs"),
        (("cancel", "--state", "failed"), "cancel applies to available, running or blocked jobs"),
        (("cancel", "--state", "bogus"), "unknown state 'bogus'"),
        (("cancel", "--queue", "q", "--older-than", "soon"), "--older-than takes seconds"),
    ],
)
def test_bad_filters_are_one_line_errors(cli: Any, args: tuple[str, ...], message: str) -> None:
    result = cli(*args)

    assert result.code == 1
    assert len(result.err.splitlines()) == 1, result.err
    assert result.err.startswith(f"pgjobs: error: {message}"), result.err


def test_the_api_refuses_a_negative_age(app: App) -> None:
    with pytest.raises(ConfigurationError):
        select_jobs(app, "retry", JobFilter(older_than_seconds=-1))


def test_a_terminal_is_asked_to_confirm_and_no_changes_nothing(
    app: App, observer: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    job_id = make_job(app, observer, queue="mail")
    update_job(observer, schema, job_id, created_at=ago(10))

    output, code = run_on_terminal(
        ["cancel", "--queue", "mail", "--database-url", database_url, "--schema", schema],
        answer="n\n",
    )

    assert "cancel 1 available, running or blocked job in queue 'mail'? [y/N]" in output
    assert code == 130
    assert job(observer, schema, job_id)["state"] == "available"

    output, code = run_on_terminal(
        ["cancel", "--queue", "mail", "--database-url", database_url, "--schema", schema],
        answer="y\n",
    )

    assert code == 0, output
    assert "cancelled 1 job" in output
    assert job(observer, schema, job_id)["state"] == "cancelled"


def run_on_terminal(args: list[str], answer: str, timeout: float = 30.0) -> tuple[str, int]:
    """Run `pgjobs ARGS` on a pseudo-terminal, answer its prompt; (its output, status)."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "pgjobs", *args],
        cwd=REPO_ROOT,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        env={k: v for k, v in os.environ.items() if not k.startswith("PGJOBS_")},
    )
    os.close(follower)
    output = b""
    answered = False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(leader, 1024)
            except OSError:  # the terminal closed: the process is done
                break
            output += chunk
        if not answered and b"[y/N]" in output:
            os.write(leader, answer.encode())
            answered = True
        if process.poll() is not None and not ready:
            break
    os.close(leader)
    return output.decode(errors="replace"), process.wait(timeout)
