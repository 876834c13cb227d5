"""Claiming the jobs of limited tasks and queues without ever going over a limit.

A job of a limited task or queue is in buckets: `c:<task>[:<key value>]` for its task's
concurrency, `q:<queue>` for its queue's `max_running`, `r:<task>[:<key value>]` for its
task's rate. A concurrency bucket's use is the running jobs that fall in it by the limits
as they are now (so jobs that started before a limit was set count against it too), read
from the running jobs; a rate bucket's, its starts still in the window (`rate_starts`).
Nothing is a counter, so whatever ends an attempt gives its slot back, and nothing can
drift. A claimed job also records its buckets in `limit_buckets`, for `pgjobs limits`.

Counting and claiming must not race with another worker doing the same: a claim of
limited jobs is one transaction of rounds of two statements. LOCK_BUCKETS finds the
first waiting jobs whose buckets all have room (by the counts of its snapshot: jobs of
full buckets are passed over, so one busy key never holds up the others) and takes a
transaction-scoped advisory lock on each of their buckets that no other claim holds
(`pg_try_advisory_xact_lock`: a claim never waits for another, so claims cannot
deadlock; a bucket another claim is serving is left to it). CLAIM_LIMITED then runs with
a snapshot taken after the locks were granted, so it sees every claim committed before,
counts each bucket's use exactly, and claims at most its room, in order within each
bucket, only among the jobs whose every bucket it locked. Its times are the statement's
(`statement_timestamp()`), not the transaction's: the log of rate-limited starts must be
in the order the bucket's claims were made, and a claim's transaction may have begun
before an earlier claim of the same bucket committed.

Jobs of tasks and queues without limits are claimed by the plain CLAIM (data/claims.py),
which passes limited ones over (CLAIM's `limited` form) and is unchanged while no limit
exists anywhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pgjobs.data.claims import claimed_jobs
from pgjobs.data.connector import run
from pgjobs.data.group import StatementGroup
from pgjobs.data.sql import fill
from pgjobs.data.steps import Atomic, Plan, Statement
from pgjobs.types import ClaimedJob

# Rounds of a claim of limited jobs at most (see LimitStatements._claim_steps).
CLAIM_ROUNDS = 4

# The limits and the buckets' use, as a claim reads them.
LIMITS_NOW = """
defs AS MATERIALIZED (
    SELECT task, concurrency, concurrency_key, rate_count, rate_period, rate_key
    FROM {task_limits}
), capped AS MATERIALIZED (
    SELECT name, max_running FROM {queues} WHERE max_running IS NOT NULL
), held AS MATERIALIZED (
    SELECT bucket, count(*)::int AS used
    FROM {live} AS j
    CROSS JOIN LATERAL ({buckets_of_job}) AS b
    CROSS JOIN LATERAL unnest(ARRAY[b.c_bucket, b.q_bucket]) AS bucket
    WHERE j.state = 'running' AND bucket IS NOT NULL
      AND (j.task IN (SELECT task FROM defs) OR j.queue IN (SELECT name FROM capped))
    GROUP BY bucket
), recent AS MATERIALIZED (
    SELECT bucket, count(*)::int AS used FROM {rate_starts}
    WHERE until > statement_timestamp()
    GROUP BY bucket
)"""

# A waiting job's buckets and their limits (NULL where it has none).
BUCKETS_OF_JOB = """
    SELECT CASE WHEN d.concurrency IS NOT NULL THEN 'c:' || j.task || CASE
                     WHEN d.concurrency_key IS NULL THEN ''
                     ELSE ':' || coalesce(j.payload ->> d.concurrency_key, '') END
                END AS c_bucket,
           d.concurrency AS c_max,
           CASE WHEN q.max_running IS NOT NULL THEN 'q:' || j.queue END AS q_bucket,
           q.max_running AS q_max,
           CASE WHEN d.rate_count IS NOT NULL THEN 'r:' || j.task || CASE
                     WHEN d.rate_key IS NULL THEN ''
                     ELSE ':' || coalesce(j.payload ->> d.rate_key, '') END
                END AS r_bucket,
           d.rate_count AS r_max,
           d.rate_period AS r_period
    FROM (SELECT) AS one
    LEFT JOIN defs AS d ON d.task = j.task
    LEFT JOIN capped AS q ON q.name = j.queue"""

# The first waiting jobs of limited tasks and queues, in claim order, whose every bucket
# has room by the counts above.
CANDIDATES = """
    SELECT j.id, j.priority, j.run_at, b.*,
           array_remove(ARRAY[b.c_bucket, b.q_bucket, b.r_bucket], NULL) AS buckets
    FROM {live} AS j
    CROSS JOIN LATERAL ({buckets_of_job}) AS b
    WHERE j.state = 'available' AND j.run_at <= now() {queue_filter}
      AND (j.task IN (SELECT task FROM defs) OR j.queue IN (SELECT name FROM capped))
      AND (b.c_bucket IS NULL
           OR coalesce((SELECT used FROM held WHERE bucket = b.c_bucket), 0) < b.c_max)
      AND (b.q_bucket IS NULL
           OR coalesce((SELECT used FROM held WHERE bucket = b.q_bucket), 0) < b.q_max)
      AND (b.r_bucket IS NULL
           OR coalesce((SELECT used FROM recent WHERE bucket = b.r_bucket), 0) < b.r_max)
      {locked_filter}
    ORDER BY j.priority DESC, j.run_at, j.id
    LIMIT %(limit)s"""

LOCK_BUCKETS = """
WITH {limits_now}, candidates AS ({candidates})
SELECT bucket FROM (
    SELECT DISTINCT bucket FROM candidates CROSS JOIN LATERAL unnest(buckets) AS bucket
) AS wanted
WHERE pg_try_advisory_xact_lock(hashtextextended(bucket, 2504))
"""

# Each bucket's room (its limit less its use), the candidates ranked within each of
# their buckets, and those whose rank is within the room of every bucket they need:
# never more than a bucket's room, in order within it (a candidate refused by one bucket
# may leave another's slot unused for this claim; the next one takes it).
CLAIM_LIMITED = """
WITH {limits_now}, candidates AS MATERIALIZED ({candidates}),
room AS (
    SELECT limit_of.bucket, limit_of.cap - coalesce(h.used, r.used, 0) AS room
    FROM (
        SELECT x.bucket, min(x.cap) AS cap
        FROM candidates CROSS JOIN LATERAL unnest(
            ARRAY[c_bucket, q_bucket, r_bucket], ARRAY[c_max, q_max, r_max]
        ) AS x(bucket, cap)
        WHERE x.bucket IS NOT NULL
        GROUP BY x.bucket
    ) AS limit_of
    LEFT JOIN held AS h ON h.bucket = limit_of.bucket
    LEFT JOIN recent AS r ON r.bucket = limit_of.bucket
), ranked AS (
    SELECT c.*,
           row_number() OVER (PARTITION BY c.c_bucket ORDER BY c.priority DESC, c.run_at, c.id)
               AS c_rank,
           row_number() OVER (PARTITION BY c.q_bucket ORDER BY c.priority DESC, c.run_at, c.id)
               AS q_rank,
           row_number() OVER (PARTITION BY c.r_bucket ORDER BY c.priority DESC, c.run_at, c.id)
               AS r_rank
    FROM candidates AS c
), chosen AS (
    SELECT id, priority, run_at FROM ranked AS c
    WHERE (c.c_bucket IS NULL OR c.c_rank <= (SELECT room FROM room WHERE bucket = c.c_bucket))
      AND (c.q_bucket IS NULL OR c.q_rank <= (SELECT room FROM room WHERE bucket = c.q_bucket))
      AND (c.r_bucket IS NULL OR c.r_rank <= (SELECT room FROM room WHERE bucket = c.r_bucket))
    ORDER BY priority DESC, run_at, id
), claimable AS (
    SELECT id FROM {live}
    WHERE id = ANY(ARRAY(SELECT id FROM chosen)) AND state = 'available'
    ORDER BY id
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE {live} AS j
    SET state = 'running', attempts = j.attempts + 1, started_at = statement_timestamp(),
        began_at = CASE WHEN j.id = ANY(ARRAY(
                            SELECT id FROM chosen WHERE id IN (SELECT id FROM claimable)
                            LIMIT %(begin)s))
                        THEN statement_timestamp() END,
        heartbeat_at = now(), worker_id = %(worker_id)s,
        limit_buckets = nullif(array_remove(ARRAY[c.c_bucket, c.q_bucket], NULL), '{{}}')
    FROM candidates AS c
    WHERE j.id = ANY(ARRAY(SELECT id FROM claimable)) AND c.id = j.id
    RETURNING j.id, j.queue, j.task, j.payload::text, j.attempts, j.max_attempts,
              date_part('epoch', j.run_at) AS run_at_epoch, j.scheduled_at, j.priority,
              j.workflow_id, j.meta::text AS meta, j.began_at IS NOT NULL AS began,
              c.r_bucket, c.r_period
), logged AS (
    INSERT INTO {rate_starts} (bucket, at, until)
    SELECT r_bucket, statement_timestamp(),
           statement_timestamp() + make_interval(secs => r_period)
    FROM claimed WHERE r_bucket IS NOT NULL
), forgotten AS (
    DELETE FROM {rate_starts}
    WHERE bucket = ANY(%(locked)s::text[]) AND until <= statement_timestamp()
)
SELECT id, queue, task, payload, attempts, max_attempts, run_at_epoch, scheduled_at,
       priority, workflow_id, meta, began
FROM claimed
"""

# The same queue filters as the plain claim's (data/claims.py), on the alias `j`.
ONE_QUEUE = """AND j.queue = %(queue)s
      AND NOT EXISTS (SELECT FROM {queues} WHERE name = %(queue)s AND paused)"""
ANY_QUEUE = "AND j.queue NOT IN (SELECT name FROM {queues} WHERE paused)"
LOCKED_ONLY = """AND array_remove(ARRAY[b.c_bucket, b.q_bucket, b.r_bucket], NULL)
          <@ %(locked)s::text[]"""

# Whether any limit exists: the worker claims the plain way while none does.
ANY_LIMIT = """
SELECT EXISTS (SELECT FROM {task_limits})
    OR EXISTS (SELECT FROM {queues} WHERE max_running IS NOT NULL)
"""

# A worker's tasks' limits, as its code declares them: a limited task's row is written
# (changed only if it differs), an unlimited task's row removed. Tasks this worker does
# not know are left to the workers that do.
DECLARE_TASK_LIMITS = """
WITH declared AS (
    SELECT * FROM unnest(
        %(tasks)s::text[], %(concurrency)s::int[], %(concurrency_keys)s::text[],
        %(rate_counts)s::int[], %(rate_periods)s::float8[], %(rate_keys)s::text[]
    ) AS d(task, concurrency, concurrency_key, rate_count, rate_period, rate_key)
), written AS (
    INSERT INTO {task_limits} AS t
        (task, concurrency, concurrency_key, rate_count, rate_period, rate_key)
    SELECT * FROM declared WHERE concurrency IS NOT NULL OR rate_count IS NOT NULL
    ON CONFLICT (task) DO UPDATE
    SET concurrency = excluded.concurrency, concurrency_key = excluded.concurrency_key,
        rate_count = excluded.rate_count, rate_period = excluded.rate_period,
        rate_key = excluded.rate_key, updated_at = now()
    WHERE (t.concurrency, t.concurrency_key, t.rate_count, t.rate_period, t.rate_key)
          IS DISTINCT FROM (excluded.concurrency, excluded.concurrency_key,
                            excluded.rate_count, excluded.rate_period, excluded.rate_key)
    RETURNING t.task
)
DELETE FROM {task_limits}
WHERE task IN (SELECT task FROM declared WHERE concurrency IS NULL AND rate_count IS NULL)
"""


def _forms() -> dict[tuple[str, bool], str]:
    forms = {}
    for name, template in (("lock", LOCK_BUCKETS), ("claim", CLAIM_LIMITED)):
        for any_queue, queue_filter in ((True, ANY_QUEUE), (False, ONE_QUEUE)):
            candidates = fill(
                CANDIDATES,
                buckets_of_job=BUCKETS_OF_JOB,
                queue_filter=queue_filter,
                locked_filter=LOCKED_ONLY if name == "claim" else "",
            )
            limits_now = fill(LIMITS_NOW, buckets_of_job=BUCKETS_OF_JOB)
            forms[name, any_queue] = fill(template, limits_now=limits_now, candidates=candidates)
    return forms


FORMS = _forms()


class LimitStatements(StatementGroup):
    """Limits' statements for one schema: declaring them, and claiming limited jobs."""

    def any_limit(self, conn: Any) -> bool:
        """Whether any task or queue has a limit now."""
        return bool(self._rows(conn, ANY_LIMIT)[0][0])

    def declare(self, conn: Any, limits: Mapping[str, Any]) -> None:
        """Write the limits of the tasks in `limits` ({task name: TaskLimits or None})."""
        declared = [(name, limits[name]) for name in sorted(limits)]
        params = {
            "tasks": [name for name, _ in declared],
            "concurrency": [_field(v, "concurrency") for _, v in declared],
            "concurrency_keys": [_field(v, "concurrency_key") for _, v in declared],
            "rate_counts": [_field(v, "rate_count") for _, v in declared],
            "rate_periods": [_field(v, "rate_period") for _, v in declared],
            "rate_keys": [_field(v, "rate_key") for _, v in declared],
        }
        self._rows(conn, DECLARE_TASK_LIMITS, params)

    def claim(
        self, conn: Any, *, limit: int, queue: str | None, worker_id: str, begin: int = 0
    ) -> tuple[list[ClaimedJob], set[int]]:
        """Claim up to `limit` jobs of limited tasks and queues within their limits, the
        first `begin` of them ready for threads; the jobs and the ids readied."""
        plan = self.claim_plan(limit=limit, queue=queue, worker_id=worker_id, begin=begin)
        return claimed_jobs(run(conn, self.schema, plan))

    def claim_plan(
        self, *, limit: int, queue: str | None, worker_id: str, begin: int
    ) -> Plan[list[tuple[Any, ...]]]:
        """Claim up to `limit` jobs of limited tasks and queues (of `queue`, or of any
        queue when None), within every limit, in one transaction; the claimed rows."""
        claimed: list[tuple[Any, ...]] = yield Atomic(
            self._claim_steps(limit, queue, worker_id, begin)
        )
        return claimed

    def _claim_steps(
        self, limit: int, queue: str | None, worker_id: str, begin: int
    ) -> Plan[list[tuple[Any, ...]]]:
        """Rounds of LOCK_BUCKETS and CLAIM_LIMITED in one transaction. A round takes
        the first waiting jobs whose buckets have room; when their buckets had less room
        than jobs (one key's jobs first in line), the next round, which sees this
        transaction's own claims, passes over the buckets now full and reaches the
        jobs of other keys."""
        claimed: list[tuple[Any, ...]] = []
        for _ in range(CLAIM_ROUNDS):
            params: dict[str, Any] = {"limit": limit - len(claimed), "queue": queue}
            locked = yield Statement(self.sql.render(FORMS["lock", queue is None]), params)
            if not locked:
                break
            params |= {
                "locked": [row[0] for row in locked],
                "worker_id": worker_id,
                "begin": max(begin - sum(1 for row in claimed if row[-1]), 0),
            }
            rows = yield Statement(self.sql.render(FORMS["claim", queue is None]), params)
            claimed += rows
            if not rows or len(claimed) >= limit:
                break
        return claimed


def _field(limits: Any, name: str) -> Any:
    return None if limits is None else getattr(limits, name)
