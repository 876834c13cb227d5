"""What the claim and the completion cost the server per row, as sent and in variants.

    python bench/profile/statements.py [--jobs 20000] [--reps 3] [--per-fill 10]

The groundwork for the changes `bench/PROFILE.md` ranks: each statement is timed as the
backend's CPU (its process clock around the statement, so parse, plan, execution and the
commit of an autocommit statement), per row, on a table freshly filled with `--jobs`
waiting jobs, VACUUM ANALYZEd and CHECKPOINTed (so the first change of each page writes a
full-page image, as in compare.py's drains). Every variant gets `--reps` fills, taken in
turn with the others' (so a slow spell of the machine falls on all), and `--per-fill`
statements each; the figure is the median of those statements, the spread their
quartiles. The variants are not pgjobs' code: they measure what a change would gain.

- claims of 416 rows (a drain's mean, `drain.py`'s census): pgjobs' CLAIM as the worker
  sends it; the same setting only the columns raw SQL's sets; the same on a copy of the
  schema without `jobs_running_idx` and `jobs_finished_idx` ("lean"); the same with only
  the primary key and the fetch index ("bare"); raw SQL's claim as `raw_sql.py` sends it
  (`WHERE id IN (subquery)`) and with the ids as an array (`= ANY(ARRAY(subquery))`);
- completions of 388 rows: COMPLETE_JOBS as sent (outcomes locked in id order by a
  lateral lookup each, then moved by an array of their ids: deleted from `jobs_live`,
  inserted into `jobs_history`); the same move with the guard in the DELETE's own WHERE
  (no lock pass; the attempt checked against a JSON object of the attempts), with no
  attempt check at all, and on the lean schema; raw SQL's completion;
- CLAIM's cost against its size: 10 to 1,000 rows a claim, server µs per statement, for a
  fixed and a per-row part; and prepared on the server but planned for each call's
  parameters, which saves parsing and analysis only;
- what a statement costs beyond its rows: a one-row UPDATE of the worker's row that
  commits, durably and with `synchronous_commit` off (as READY_JOBS does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE.parent / "peers")]

import raw_sql  # noqa: E402  (bench/peers: the baseline's schema and statements)
from harness import live_of, make_partitions, tables_of  # noqa: E402

from pgjobs.data.claims import CLAIM, claim_params  # noqa: E402
from pgjobs.data.history import moved_row  # noqa: E402
from pgjobs.data.layer import DataLayer  # noqa: E402
from pgjobs.data.outcome_sql import COMPLETE_JOBS  # noqa: E402
from pgjobs.data.sql import int_array  # noqa: E402
from pgjobs.embedded import temporary_cluster  # noqa: E402
from pgjobs.migrate import upgrade  # noqa: E402

WORKER_ID = "profile"
CLAIM_ROWS = 416
COMPLETE_ROWS = 388
SIZES = (10, 50, 200, 416, 1000)
# Schemas: pgjobs as migrated, and copies with indexes dropped.
SCHEMAS = {
    "pgjobs": (),
    "lean": ("jobs_running_idx", "jobs_finished_idx"),
    "bare": (
        "jobs_running_idx", "jobs_finished_idx", "jobs_errors_idx", "jobs_fetch_idx",
        "jobs_limit_buckets_idx", "jobs_scheduled_idx", "jobs_unique_key_idx",
        "jobs_workflow_step_idx",
    ),
}  # fmt: skip

# CLAIM setting what raw SQL's claim sets, and returning the same columns.
CLAIM_LIKE_RAW = """
WITH claimable AS (
    SELECT id FROM {live}
    WHERE state = 'available' AND run_at <= now()
    ORDER BY priority DESC, run_at, id
    LIMIT %(limit)s
    FOR UPDATE SKIP LOCKED
)
UPDATE {live} AS j
SET state = 'running', started_at = now(), worker_id = %(worker_id)s
WHERE j.id = ANY(ARRAY(SELECT id FROM claimable))
RETURNING j.id, j.queue, j.task, j.payload::text, j.attempts, j.max_attempts,
          date_part('epoch', j.run_at), j.scheduled_at, j.priority, j.workflow_id,
          j.meta::text, j.began_at IS NOT NULL
"""
# COMPLETE_JOBS without the lock pass: the guard in the DELETE's own WHERE (which locks
# the rows it deletes, in the primary key's order, and re-checks the guard on a row
# changed meanwhile), the attempt looked up in a JSON object of `{id: attempt}`; the rows
# moved into the history as COMPLETE_JOBS moves them.
MOVED = """
WITH done AS (
    DELETE FROM {{live}} AS j
    WHERE j.id = ANY(%(ids)s::bigint[]) AND j.state = 'running'
      AND j.worker_id = %(worker_id)s{attempt}
    RETURNING j.*
)
INSERT INTO {{history}}
SELECT {row} FROM done
RETURNING id
"""
COMPLETED_ROW = moved_row("done", state="'completed'", finished_at="now()", heartbeat_at="NULL")
COMPLETE_GUARDED = MOVED.format(
    attempt="\n      AND j.attempts = (%(attempts)s::jsonb ->> j.id::text)::int", row=COMPLETED_ROW
)
COMPLETE_UNGUARDED = MOVED.format(attempt="", row=COMPLETED_ROW)
RAW_CLAIM_ARRAY = raw_sql.CLAIM.replace("WHERE id IN (", "WHERE id = ANY(ARRAY(").replace(
    "SKIP LOCKED\n)", "SKIP LOCKED\n))"
)


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Bench:
    """The cluster's connections: `admin` fills, `conn` runs the timed statements."""

    def __init__(self, url: str, jobs: int) -> None:
        self.admin = psycopg.connect(url, autocommit=True)
        self.conn = psycopg.connect(url, autocommit=True, prepare_threshold=None)
        self.clock = ((~self.conn.info.backend_pid) << 3) | 2
        self.jobs = jobs

    def close(self) -> None:
        self.admin.close()
        self.conn.close()

    def timed(
        self, statement: Any, params: Any, binary: bool = False, prepare: bool | None = None
    ) -> tuple[int, float]:
        """Rows, and the backend's CPU µs for one statement."""
        before = time.clock_gettime_ns(self.clock)
        cur = self.conn.execute(statement, params, binary=binary, prepare=prepare)
        rows = len(cur.fetchall()) if cur.description else cur.rowcount
        return rows, (time.clock_gettime_ns(self.clock) - before) / 1e3

    def fill_pgjobs(self, schema: str) -> None:
        """`--jobs` waiting jobs in `jobs_live`, the history empty (its partitions of
        today made: the completions move their rows into them)."""
        tables = sql.SQL(", ").join(tables_of(self.admin, schema))
        self.admin.execute(sql.SQL("TRUNCATE {} RESTART IDENTITY").format(tables))
        make_partitions(self.admin, schema)
        jobs = live_of(self.admin, schema)
        with self.admin.transaction():
            self.admin.execute("SET LOCAL session_replication_role = replica")
            self.admin.execute(
                sql.SQL(
                    "INSERT INTO {} (task, payload) SELECT 'bench.job', jsonb_build_object('n', g)"
                    " FROM generate_series(1, %s) g"
                ).format(jobs),
                (self.jobs,),
            )
        self.settle(jobs)

    def fill_raw(self) -> None:
        self.admin.execute(raw_sql.DESCRIPTION["reset"])
        with self.admin.transaction():
            self.admin.execute("SET LOCAL session_replication_role = replica")
            self.admin.execute(raw_sql.DESCRIPTION["fill_waiting"], {"count": self.jobs})
        self.settle(sql.Identifier("raw_jobs"))

    def settle(self, table: sql.Identifier) -> None:
        self.admin.execute(sql.SQL("VACUUM ANALYZE {}").format(table))
        self.admin.execute("CHECKPOINT")


def claim_args(limit: int) -> dict[str, Any]:
    """CLAIM's parameters for a claim of `limit` jobs by this script's worker."""
    return claim_params(limit=limit, worker_id=WORKER_ID, begin=10)


def claimed(bench: Bench, schema: str, count: int) -> list[int]:
    """Claim `count` jobs as the worker does (untimed): their ids, in id order."""
    claim = DataLayer(schema).sql.render(CLAIM)
    rows = bench.conn.execute(claim, claim_args(count), binary=True).fetchall()
    return sorted(row[0] for row in rows)


Variant = Callable[[Bench, int], list[tuple[int, float]]]


def claims_of(
    schema: str, template: str | None = None, limit: int = CLAIM_ROWS, prepared: bool = False
) -> Variant:
    """`per_fill` claims of `limit` on a fresh fill of `schema`; `prepared`: as a
    server-side prepared statement planned anew for its parameters each time
    (`plan_cache_mode = force_custom_plan`), so only parsing and analysis are saved."""

    def run(bench: Bench, per_fill: int) -> list[tuple[int, float]]:
        bench.fill_pgjobs(schema)
        layer = DataLayer(schema)
        claim = layer.sql.render(template or CLAIM)
        if not prepared:
            return [bench.timed(claim, claim_args(limit), binary=True) for _ in range(per_fill)]
        bench.conn.execute("SET plan_cache_mode = force_custom_plan")
        try:
            bench.conn.execute(sql.SQL("EXPLAIN ") + claim, claim_args(1), prepare=True)
            return [
                bench.timed(claim, claim_args(limit), binary=True, prepare=True)
                for _ in range(per_fill)
            ]
        finally:
            bench.conn.execute("RESET plan_cache_mode")

    return run


def commits(durable: bool) -> Variant:
    """A statement that changes one row and commits: what a statement costs the server
    beyond its rows, with the commit waiting for the disk or not."""

    def run(bench: Bench, per_fill: int) -> list[tuple[int, float]]:
        update = sql.SQL(
            "UPDATE {} SET last_heartbeat_at = now() WHERE id = %(id)s RETURNING true"
        ).format(sql.Identifier("pgjobs", "workers"))
        if not durable:
            update = sql.SQL(
                "WITH async_commit AS MATERIALIZED ("
                "SELECT set_config('synchronous_commit', 'off', true)) "
            ) + update + sql.SQL(" AND EXISTS (SELECT FROM async_commit)")  # fmt: skip
        return [bench.timed(update, {"id": WORKER_ID}) for _ in range(per_fill)]

    return run


def raw_claims(statement: str) -> Variant:
    def run(bench: Bench, per_fill: int) -> list[tuple[int, float]]:
        bench.fill_raw()
        return [bench.timed(statement, {"batch": CLAIM_ROWS}) for _ in range(per_fill)]

    return run


def completions_of(schema: str, form: str) -> Variant:
    """`per_fill` completions of COMPLETE_ROWS claimed jobs on a fresh fill of `schema`."""

    def run(bench: Bench, per_fill: int) -> list[tuple[int, float]]:
        bench.fill_pgjobs(schema)
        layer = DataLayer(schema)
        ids = claimed(bench, schema, per_fill * COMPLETE_ROWS)
        found = []
        for start in range(0, per_fill * COMPLETE_ROWS, COMPLETE_ROWS):
            batch = ids[start : start + COMPLETE_ROWS]
            params = {
                "ids": int_array(batch),
                "attempts": int_array([1] * len(batch)),
                "worker_id": WORKER_ID,
            }
            if form == "guarded":
                params["attempts"] = json.dumps(dict.fromkeys(map(str, batch), 1))
            template = {
                "as sent": COMPLETE_JOBS,
                "guarded": COMPLETE_GUARDED,
                "unguarded": COMPLETE_UNGUARDED,
            }[form]
            found.append(bench.timed(layer.sql.render(template), params))
        return found

    return run


def raw_completions(bench: Bench, per_fill: int) -> list[tuple[int, float]]:
    bench.fill_raw()
    found = []
    for _ in range(per_fill):
        rows = bench.conn.execute(raw_sql.CLAIM, {"batch": COMPLETE_ROWS}).fetchall()
        found.append(bench.timed(raw_sql.COMPLETE, ([row[0] for row in rows],)))
    return found


VARIANTS: dict[str, Variant] = {
    "claim: CLAIM as sent": claims_of("pgjobs"),
    "claim: CLAIM setting raw SQL's columns": claims_of("pgjobs", CLAIM_LIKE_RAW),
    "claim: CLAIM, lean schema": claims_of("lean"),
    "claim: CLAIM, bare schema": claims_of("bare"),
    "claim: raw SQL as sent (IN subquery)": raw_claims(raw_sql.CLAIM),
    "claim: raw SQL, = ANY(ARRAY(subquery))": raw_claims(RAW_CLAIM_ARRAY),
    "completion: COMPLETE_JOBS as sent": completions_of("pgjobs", "as sent"),
    "completion: guard in the DELETE, no lock pass": completions_of("pgjobs", "guarded"),
    "completion: no attempt check, no lock pass": completions_of("pgjobs", "unguarded"),
    "completion: COMPLETE_JOBS, lean schema": completions_of("lean", "as sent"),
    "completion: COMPLETE_JOBS, bare schema": completions_of("bare", "as sent"),
    "completion: raw SQL as sent": raw_completions,
}
VARIANTS |= {f"size: CLAIM of {size}": claims_of("pgjobs", limit=size) for size in SIZES}
VARIANTS |= {
    "size: CLAIM of 10, prepared, custom plan": claims_of("pgjobs", limit=10, prepared=True),
    "size: CLAIM of 416, prepared, custom plan": claims_of("pgjobs", prepared=True),
    "commit: one-row UPDATE, durable": commits(durable=True),
    "commit: one-row UPDATE, synchronous_commit off": commits(durable=False),
}


def quartiles(values: list[float]) -> tuple[float, float, float]:
    if len(values) < 2:
        return values[0], values[0], values[0]
    low, middle, high = statistics.quantiles(values, n=4)
    return low, middle, high


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--per-fill", type=int, default=10)
    parser.add_argument("--only", default="", help="a substring of the variants to run")
    args = parser.parse_args()
    if args.per_fill * max(CLAIM_ROWS, COMPLETE_ROWS, *SIZES) > args.jobs:
        parser.error("--jobs must hold --per-fill of the largest claims")
    chosen = {name: run for name, run in VARIANTS.items() if args.only in name}
    per_row: dict[str, list[float]] = {name: [] for name in chosen}
    per_call: dict[str, list[float]] = {name: [] for name in chosen}
    rows: dict[str, list[int]] = {name: [] for name in chosen}
    started = time.monotonic()
    with ExitStack() as stack:
        say("starting a throwaway PostgreSQL cluster...")
        url = stack.enter_context(temporary_cluster())
        for schema, dropped in SCHEMAS.items():
            upgrade(url, schema)
            with psycopg.connect(url, autocommit=True) as conn:
                for index in dropped:
                    conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(schema, index)))
                conn.execute(
                    sql.SQL(
                        "INSERT INTO {} (id, host, pid, queues, concurrency, version, "
                        "rescue_after, duties) VALUES (%s, 'profile', 1, '{{}}', 10, 'profile', "
                        "60, '{{}}')"
                    ).format(sql.Identifier(schema, "workers")),
                    (WORKER_ID,),
                )
        raw_sql.install(url)
        bench = Bench(url, args.jobs)
        stack.callback(bench.close)
        version = bench.admin.execute("SHOW server_version").fetchone()
        names = list(chosen)
        for rep in range(args.reps):
            say(f"rep {rep + 1} of {args.reps}")
            turn = rep % len(names)
            for name in names[turn:] + names[:turn]:
                for count, micros in chosen[name](bench, args.per_fill):
                    rows[name].append(count)
                    per_call[name].append(micros)
                    per_row[name].append(micros / max(count, 1))
    print(
        f"PostgreSQL {version[0] if version else '?'}; {args.jobs:,} jobs a fill, "
        f"{args.reps} fills per variant, {args.per_fill} statements a fill; "
        f"{time.monotonic() - started:.0f} s\n"
    )
    print("| variant | rows | server µs per statement | server µs per row (quartiles) |")
    print("| --- | ---: | ---: | ---: |")
    for name in chosen:
        low, middle, high = quartiles(per_row[name])
        print(
            f"| {name} | {statistics.median(rows[name]):,.0f} | "
            f"{statistics.median(per_call[name]):,.0f} | {middle:.2f} ({low:.2f}-{high:.2f}) |"
        )
    sizes = [(size, f"size: CLAIM of {size}") for size in SIZES]
    points = [(size, statistics.median(per_call[name])) for size, name in sizes if name in per_call]
    if len(points) >= 2:
        slope, intercept = statistics.linear_regression(*zip(*points, strict=True))
        print(
            f"\nCLAIM's server CPU against its size (least squares over the medians): "
            f"{intercept:,.0f} µs a statement + {slope:.2f} µs a row."
        )


if __name__ == "__main__":
    main()
