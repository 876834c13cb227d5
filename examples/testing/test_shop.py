"""The shop's tests: what an order enqueues, and what its jobs do when they run."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import psycopg
import pytest
import shop
from psycopg import sql

from pgjobs.testing import Jobs

Connection = psycopg.Connection[Any]


def test_an_order_enqueues_its_receipt(db: Connection, jobs: Jobs) -> None:
    order_id = shop.place_order(db, "ann@example.com", total=30)
    # not committed, yet visible on the test's connection
    jobs.assert_enqueued(shop.send_receipt, args={"order_id": order_id}, queue="mail")
    jobs.assert_not_enqueued(shop.award_points)


def test_the_receipt_is_sent_then_the_points_follow(
    db: Connection, jobs: Jobs, outbox: list[str]
) -> None:
    order_id = shop.place_order(db, "ann@example.com", total=30)
    assert jobs.run().counts == {"completed": 1}  # the receipt, as a worker runs it
    assert outbox == [f"receipt for order {order_id} to ann@example.com"]
    jobs.assert_enqueued(shop.award_points, args={"order_id": order_id})
    assert jobs.run(drain=True).counts == {"completed": 1}  # and whatever follows
    assert outbox[-1] == f"points for order {order_id}"


def test_an_undeliverable_address_fails_without_retrying(db: Connection, jobs: Jobs) -> None:
    shop.place_order(db, "bob@example.invalid", total=5)
    assert jobs.run().counts == {"failed": 1}
    [job] = jobs.assert_enqueued(shop.send_receipt, state="failed")
    assert job.attempts == 1
    assert job.last_error == "pgjobs.errors.FailJob: undeliverable address bob@example.invalid"


class MailServerDown(list[str]):
    def append(self, message: str) -> None:
        raise ConnectionError("mail server unreachable")


def test_a_mail_outage_is_retried_after_a_backoff(
    db: Connection, jobs: Jobs, monkeypatch: pytest.MonkeyPatch, outbox: list[str]
) -> None:
    shop.place_order(db, "ann@example.com", total=30)
    monkeypatch.setattr(shop, "outbox", MailServerDown())
    assert jobs.run().counts == {"retried": 1}
    [job] = jobs.assert_enqueued(shop.send_receipt)  # waiting for its retry
    assert job.errors[0]["error"] == "ConnectionError: mail server unreachable"
    assert jobs.run().counts == {}  # not due yet: the backoff
    monkeypatch.undo()  # the mail server is back
    assert jobs.run(advance=60).counts == {"completed": 1}  # a minute later
    assert jobs.get(job.id).attempts == 2
    assert len(outbox) == 1


def test_the_nightly_report_runs_at_three(jobs: Jobs, outbox: list[str]) -> None:
    three = datetime(2031, 1, 1, 3, 0, tzinfo=timezone.utc)
    [tick] = jobs.enqueue_periodic(at=three)
    assert tick.tick == three
    jobs.assert_enqueued(shop.nightly_report, scheduled_at=three, queue="reports")
    assert jobs.run().counts == {}  # it is not three yet
    assert jobs.run(until=three).counts == {"completed": 1}
    assert outbox == ["nightly report"]


class TestAfterCommit:
    """The same helpers on committed data, through pgjobs' own connections."""

    @pytest.fixture
    def pgjobs_connection(self, db: Connection) -> Any:
        yield None
        db.execute(sql.SQL("DELETE FROM {}").format(sql.Identifier(shop.app.schema, "jobs")))
        db.commit()

    def test_a_committed_order_is_sent_and_rewarded(self, db: Connection, jobs: Jobs) -> None:
        order_id = shop.place_order(db, "ann@example.com", total=30)
        jobs.assert_not_enqueued()  # not committed yet: invisible to others
        db.commit()
        jobs.assert_enqueued(shop.send_receipt, args={"order_id": order_id})
        assert jobs.run(drain=True).counts == {"completed": 2}
        jobs.assert_enqueued(shop.award_points, state="completed")
