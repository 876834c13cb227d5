"""Side-by-side benchmark: pgjobs, procrastinate, pgqueuer and a raw-SQL baseline.

    python bench/compare.py             # full run, about 15 minutes on 2 cores
    python bench/compare.py --quick     # smaller counts, 1-2 minutes
    python bench/compare.py --json results.json --scenarios drain,latency --systems pgjobs,raw

Everything it needs it sets up itself: a throwaway PostgreSQL cluster from
`pgjobs.embedded.temporary_cluster()` (the bundled server of `pgjobs[embedded]`, else the
machine's binaries; Unix socket only, deleted at the end) with one database per system, and
a virtualenv `bench/.peers-venv` with the peers (`procrastinate`, `pgqueuer[asyncpg]`, and
psycopg pinned to pgjobs' version) from the package index, kept apart from pgjobs'
dependencies and reused while its requirements are unchanged.

Each system is driven by one script in `bench/peers/` that knows everything about it
(schema install, its own enqueue API, its own claim, which tables record a job's start and
end); the peers' scripts and workers run with the peers' python. Every worker is a
subprocess started through the system's own CLI (`pgjobs work`, `procrastinate worker`,
`pgq run`; the baseline's `raw_sql.py work`), with logging at WARNING for all.

`pgjobs-async` is pgjobs' worker with `--async-claim-commit` added to every setting (claims
commit without waiting for the disk), a row of its own in the drain, latency and steady
scenarios beside the durable default; it is not a peer.

This file only starts the package beside it, `bench/comparison/`:

- `drivers/`: one module per system (how its worker starts, its worker settings per
  scenario, `WORKER_ARGS`, and its claim batch), `pgjobs_async.py` the variant;
- `scenarios/`: one module per scenario, whose docstring says how it is measured (bulk and
  single enqueue, drain and async drain, idle pickup latency, steady state, claim cost,
  worker memory);
- `common/`: the cluster and databases, the peers' scripts, worker processes, the tables,
  commit-to-start latency, the CPU a drain costs per job (the server's backends and the
  workers, `cpu.py`), the counts (FULL, QUICK) and timeouts, and the report;
- `runner.py` takes the scenarios in turn, `cli.py` is the command line.

Before every timed run the tables are emptied, VACUUM ANALYZE'd and CHECKPOINTed.
Scenarios run one after the other, each for every system in turn. Single enqueue and the
drains are taken in rounds: every system has its turn in each round, in an order that
rotates, so that a slow spell of the machine falls on all systems alike. Ratios are a
system's figure divided by the best peer's, and by the baseline's; the arrow in the metric
says whether higher or lower is better. On a small shared machine absolute figures are
noisy: compare ratios, and runs with each other, not with other machines.
"""

from __future__ import annotations

from comparison.cli import run

if __name__ == "__main__":
    run((__doc__ or "").splitlines()[0])
