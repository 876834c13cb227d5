"""The claim of limited jobs, statement by statement: never over a limit, in order within
a bucket, full buckets passed over, slots given back by whatever ends an attempt."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App, InvalidTaskError
from pgjobs.worker.limits import LimitsWatch

Connection = psycopg.Connection[Any]


def declare(app: App, conn: Connection) -> LimitsWatch:
    watch = LimitsWatch(app.data.limits, {n: t.limits for n, t in app.tasks.items()})
    assert watch.active(conn)
    return watch


def claim(app: App, conn: Connection, limit: int = 100, worker: str = "w") -> list[int]:
    jobs, _ = app.data.limits.claim(conn, limit=limit, queue=None, worker_id=worker)
    return sorted(job.id for job in jobs)


def finish(conn: Connection, schema: str, ids: list[int]) -> None:
    conn.execute(
        sql.SQL("UPDATE {} SET state = 'completed' WHERE id = ANY(%s)").format(
            sql.Identifier(schema, "jobs")
        ),
        (ids,),
    )


@pytest.fixture
def auto(database_url: str) -> Any:
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


def test_a_concurrency_limit_claims_up_to_it_in_order_and_again_as_slots_free(
    app: App, auto: Connection, schema: str
) -> None:
    @app.task(name="limited", concurrency=2)
    def limited(n: int) -> None: ...

    ids = app.enqueue_many(None, [("limited", {"n": n}) for n in range(5)])
    declare(app, auto)

    assert claim(app, auto) == ids[:2]
    assert claim(app, auto) == []
    finish(auto, schema, ids[:1])
    assert claim(app, auto) == ids[2:3]


def test_a_full_key_is_passed_over_and_other_keys_are_claimed(
    app: App, auto: Connection, schema: str
) -> None:
    @app.task(name="per_account", concurrency=1, concurrency_key="account")
    def per_account(account: str, n: int) -> None: ...

    busy = app.enqueue_many(None, [("per_account", {"account": "a", "n": n}) for n in range(50)])
    other = app.enqueue_many(None, [("per_account", {"account": "b", "n": n}) for n in range(3)])
    declare(app, auto)

    assert claim(app, auto, limit=10) == [busy[0], other[0]]
    assert claim(app, auto, limit=1) == []  # both keys full, however many wait


def test_a_rate_limit_counts_starts_in_the_window(app: App, auto: Connection, schema: str) -> None:
    @app.task(name="rated", rate_limit="3/h")
    def rated() -> None: ...

    ids = app.enqueue_many(None, [("rated", {})] * 5)
    declare(app, auto)

    assert claim(app, auto) == ids[:3]
    finish(auto, schema, ids[:3])  # finished, but started within the hour
    assert claim(app, auto) == []


def test_bad_limits_are_refused_at_declaration(app: App) -> None:
    def task(account: str) -> None: ...

    for options, message in (
        ({"concurrency": 0}, "concurrency of task 't' must be an integer from 1"),
        ({"concurrency": -1}, "concurrency of task 't'"),
        ({"rate_limit": "abc"}, "rate_limit of task 't' must read N/s"),
        ({"rate_limit": "0/s"}, "rate_limit of task 't'"),
        ({"concurrency": 1, "concurrency_key": "nope"}, "'nope', which is not an argument"),
        ({"rate_limit": "1/s", "rate_limit_key": "nope"}, "rate_limit_key of task 't'"),
        ({"concurrency_key": "account"}, "concurrency_key but no concurrency"),
    ):
        with pytest.raises(InvalidTaskError, match=message):
            app.task(name="t", **options)(task)
        assert "t" not in app.tasks


def test_a_job_without_its_key_is_refused_at_enqueue_or_fails_clearly(
    app: App, database_url: str, schema: str
) -> None:
    from pgjobs import InvalidJobError
    from pgjobs.testing import Jobs

    @app.task(name="per_host", rate_limit="5/s", rate_limit_key="host")
    def per_host(host: str = "default") -> None: ...

    with pytest.raises(InvalidJobError, match="limited per value of its argument 'host'"):
        per_host.enqueue(None)
    producer = App(database_url, schema=schema)  # knows no task: enqueues by name
    with psycopg.connect(database_url) as conn:
        job_id = producer.enqueue(conn, "per_host", {})
        with Jobs(app, conn) as jobs:
            [ran] = jobs.run().attempts
        assert ran.job.id == job_id and ran.ending.value == "failed"
        assert "do not give it" in str(ran.error)
    producer.close()


def test_the_docs_example_declares_what_it_says() -> None:
    from tests.helpers import REPO_ROOT
    from tests.helpers.readme import code_blocks

    namespace: dict[str, Any] = {"__name__": "docs"}
    [example] = code_blocks((REPO_ROOT / "docs" / "limits.md").read_text(), "python")
    exec(example, namespace)
    limits = {name: task.limits for name, task in namespace["app"].tasks.items()}
    assert [(lim.concurrency, lim.concurrency_key) for lim in limits.values()][:2] == [
        (2, None),
        (1, "account_id"),
    ]
    assert limits["docs.call_partner_api"].rate_count == 100
    assert limits["docs.call_partner_api"].rate_period == 60.0
    assert limits["docs.fetch"].rate_key == "host"
