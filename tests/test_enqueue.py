"""Transactional enqueue: the job commits or rolls back with the caller's data."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
import pytest

from pgjobs import App, InvalidJobError, PayloadNotSerializableError
from pgjobs.data.reused_cursor import reused_cursor


def jobs(observer: psycopg.Connection[Any], schema: str) -> list[dict[str, Any]]:
    """Every committed job of the schema, as dicts, by id."""
    with observer.cursor(row_factory=psycopg.rows.dict_row) as cur:
        cur.execute(
            psycopg.sql.SQL("SELECT * FROM {} ORDER BY id").format(
                psycopg.sql.Identifier(schema, "jobs")
            )
        )
        return cur.fetchall()


@pytest.fixture
def resize(app: App) -> Any:
    @app.task
    def resize(path: str, width: int) -> None:
        """A sample task."""

    return resize


def test_enqueue_on_committed_connection_creates_available_job(
    app: App, resize: Any, conn: psycopg.Connection[Any], observer: Any, schema: str
) -> None:
    job_id = resize.enqueue(conn, path="/a.png", width=100)
    conn.commit()

    [job] = jobs(observer, schema)
    assert job["id"] == job_id
    assert job["task"] == "tests.test_enqueue.resize"
    assert job["payload"] == {"path": "/a.png", "width": 100}
    assert job["state"] == "available"
    assert job["queue"] == "default"
    assert (job["attempts"], job["max_attempts"], job["priority"]) == (0, 20, 0)
    assert job["errors"] == []


def test_uncommitted_job_is_invisible_to_other_connections(
    resize: Any, conn: psycopg.Connection[Any], observer: Any, schema: str
) -> None:
    resize.enqueue(conn, path="/a.png", width=100)

    assert jobs(observer, schema) == []
    conn.commit()
    assert len(jobs(observer, schema)) == 1


def test_rolled_back_enqueue_leaves_no_job(
    resize: Any, conn: psycopg.Connection[Any], observer: Any, schema: str
) -> None:
    resize.enqueue(conn, path="/a.png", width=100)
    conn.rollback()

    assert jobs(observer, schema) == []


def test_enqueue_without_connection_commits_at_once(
    resize: Any, observer: Any, schema: str
) -> None:
    job_id = resize.enqueue(None, path="/a.png", width=1)

    assert [j["id"] for j in jobs(observer, schema)] == [job_id]


def test_task_options_are_stored(app: App, observer: Any, schema: str) -> None:
    @app.task(name="email.send", queue="mail", priority=5, max_attempts=10, timeout=30)
    def send_email(to: str) -> None:
        """A sample task."""

    send_email.enqueue(None, to="a@example.com")
    send_email.options(priority=9, queue="urgent").enqueue(None, to="b@example.com")

    first, second = jobs(observer, schema)
    assert (first["task"], first["queue"], first["priority"], first["max_attempts"]) == (
        "email.send",
        "mail",
        5,
        10,
    )
    assert (second["queue"], second["priority"], second["max_attempts"]) == ("urgent", 9, 10)


def test_delay_and_run_at_set_future_run_time(resize: Any, observer: Any, schema: str) -> None:
    later = datetime.now(timezone.utc) + timedelta(hours=2)
    resize.options(delay=60).enqueue(None, path="x", width=1)
    resize.options(delay=timedelta(minutes=5)).enqueue(None, path="x", width=1)
    resize.options(run_at=later).enqueue(None, path="x", width=1)

    delayed, delayed_td, scheduled = jobs(observer, schema)
    assert timedelta(seconds=59) < delayed["run_at"] - delayed["created_at"] < timedelta(seconds=61)
    assert delayed_td["run_at"] - delayed_td["created_at"] == pytest.approx(
        timedelta(minutes=5), abs=timedelta(seconds=1)
    )
    assert scheduled["run_at"] == later


def test_unique_key_returns_holder_and_inserts_nothing(
    resize: Any, observer: Any, schema: str
) -> None:
    first = resize.options(unique_key="welcome:42").enqueue(None, path="x", width=1)
    second = resize.options(unique_key="welcome:42").enqueue(None, path="y", width=2)

    assert second == first
    assert len(jobs(observer, schema)) == 1


def test_unique_key_is_free_again_once_the_job_finished(
    resize: Any, observer: Any, schema: str
) -> None:
    first = resize.options(unique_key="k").enqueue(None, path="x", width=1)
    observer.execute(
        psycopg.sql.SQL("UPDATE {} SET state = 'completed'").format(
            psycopg.sql.Identifier(schema, "jobs")
        )
    )
    second = resize.options(unique_key="k").enqueue(None, path="x", width=1)

    assert second != first


def test_enqueue_by_name_needs_no_registered_task(app: App, observer: Any, schema: str) -> None:
    job_id = app.enqueue(None, "remote.task", {"a": 1}, queue="mail", priority=3)

    [job] = jobs(observer, schema)
    assert (job["id"], job["task"], job["queue"], job["priority"]) == (
        job_id,
        "remote.task",
        "mail",
        3,
    )


def test_enqueue_many_inserts_in_one_statement_and_returns_ids_in_order(
    app: App, conn: psycopg.Connection[Any], observer: Any, schema: str
) -> None:
    items = [("bulk.task", {"n": n}) for n in range(10_000)]

    ids = app.enqueue_many(conn, items)
    conn.commit()

    stored = jobs(observer, schema)
    assert len(stored) == 10_000
    assert [job["payload"]["n"] for job in stored] == list(range(10_000))
    assert ids == [job["id"] for job in stored]


def test_enqueue_many_maps_unique_keys_to_holders(app: App, observer: Any, schema: str) -> None:
    held = app.enqueue(None, "t", {}, unique_key="a")

    ids = app.enqueue_many(
        None,
        [
            ("t", {"i": 0}),
            ("t", {"i": 1}, {"unique_key": "a"}),
            ("t", {"i": 2}, {"unique_key": "b"}),
            ("t", {"i": 3}, {"unique_key": "b"}),
            ("t", {"i": 4}),
        ],
    )

    stored = {job["payload"].get("i"): job["id"] for job in jobs(observer, schema)}
    assert ids == [stored[0], held, stored[2], stored[2], stored[4]]
    assert 1 not in stored and 3 not in stored


def test_non_json_argument_raises_type_error_naming_it_and_writes_nothing(
    resize: Any, conn: psycopg.Connection[Any], observer: Any, schema: str
) -> None:
    with pytest.raises(TypeError, match="'width'") as info:
        resize.enqueue(conn, path="x", width=object())
    assert isinstance(info.value, PayloadNotSerializableError)
    conn.commit()

    assert jobs(observer, schema) == []


def test_one_bad_item_in_a_batch_writes_nothing(app: App, observer: Any, schema: str) -> None:
    with pytest.raises(PayloadNotSerializableError, match="'when'"):
        app.enqueue_many(None, [("t", {"n": 1}), ("t", {"when": datetime.now()})])

    assert jobs(observer, schema) == []


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"run_at": datetime(2030, 1, 1)}, "timezone-aware"),
        ({"delay": -1}, "delay"),
        ({"delay": float("nan")}, "delay"),
        ({"run_at": datetime.now(timezone.utc), "delay": 1}, "either run_at or delay"),
        ({"priority": 1.5}, "priority"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"queue": ""}, "queue"),
        ({"unique_key": ""}, "unique_key"),
    ],
)
def test_invalid_options_raise_precise_errors(
    app: App, observer: Any, schema: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidJobError, match=message):
        app.enqueue(None, "t", {}, **options)

    assert jobs(observer, schema) == []


def test_empty_task_name_is_rejected(app: App) -> None:
    with pytest.raises(InvalidJobError, match="task name"):
        app.enqueue(None, "  ", {})


def test_task_name_defaults_to_module_and_function(app: App) -> None:
    @app.task
    def cleanup() -> None:
        """A sample task."""

    assert cleanup.name.startswith("tests.test_enqueue.")
    assert cleanup.name.endswith("cleanup")
    assert app.get_task(cleanup.name) is cleanup


# --- the caller's connection as the caller set it up ------------------------------------


def test_enqueue_works_on_a_connection_whose_rows_are_dicts(
    app: App, resize: Any, database_url: str, observer: Any, schema: str
) -> None:
    """pgjobs reads its own rows as tuples, whatever row factory the application chose;
    every path is taken: one job, one keyed job and its holder, a small batch, a large
    one COPYed straight in, a large keyed one COPYed through the temporary table."""
    name = "tests.test_enqueue.resize"
    with psycopg.connect(database_url, row_factory=psycopg.rows.dict_row) as conn:
        one = resize.enqueue(conn, path="/a.png", width=1)
        keyed = resize.options(unique_key="k").enqueue(conn, path="/b.png", width=2)
        holder = resize.options(unique_key="k").enqueue(conn, path="/c.png", width=3)
        small = app.enqueue_many(conn, [(name, {"path": "s", "width": n}) for n in range(3)])
        large = app.enqueue_many(conn, [(name, {"path": "l", "width": n}) for n in range(300)])
        staged = app.enqueue_many(
            conn, [(name, {"path": "k", "width": n}, {"unique_key": f"s{n}"}) for n in range(300)]
        )
        conn.commit()

    assert holder == keyed
    stored = [job["id"] for job in jobs(observer, schema)]
    assert stored == [one, keyed, *small, *large, *staged]


def test_an_enqueue_never_takes_a_cursor_another_statement_is_using(
    resize: Any, conn: psycopg.Connection[Any], observer: Any, schema: str
) -> None:
    """pgjobs keeps one cursor per connection; while something else holds it (another
    thread mid-statement, here this test), an enqueue takes a cursor of its own and the
    holder's result is untouched."""
    first = resize.enqueue(conn, path="/a.png", width=1)
    with reused_cursor(conn) as busy:
        busy.execute("SELECT 42")
        second = resize.enqueue(conn, path="/b.png", width=2)
        assert busy.fetchall() == [(42,)]
    third = resize.enqueue(conn, path="/c.png", width=3)
    conn.commit()

    assert [job["id"] for job in jobs(observer, schema)] == [first, second, third]
