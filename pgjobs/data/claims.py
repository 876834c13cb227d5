"""The worker's hot statements: claim, ready, heartbeat and write outcomes (their SQL
in data/outcome_sql.py).

They run on the worker's own autocommit connections, each one atomic statement, so
autocommit gives a transaction's guarantees at a third of the round trips.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import date, datetime, timezone
from typing import Any

from pgjobs.data.connector import rows
from pgjobs.data.group import StatementGroup
from pgjobs.data.history import ENSURE_PARTITIONS
from pgjobs.data.outcome_sql import (
    COMPLETE_JOBS,
    COMPLETE_WATCHED,
    RECORD_OUTCOMES,
    attempts_by_id,
    results_by_id,
)
from pgjobs.data.sql import SchemaSQL, fill, id_ranges, int_array
from pgjobs.data.steps import Statement
from pgjobs.types import ClaimedJob, Outcome

# Claims up to `limit` waiting jobs in one statement, the function `claim_jobs`
# (migration 0013 holds its text, and says why it is a function: planner settings that
# keep its plan on the fetch index's plain index scan, which a bitmap scan replaced as
# dead entries piled up, and a plan made once per session).
# SKIP LOCKED makes concurrent claimers pass over each other's rows instead of waiting,
# and the row lock taken by its subquery is held until the UPDATE commits, so no two
# workers can claim one row. The attempt is counted and `started_at` set at the claim.
# `began_at` is set for the first `begin` jobs, which the worker's threads may start at
# once, and stays NULL for the jobs claimed ahead until the worker readies them for its
# threads (READY_JOBS): threads start no job whose `began_at` is NULL, so a rescue can
# tell a job that waited in a lost worker's buffer from one that may have run (RESCUE).
# The rows come back in no particular order: the worker's buffer orders what it holds.
# The UPDATE finds the claimed rows by an array of their ids, for the reasons given at
# HEARTBEAT.
# Paused queues are skipped: a claim from one queue checks the setting once, before
# scanning anything; a claim from every queue filters its rows with a hashed list of the
# paused queues, read once per claim. The jobs of limited tasks and queues are claimed
# within their limits by data/limits.py, and this claim passes them over (two hashed
# lists, empty while no limit exists), always: a limit set a moment ago must not let
# this claim take its jobs.
# A claim commits with the server's durability (`synchronous_commit` as configured), as
# outcomes and heartbeats do. `pgjobs work --async-claim-commit` lets it commit without
# waiting for its WAL to reach the disk (for this transaction only), which shortens the
# time from a job's commit to its start. The price, should the server crash (or fail
# over) before that WAL is flushed: the claim is undone, the job is `available` again
# with its attempts unchanged and no entry in `errors`, and it runs again as the same
# attempt while the first run's outcome no longer matches and is dropped.
CLAIM = """
SELECT * FROM {claim_jobs}(%(limit)s::integer, %(begin)s::integer, %(worker_id)s::text,
                           %(queue)s::text, %(async_commit)s::boolean)
"""

# The rows of `ids` this worker still holds, locked in id order. Outcome writes and
# heartbeats touch the same rows; locking them in one order means they cannot deadlock
# (completions lock theirs in id order through `complete_jobs`: data/outcome_sql.py).
HELD_BY_WORKER = """
    SELECT id FROM {live}
    WHERE id = ANY(%(ids)s::bigint[]) AND state = 'running' AND worker_id = %(worker_id)s
    ORDER BY id
    FOR UPDATE
"""

# CLAIM and HEARTBEAT update the locked rows found by one array of their ids,
# `WHERE j.id = ANY(ARRAY(SELECT id FROM held))`, not by a join (the completions of
# data/outcome_sql.py find their rows so too): whatever the estimates, that is one pass
# over the primary key. Joined by id, a batch of 1,000 was hash-joined to a scan of the
# whole table (60,000 rows: 25 ms a batch instead of 10), and a join by id plus the array
# went quadratic when the statistics were stale (the array scanned again for each row:
# 60 ms a claim of 460). A row updated by someone else since the statement began is
# followed to its newest version as usual, and still matches.

# Readies claimed jobs for the worker's threads, just before they need them: from now on
# their attempt may begin, and a rescue counts it as lost (RESCUE). The worker lists in
# its own row every job it readied and has not settled yet (ready, running, or with its
# outcome not written), as ranges of ids (a claim takes ids that mostly follow each
# other): one small row update per batch instead of one update per job.
# It commits without waiting for the disk (for this transaction only), since threads
# wait for it; other sessions see it at once all the same, and it matters only to the
# rescue of a worker that dies: only if the server crashed and lost it, and the worker
# then died too before the job ended, would a job that ran be returned as unrun.
READY_JOBS = """
WITH async_commit AS MATERIALIZED (
    SELECT set_config('synchronous_commit', 'off', true)
)
UPDATE {workers} SET ready_jobs = %(ranges)s::int8multirange
WHERE id = %(worker_id)s AND EXISTS (SELECT FROM async_commit)
RETURNING true
"""
# The same, one row at a time, for a worker whose row is missing (not registered yet, or
# forgotten after a long silence): `began_at`, as the claim sets it.
READY_JOB_ROWS = """
UPDATE {live} SET began_at = now()
WHERE id = ANY(%(ids)s::bigint[]) AND state = 'running' AND worker_id = %(worker_id)s
"""

# One statement per interval keeps all of a worker's jobs alive; ids that do not come
# back were cancelled or rescued meanwhile, and their tasks are told to stop.
HEARTBEAT = """
WITH held AS ({held})
UPDATE {live} AS j SET heartbeat_at = now()
WHERE j.id = ANY(ARRAY(SELECT id FROM held))
RETURNING j.id
"""


# The statements as they run: their shared subqueries put in.
HEARTBEAT = fill(HEARTBEAT, held=HELD_BY_WORKER)


class ClaimStatements(StatementGroup):
    """The worker's hot statements for one schema, on a given connection."""

    def __init__(self, sql: SchemaSQL) -> None:
        super().__init__(sql)
        # The UTC day whose history partitions this process has made sure of (the
        # completions insert into them).
        self._history_ready_on: date | None = None

    def claim(
        self,
        conn: Any,
        *,
        limit: int,
        queue: str | None,
        worker_id: str,
        begin: int = 0,
        async_commit: bool = False,
    ) -> tuple[list[ClaimedJob], set[int]]:
        """Claim up to `limit` runnable jobs (of `queue`, or of any queue when None), the
        first `begin` of them ready for threads (CLAIM); `async_commit`: without waiting
        for the claim's WAL to reach the disk. Jobs of limited tasks and queues are
        passed over (data/limits.py claims them). Returns the jobs and the ids readied."""
        params = claim_params(
            limit=limit, begin=begin, worker_id=worker_id, queue=queue, async_commit=async_commit
        )
        claimed = self._rows(conn, CLAIM, params, binary=True)
        return claimed_jobs(claimed)

    def record_outcomes(
        self, conn: Any, outcomes: Sequence[Outcome], *, worker_id: str
    ) -> set[int]:
        """Write finished attempts; the ids whose outcome was applied.

        An outcome is dropped when its job is no longer this attempt, running, and ours
        (it was cancelled or rescued meanwhile).
        """
        applied: set[int] = set()
        today = datetime.now(timezone.utc).date()
        if self._history_ready_on != today and any(o.state == "completed" for o in outcomes):
            # The history's partitions of completed jobs for today and tomorrow (UTC, by
            # the server's clock): failed and cancelled jobs move by the row trigger,
            # which makes theirs.
            self._rows(conn, ENSURE_PARTITIONS, {"states": ["completed"], "days_ahead": 1})
            # Made for good only once committed: inside a caller's transaction (the
            # testing helpers') they are checked again the next time.
            if getattr(conn, "autocommit", False):
                self._history_ready_on = today
        for statement in self.outcome_statements(outcomes, worker_id=worker_id):
            applied.update(row[0] for row in rows(conn, self.schema, statement))
        return applied

    def outcome_statements(self, outcomes: Sequence[Outcome], *, worker_id: str) -> list[Statement]:
        """The statements that write `outcomes`: plain successes take the cheaper
        COMPLETE_JOBS, watched ones (results, workflow steps) COMPLETE_WATCHED, every
        other outcome RECORD_OUTCOMES."""
        successes = [o for o in outcomes if o.state == "completed"]
        others = [o for o in outcomes if o.state != "completed"] if successes else outcomes
        statements: list[Statement] = []
        watched = [o for o in successes if o.watched]
        if watched:
            successes = [o for o in successes if not o.watched]
            results: Mapping[str, Any] = {
                "ids": int_array([o.job_id for o in watched]),
                "attempts": attempts_by_id(watched),
                "results": results_by_id(watched),
                "worker_id": worker_id,
                "results_channel": self.sql.results_channel,
            }
            statements.append(Statement(self.sql.render(COMPLETE_WATCHED), results))
        if successes:
            completions = {
                "ids": int_array([o.job_id for o in successes]),
                "attempts": attempts_by_id(successes),
                "worker_id": worker_id,
            }
            statements.append(Statement(self.sql.render(COMPLETE_JOBS), completions))
        if others:
            params: Mapping[str, Any] = {
                "ids": [o.job_id for o in others],
                "attempts": [o.attempt for o in others],
                "states": [str(o.state) for o in others],
                "delays": [o.delay for o in others],
                "errors": [o.error_json for o in others],
                "attempts_deltas": [o.attempts_delta for o in others],
                "max_attempts_deltas": [o.max_attempts_delta for o in others],
                "worker_id": worker_id,
                "channel": self.sql.channel,
                "results_channel": self.sql.results_channel,
            }
            statements.append(Statement(self.sql.render(RECORD_OUTCOMES), params))
        return statements

    def ready_jobs(self, conn: Any, job_ids: Collection[int], *, worker_id: str) -> None:
        """Record `job_ids` as every job this worker readied and has not settled
        (READY_JOBS); row by row when the worker has no row to record them in."""
        ids = sorted(job_ids)
        params = {"ranges": id_ranges(ids), "worker_id": worker_id}
        if not self._rows(conn, READY_JOBS, params):
            params = {"ids": int_array(ids), "worker_id": worker_id}
            self._rows(conn, READY_JOB_ROWS, params)

    def heartbeat(self, conn: Any, ids: Sequence[int], *, worker_id: str) -> set[int]:
        """Refresh `heartbeat_at` of the jobs still ours; returns their ids."""
        params = {"ids": int_array(ids), "worker_id": worker_id}
        return {row[0] for row in self._rows(conn, HEARTBEAT, params)}


def claim_params(
    *,
    limit: int,
    worker_id: str,
    queue: str | None = None,
    begin: int = 0,
    async_commit: bool = False,
) -> dict[str, Any]:
    """CLAIM's parameters (`ClaimStatements.claim` says what each means)."""
    return {
        "limit": limit,
        "begin": begin,
        "worker_id": worker_id,
        "queue": queue,
        "async_commit": async_commit,
    }


def claimed_jobs(rows: Sequence[tuple[Any, ...]]) -> tuple[list[ClaimedJob], set[int]]:
    """The jobs of a claim's rows (CLAIM's, or data/limits.py's CLAIM_LIMITED: the same
    columns, the last one saying whether the claim readied the job), and the ids readied."""
    return [ClaimedJob._make(row[:-1]) for row in rows], {row[0] for row in rows if row[-1]}
