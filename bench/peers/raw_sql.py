"""The raw-SQL baseline: the least a SKIP LOCKED queue on PostgreSQL can do.

A bare table with a partial index on waiting rows and a statement trigger that sends one
NOTIFY per inserting statement (so an idle worker wakes as the others' do). The worker is
this script's `work` command: a few threads, each with its own autocommit connection,
claiming up to 50 rows in one statement and completing them in one more; idle threads wait
for a NOTIFY, or poll every second. Enqueueing is COPY in bulk and INSERT + COMMIT alone.
No retries, heartbeats, rescue or bookkeeping: it bounds from above what a queue with those
features can reach on the same server, which is why compare.py reports ratios against it.

    python bench/peers/raw_sql.py COMMAND [options]   (see _common.py; plus `work`)
"""

from __future__ import annotations

import json
import signal
import threading
import time
from types import FrameType
from typing import Any

import psycopg
from _common import (
    Schedule,
    StartMarks,
    SyncWorkloads,
    in_lanes,
    parse_args,
    payload,
    run_sync,
    timed_claims,
)

TABLE = "raw_jobs"
CHANNEL = "raw_jobs"

SCHEMA = f"""
CREATE TABLE {TABLE} (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    state text NOT NULL DEFAULT 'available',
    payload jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz
);
CREATE INDEX {TABLE}_waiting ON {TABLE} (id) WHERE state = 'available';
CREATE FUNCTION {TABLE}_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('{CHANNEL}', '');
    RETURN NULL;
END $$;
CREATE TRIGGER {TABLE}_notify AFTER INSERT ON {TABLE}
    FOR EACH STATEMENT EXECUTE FUNCTION {TABLE}_notify();
"""
INSERT = f"INSERT INTO {TABLE} (payload) VALUES (%s)"
CLAIM = f"""
UPDATE {TABLE} SET state = 'running', started_at = now()
WHERE id = ANY(ARRAY(
    SELECT id FROM {TABLE} WHERE state = 'available'
    ORDER BY id LIMIT %(batch)s
    FOR UPDATE SKIP LOCKED
))
RETURNING id, payload
"""
# `= ANY(ARRAY(subquery))` rather than `IN (subquery)`: the planner turns IN into a hash
# semi-join over a sequential scan of the whole table, on every claim (bench/PROFILE.md:
# 5.46 µs a row against 3.40 written this way). The baseline claims at its best.
COMPLETE = f"UPDATE {TABLE} SET state = 'completed', finished_at = now() WHERE id = ANY(%s)"
POLL_SECONDS = 1.0

DESCRIPTION = {
    "reset": f"TRUNCATE {TABLE} RESTART IDENTITY",
    "unfinished": f"SELECT count(*) FROM {TABLE} WHERE state IN ('available', 'running')",
    "window": f"""
        SELECT extract(epoch FROM min(started_at)), extract(epoch FROM max(finished_at)),
               count(*) FILTER (WHERE state = 'completed')
        FROM {TABLE}""",
    "fill_waiting": f"""
        INSERT INTO {TABLE} (payload)
        SELECT jsonb_build_object('n', g) FROM generate_series(1, %(count)s) g""",
    "fill_finished": f"""
        INSERT INTO {TABLE} (payload, state, started_at, finished_at)
        SELECT jsonb_build_object('n', g), 'completed', now(), now()
        FROM generate_series(1, %(count)s) g""",
}


def install(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SCHEMA)


def bulk(url: str, count: int) -> float:
    rows = [json.dumps(payload(n)) for n in range(count)]
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        with conn.cursor().copy(f"COPY {TABLE} (payload) FROM STDIN") as copy:
            for row in rows:
                copy.write_row((row,))
        conn.commit()
        return time.perf_counter() - started


def single(url: str, count: int) -> float:
    with psycopg.connect(url) as conn:
        started = time.perf_counter()
        for n in range(count):
            conn.execute(INSERT, (json.dumps(payload(n)),))
            conn.commit()
        return time.perf_counter() - started


def produce(url: str, count: int, rate: float, first: int, lanes: int) -> list[Any]:
    schedule = Schedule(count, rate, first, lanes)

    def lane(number: int) -> list[tuple[int, float]]:
        commits = []
        with psycopg.connect(url) as conn:
            for n in schedule.paced(number):
                conn.execute(INSERT, (json.dumps(payload(n)),))
                conn.commit()
                commits.append((n, time.time()))
        return commits

    return in_lanes(lanes, lane)


def claim(url: str, count: int, batch: int, budget: float) -> list[float]:
    with psycopg.connect(url, autocommit=True) as conn:
        return timed_claims(count, budget, lambda: conn.execute(CLAIM, {"batch": batch}).fetchall())


class Wakeups:
    """A counter bumped on every NOTIFY; a thread that found nothing waits for it to move.

    Reading the counter before claiming means a NOTIFY that arrives between an empty claim
    and the wait is not lost.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self.count = 0

    def bump(self) -> None:
        with self._changed:
            self.count += 1
            self._changed.notify_all()

    def wait_past(self, seen: int, timeout: float) -> None:
        with self._changed:
            self._changed.wait_for(lambda: self.count != seen, timeout)


class Worker:
    """Claiming threads, one listening thread, and a stop flag set by SIGTERM or SIGINT."""

    def __init__(self, url: str, threads: int, batch: int) -> None:
        self.url = url
        self.threads = threads
        self.batch = batch
        self.stop = threading.Event()
        self.wakeups = Wakeups()
        self.marks = StartMarks()

    def run(self) -> None:
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        threads = [threading.Thread(target=self.listen, daemon=True)]
        threads += [threading.Thread(target=self.claim_loop) for _ in range(self.threads)]
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads[1:]):
            time.sleep(0.1)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.stop.set()
        self.wakeups.bump()

    def listen(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute(f"LISTEN {CHANNEL}")
            while not self.stop.is_set():
                for _ in conn.notifies(timeout=POLL_SECONDS, stop_after=1):
                    self.wakeups.bump()

    def claim_loop(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                seen = self.wakeups.count
                rows: list[tuple[int, Any]] = conn.execute(CLAIM, {"batch": self.batch}).fetchall()
                if not rows:
                    self.wakeups.wait_past(seen, POLL_SECONDS)
                    continue
                for _, job_payload in rows:
                    self.marks.mark(job_payload["n"])
                conn.execute(COMPLETE, ([job_id for job_id, _ in rows],))


def main() -> None:
    args = parse_args()
    version = f"psycopg {psycopg.__version__}"
    workloads = SyncWorkloads(version, DESCRIPTION, install, bulk, single, produce, claim)
    if not run_sync(args, workloads):
        Worker(args.url, args.threads, args.batch).run()


if __name__ == "__main__":
    main()
