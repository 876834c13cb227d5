"""How long the `pgjobs` command takes to start, against `python -c pass` in the same run.

    python bench/startup.py [--database-url URL] [--runs 15]

Every command runs as a fresh subprocess (`python -m pgjobs …`, the same interpreter as
this script), so the figures include the interpreter's own start, every import and, for
`stats`, connecting and one query. With no `--database-url` and no
`PGJOBS_DATABASE_URL`, `stats` runs against a throwaway cluster from
`pgjobs.embedded.temporary_cluster()`; on a real server it migrates a schema called
`pgjobs_bench_<random>` and drops it at the end.

The commands run in turn, round by round, so noise on the machine falls on all of them
alike; the table shows the median of the rounds, the fastest and slowest, and the median
less the baseline's (what pgjobs itself costs). `import psycopg` is shown because every
command that talks to the database needs it: it is the floor for `stats`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import psycopg
from psycopg import sql

# Settings from the caller's shell would change what the commands do. Bytecode is
# written and reused, as it is for an installed package (pip compiles at install): a
# shell with PYTHONDONTWRITEBYTECODE would otherwise compile pgjobs' modules every run.
HIDDEN = (
    "PGJOBS_DATABASE_URL",
    "DATABASE_URL",
    "PGJOBS_SCHEMA",
    "PGJOBS_DEBUG",
    "PYTHONDONTWRITEBYTECODE",
)


def run_once(command: list[str], env: dict[str, str]) -> float:
    """Seconds one run of `command` took; it must succeed."""
    started = time.perf_counter()
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{result.stderr}")
    return elapsed


@contextmanager
def bench_schema(url: str, env: dict[str, str]) -> Iterator[str]:
    """A migrated schema of this run's own, dropped afterwards."""
    schema = f"pgjobs_bench_{uuid.uuid4().hex[:8]}"
    pgjobs = [sys.executable, "-m", "pgjobs"]
    run_once([*pgjobs, "migrate", "--database-url", url, "--schema", schema], env)
    try:
        yield schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def database_url(stack: ExitStack, explicit: str | None) -> str:
    """The given URL, else a throwaway cluster that lives as long as `stack`."""
    url = explicit or os.environ.get("PGJOBS_DATABASE_URL")
    if url:
        return url
    from pgjobs.embedded import temporary_cluster

    return stack.enter_context(temporary_cluster())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: a throwaway local cluster")
    parser.add_argument("--runs", type=int, default=15, help="rounds (default 15)")
    args = parser.parse_args()
    env = {key: value for key, value in os.environ.items() if key not in HIDDEN}
    python = sys.executable
    with ExitStack() as stack:
        url = database_url(stack, args.database_url)
        schema = stack.enter_context(bench_schema(url, env))
        commands = {
            "python -c pass (baseline)": [python, "-c", "pass"],
            "python -c 'import psycopg'": [python, "-c", "import psycopg"],
            "pgjobs --help": [python, "-m", "pgjobs", "--help"],
            "pgjobs stats": [
                *(python, "-m", "pgjobs", "stats"),
                *("--database-url", url, "--schema", schema),
            ],
        }
        times: dict[str, list[float]] = {name: [] for name in commands}
        for command in commands.values():  # an untimed run warms the disk and bytecode caches
            run_once(command, env)
        for _ in range(args.runs):
            for name, command in commands.items():
                times[name].append(run_once(command, env))
    print_table(times, args.runs)


def print_table(times: dict[str, list[float]], runs: int) -> None:
    baseline = statistics.median(next(iter(times.values())))
    width = max(len(name) for name in times)
    print(f"startup time, median of {runs} runs ({sys.executable})")
    print(f"{'command':<{width}}  {'median':>8}  {'range':>15}  {'minus baseline':>14}")
    for name, samples in times.items():
        median = statistics.median(samples)
        spread = f"{min(samples):.3f}-{max(samples):.3f} s"
        print(f"{name:<{width}}  {median:>6.3f} s  {spread:>15}  {median - baseline:>12.3f} s")


if __name__ == "__main__":
    main()
