"""Maintenance runs on the leader alone: rescue, retention, periodic jobs and forgetting
lost workers start when the registry's beat finds this worker leading, and stop (with
their connection) within a beat of it no longer leading."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from pgjobs.worker import Worker, WorkerSettings
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.maintenance import Maintenance
from pgjobs.worker.queues import QueueSpec
from pgjobs.worker.service import LoopService
from tests.helpers import job, stays_true, wait_until

Connection = psycopg.Connection[Any]
WORKER = "host:1:leader"


class Passes(LoopService):
    """A maintenance member that counts its passes."""

    def __init__(self) -> None:
        super().__init__("passes", interval=0.01)
        self.count = 0
        self.closed = threading.Event()

    def run_once(self) -> None:
        self.count += 1

    def close(self) -> None:
        self.closed.set()


def test_the_group_runs_its_members_only_while_its_worker_leads() -> None:
    # given: a group whose worker does not lead
    leading = False
    member = Passes()
    group = Maintenance(
        [("maintenance", member)],
        ResilientConnection("postgresql:///unused", "m"),
        leads=lambda duty: leading,
        interval=1,
    )
    # then: its members do not run
    assert group.run_once() is False
    assert member.count == 0
    # when: a beat finds it leading
    leading = True
    assert group.run_once() is True
    # then: they run
    wait_until(lambda: member.count > 3)
    # when: a beat finds it no longer leading
    leading = False
    assert group.run_once() is False
    # then: they stopped, and released what they held
    assert member.join(0) and member.closed.is_set()
    stopped_at = member.count
    # and: leading again starts them again
    leading = True
    group.run_once()
    wait_until(lambda: member.count > stopped_at)
    assert group.stop(1.0)


def test_each_member_runs_only_while_its_worker_leads_the_members_duty() -> None:
    # given: a group of an upkeep member and a periodic one, its worker leading upkeep only
    led = {"maintenance"}
    upkeep, periodic = Passes(), Passes()
    group = Maintenance(
        [("maintenance", upkeep), ("periodic", periodic)],
        ResilientConnection("postgresql:///unused", "m"),
        leads=lambda duty: duty in led,
        interval=1,
    )
    # then: only the upkeep member runs
    assert group.run_once() is True
    wait_until(lambda: upkeep.count > 3)
    assert periodic.count == 0
    # when: a beat finds it leading periodic jobs instead
    led = {"periodic"}
    group.run_once()
    # then: the upkeep member stopped and the periodic one runs
    assert upkeep.join(0) and upkeep.closed.is_set()
    wait_until(lambda: periodic.count > 3)
    assert group.stop(1.0)


def workers_table(schema: str) -> sql.Identifier:
    return sql.Identifier(schema, "workers")


def set_elder(observer: Connection, schema: str, *, silent_for: str) -> None:
    """A worker older than any other, silent for `silent_for` (its rescue_after is 1 h)."""
    observer.execute(
        sql.SQL(
            "INSERT INTO {} (id, host, pid, concurrency, version, rescue_after, started_at,"
            " last_heartbeat_at) VALUES ('elder', 'h', 1, 1, 'v', 3600, now() - interval '1 day',"
            " now() - %s::interval)"
            " ON CONFLICT (id) DO UPDATE SET last_heartbeat_at = excluded.last_heartbeat_at"
        ).format(workers_table(schema)),
        [silent_for],
    )


@pytest.fixture
def worker(app: App) -> Iterator[Worker]:
    """A worker of queue "mine" that beats every quarter second (not started)."""
    settings = WorkerSettings(rescue_after=1, queues=QueueSpec.parse("mine"))
    worker = Worker(app, settings, worker_id=WORKER)
    yield worker
    worker.shutdown()


def test_a_worker_alone_leads_from_its_first_beat(worker: Worker) -> None:
    worker.start()

    wait_until(worker.parts.registry.is_leader, 2)
    wait_until(lambda: worker.parts.maintenance.running, 2)


def test_only_the_leader_rescues_and_a_worker_that_stops_leading_stops_its_maintenance(
    app: App, worker: Worker, observer: Connection, schema: str
) -> None:
    # given: an older live worker leads; ours does not
    set_elder(observer, schema, silent_for="0 s")
    worker.start()
    wait_until(lambda: worker.parts.listener.listening)
    assert not worker.parts.registry.is_leader()
    maintenance = worker.parts.maintenance
    # and: a job of a third worker that stopped heart-beating a minute ago
    job_id = app.enqueue(None, "noop", queue="theirs")
    with psycopg.connect(app.database.url, autocommit=True) as ghost:
        app.data.claims.claim(ghost, limit=1, queue=None, worker_id="ghost", begin=1)
    observer.execute(
        sql.SQL("UPDATE {} SET heartbeat_at = now() - interval '1 minute'").format(
            sql.Identifier(schema, "jobs")
        )
    )
    # then: over several beats, ours rescues nothing and holds no maintenance connection
    stays_true(lambda: job(observer, schema, job_id)["state"] == "running", 1.0)
    assert not maintenance.running and not maintenance.connection.is_open
    # when: the elder counts as lost (silent for longer than its rescue_after)
    set_elder(observer, schema, silent_for="90 minutes")
    # then: ours leads, and rescues the job on its maintenance connection
    wait_until(lambda: job(observer, schema, job_id)["state"] == "available", 5)
    assert worker.parts.registry.is_leader() and maintenance.connection.is_open
    # when: the elder is back (a live, older worker)
    set_elder(observer, schema, silent_for="0 s")
    # then: within a beat ours stops leading, stops its maintenance and closes its connection
    wait_until(lambda: not maintenance.running, 1.0)
    assert not maintenance.connection.is_open
