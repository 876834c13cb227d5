"""The worker registry: each worker keeps its row in `<schema>.workers`, the oldest live
one leads the maintenance, a clean exit leaves, a killed worker shows as lost, and
`pgjobs workers` lists the fleet with what each worker holds."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from pgjobs.fleet import list_workers
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.queues import QueueSpec
from pgjobs.worker.registry import LostWorkers, WorkerRegistry, registration
from pgjobs.worker.settings import WorkerSettings
from tests.helpers import StartWorker, run_cli, wait_until

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def connections(database_url: str) -> Iterator[Callable[[], ResilientConnection]]:
    """Makes worker connections, closed after the test."""
    made: list[ResilientConnection] = []

    def connection() -> ResilientConnection:
        made.append(ResilientConnection(database_url, "registry"))
        return made[-1]

    yield connection
    for opened in made:
        opened.close()


@pytest.fixture
def registries(
    app: App, connections: Callable[[], ResilientConnection]
) -> dict[str, WorkerRegistry]:
    """In-process registries by worker id; `registries[id]` is made on first use."""

    class Registries(dict[str, WorkerRegistry]):
        def __missing__(self, worker_id: str) -> WorkerRegistry:
            settings = WorkerSettings(rescue_after=5, queues=QueueSpec.parse("a,b"))
            row = registration(worker_id, settings, has_schedules=True)
            self[worker_id] = WorkerRegistry(connections(), app.data.maintenance, row, interval=1)
            return self[worker_id]

    return Registries()


# What a worker with every duty leads when it is the oldest live one, and otherwise.
EVERYTHING = {"maintenance", "periodic", "retention"}
NOTHING: set[str] = set()


def silence(observer: psycopg.Connection[Any], schema: str, worker_id: str, seconds: float) -> None:
    """Make a worker look silent for `seconds`, as if it had stopped beating."""
    observer.execute(
        sql.SQL(
            "UPDATE {} SET last_heartbeat_at = now() - make_interval(secs => %s) WHERE id = %s"
        ).format(sql.Identifier(schema, "workers")),
        (seconds, worker_id),
    )


def test_a_beat_registers_the_worker_with_its_settings(
    app: App, registries: dict[str, WorkerRegistry]
) -> None:
    registries["w1"].run_once()

    [worker] = list_workers(app)
    assert (worker.id, worker.queues, worker.concurrency, worker.rescue_after) == (
        "w1",
        ["a", "b"],
        10,
        5.0,
    )
    assert not worker.lost and worker.jobs == []


def test_the_oldest_live_worker_leads_and_a_clean_exit_hands_over(
    app: App, registries: dict[str, WorkerRegistry]
) -> None:
    assert registries["first"].run_once() == EVERYTHING
    assert registries["second"].run_once() == NOTHING
    assert registries["first"].run_once() == EVERYTHING

    registries["first"].stop(1.0)

    assert [w.id for w in list_workers(app)] == ["second"]
    assert registries["second"].run_once() == EVERYTHING


def test_a_duty_the_oldest_worker_declines_goes_to_the_oldest_that_has_it(
    app: App, connections: Callable[[], ResilientConnection]
) -> None:
    # given: the oldest worker runs without periodic jobs, a younger one with them
    def registry(worker_id: str, settings: WorkerSettings) -> WorkerRegistry:
        row = registration(worker_id, settings, has_schedules=True)
        return WorkerRegistry(connections(), app.data.maintenance, row, interval=1)

    old = registry("old", WorkerSettings(periodic=False))
    young = registry("young", WorkerSettings())
    unlimited = registry("unlimited", WorkerSettings(retention=None))
    # then: the oldest leads the upkeep and retention, the young one periodic jobs
    assert old.run_once() == {"maintenance", "retention"}
    assert young.run_once() == {"periodic"}
    assert unlimited.run_once() == NOTHING
    # and: once the young one exits, the next with periodic jobs takes them over
    young.stop(1.0)
    assert unlimited.run_once() == {"periodic"}
    assert old.run_once() == {"maintenance", "retention"}


def test_a_leader_stays_the_leader_while_its_next_beat_waits(
    registries: dict[str, WorkerRegistry], database_url: str, schema: str
) -> None:
    # given a leader whose next beat is held up by a lock on its row
    leader = registries["first"]
    assert leader.run_once() == EVERYTHING
    with psycopg.connect(database_url) as blocker:
        blocker.execute(
            sql.SQL("SELECT FROM {} WHERE id = 'first' FOR UPDATE").format(
                sql.Identifier(schema, "workers")
            )
        )
        beat = threading.Thread(target=leader.run_once)
        beat.start()
        wait_until(
            lambda: (
                blocker.execute(
                    "SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()"
                ).fetchone()
                == (1,)
            ),
            10,
        )
        # then a scrape in the meantime still reads it as the leader
        assert leader.is_leader() is True
        blocker.rollback()
    beat.join(10)
    assert leader.is_leader() is True


def test_a_lost_worker_neither_leads_nor_stays_listed_forever(
    app: App,
    registries: dict[str, WorkerRegistry],
    connections: Callable[[], ResilientConnection],
    observer: psycopg.Connection[Any],
    schema: str,
) -> None:
    # given the oldest worker silent for longer than its rescue_after (5 s)
    registries["old"].run_once()
    registries["young"].run_once()
    silence(observer, schema, "old", 6)

    # then the next oldest leads, and `old` is listed as lost
    assert registries["young"].run_once() == EVERYTHING
    assert [(w.id, w.lost) for w in list_workers(app)] == [("young", False), ("old", True)]

    # when it has been lost for longer than the leader keeps lost workers
    silence(observer, schema, "old", 5 + 61)
    # (a pass of the leader's maintenance)
    assert LostWorkers(
        connections(), app.data.maintenance, interval=1, keep_lost=60
    ).run_once() == ["old"]

    # then the leader forgets it
    assert [w.id for w in list_workers(app)] == ["young"]


def workers_json(capsys: Capsys, database_url: str, schema: str) -> dict[str, Any]:
    result = run_cli(capsys, database_url, schema, "workers", "--json")
    assert result.code == 0, result.err
    document: dict[str, Any] = json.loads(result.out)
    return document


def by_id(entries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in entries}


@pytest.mark.slow
def test_workers_lists_the_fleet_and_what_each_holds_before_and_after_a_kill(
    capsys: Capsys,
    app: App,
    runs_table: str,
    database_url: str,
    schema: str,
    start_worker: StartWorker,
) -> None:
    # given two workers: `holder` runs a long job of queue "slow", `other` serves "default"
    holder = start_worker("--queues", "slow", "--concurrency", "1", "--rescue-after", "2")
    other = start_worker("--queues", "default", "--rescue-after", "2")
    job_id = app.enqueue(None, "sleep", {"seconds": 60}, queue="slow")
    holder_id, other_id = holder.worker_id(), other.worker_id()

    def holding() -> dict[str, Any] | None:
        fleet = workers_json(capsys, database_url, schema)
        live = by_id(fleet["workers"])
        found = set(live) == {holder_id, other_id} and live[holder_id]["jobs"] == [job_id]
        return fleet if found else None

    before = wait_until(holding, 20, message=holder.describe)

    # then both are live, and the holder holds the job
    live = by_id(before["workers"])
    assert live[holder_id]["tasks"] == {"sleep": 1}
    assert live[holder_id]["queues"] == ["slow"] and live[other_id]["queues"] == ["default"]
    assert live[other_id]["jobs"] == [] and before["lost"] == []
    table = run_cli(capsys, database_url, schema, "workers").out
    assert holder_id in table and other_id in table and "sleep 1" in table
    assert "2 workers, 11 threads, holding 1 job" in table

    # when the holder is killed
    holder.send(signal.SIGKILL)
    holder.wait_exit()

    def lost() -> dict[str, Any] | None:
        fleet = workers_json(capsys, database_url, schema)
        return fleet if holder_id in by_id(fleet["lost"]) else None

    after = wait_until(lost, 20, message=other.describe)

    # then it is listed as lost, and the other worker as the live fleet
    assert list(by_id(after["workers"])) == [other_id]
    assert by_id(after["lost"])[holder_id]["silent_seconds"] >= 2
    table = run_cli(capsys, database_url, schema, "workers").out
    assert "lost (no heartbeat for their --rescue-after" in table
    assert table.index(holder_id) > table.index("lost")
    # and the rescue takes its job back, so it holds nothing any more
    wait_until(
        lambda: by_id(workers_json(capsys, database_url, schema)["lost"])[holder_id]["jobs"] == [],
        20,
    )
    # a clean exit leaves the registry at once
    assert other.stop() == 0
    final = workers_json(capsys, database_url, schema)
    assert final["workers"] == [] and list(by_id(final["lost"])) == [holder_id]
