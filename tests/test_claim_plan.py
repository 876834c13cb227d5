"""The claim keeps to a plain index scan of the fetch index whatever the statistics say
(migration 0013): a bitmap heap scan or a sequential scan, which the planner picks for
a table it believes tiny, would visit every dead index entry again on every claim."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from pgjobs.data.function_plans import explain_claim
from tests.helpers import table_scans

Connection = psycopg.Connection[Any]
FETCH_INDEX = "jobs_fetch_any_queue_idx"


def claim_counting_scans(app: App, observer: Connection, limit: int) -> dict[str, int]:
    """Claim up to `limit` jobs as a worker does; what the claim read, as table_scans."""
    before = table_scans(observer, app.schema, FETCH_INDEX)
    claimed, _ = app.data.claims.claim(observer, limit=limit, queue=None, worker_id="w")
    assert len(claimed) == limit
    after = table_scans(observer, app.schema, FETCH_INDEX)
    return {name: after[name] - before[name] for name in after}


@pytest.fixture
def tiny_statistics(app: App, observer: Connection) -> None:
    """jobs_live analyzed while it held 5 waiting and 20 running jobs (plain statements
    are planned as a sequential scan then), autovacuum off so that dead rows stay."""
    if observer.info.server_version < 150000:
        pytest.skip("pg_stat_force_next_flush() came with PostgreSQL 15")
    live = sql.Identifier(app.schema, "jobs_live")
    observer.execute(sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(live))
    app.enqueue_many(None, [("report", {}) for _ in range(20)])
    app.data.claims.claim(observer, limit=20, queue=None, worker_id="elsewhere")
    app.enqueue_many(None, [("report", {}) for _ in range(5)])
    observer.execute(sql.SQL("ANALYZE {}").format(live))


@pytest.mark.usefixtures("tiny_statistics")
def test_the_claim_scans_the_fetch_index_in_order_when_the_table_looks_tiny(
    app: App, observer: Connection
) -> None:
    # given: statistics of a tiny table, under which the claim's statement, planned as
    # an ordinary statement, is a sequential scan and a sort
    plain = "\n".join(
        row[0] for row in explain_claim(observer, app.schema, limit=2, as_function=False)
    )
    assert "Seq Scan on jobs_live" in plain, plain

    # when: the worker's claim runs
    read = claim_counting_scans(app, observer, limit=2)

    # then: the claim found its rows by a plain index scan of the fetch index
    assert read["seq_scan"] == 0, read
    assert read["rows_fetched"] >= 2, read


@pytest.mark.usefixtures("tiny_statistics")
@pytest.mark.parametrize("queue", [None, "default"])
def test_the_claims_plan_reads_a_fetch_index_in_order(
    app: App, observer: Connection, queue: str | None
) -> None:
    # given: statistics of a tiny table (the fixture), all of its jobs in one queue
    # when: the plan of a claim from every queue, and from that one, as claim_jobs plans it
    plan = "\n".join(row[0] for row in explain_claim(observer, app.schema, limit=2, queue=queue))

    # then: a plain index scan of a fetch index that gives the jobs in claim order (for
    # one queue, either: the table holds no other); no bitmap scan, no sequential scan,
    # no sort (of the per-queue fetch index read whole, for a claim from every queue)
    if queue is None:
        assert f"Index Scan using {FETCH_INDEX} on jobs_live" in plan, plan
    else:
        assert "Index Scan using jobs_fetch_" in plan, plan
    assert "Bitmap" not in plan and "Sort" not in plan and "Seq Scan on jobs_live" not in plan


@pytest.mark.usefixtures("tiny_statistics")
def test_a_claim_passes_over_dead_entries_once(app: App, observer: Connection) -> None:
    # given: 5,000 dead entries at the head of the fetch index (jobs of a higher
    # priority, enqueued and deleted, not vacuumed)
    live = sql.Identifier(app.schema, "jobs_live")
    app.enqueue_many(None, [("report", {}, {"priority": 10}) for _ in range(5_000)])
    with observer.transaction():
        # committed durably: a scan marks an entry dead only once the deletion's commit
        # is on disk (the test server commits asynchronously)
        observer.execute("SET LOCAL synchronous_commit = on")
        observer.execute(sql.SQL("DELETE FROM {} WHERE priority = 10").format(live))

    # when: two claims of one job each
    first = claim_counting_scans(app, observer, limit=1)
    second = claim_counting_scans(app, observer, limit=1)

    # then: the first read the dead entries and marked them, the second skipped them; a
    # bitmap scan marks nothing, and read all 5,000 again
    assert first["entries_read"] >= 5_000, first
    assert second["entries_read"] < 100, second
