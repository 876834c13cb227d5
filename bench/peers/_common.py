"""What every per-system script of `bench/compare.py` shares: its command line, its output,
the producer's pacing and the task-start marks.

Each system (pgjobs, procrastinate, pgqueuer, the raw-SQL baseline) has one script in this
folder that knows everything about it: how to install its schema, enqueue through its own
API, claim through its own code, and which of its tables tell when a job started and
finished. The scripts run as subprocesses, the peers' with the python of their own
virtualenv, so this module uses nothing but the standard library.

Commands (every script answers the same ones, and prints one JSON object on stdout):

    describe                       the SQL compare.py runs to observe, fill and reset the tables
    install  --url U               the system's own schema install
    bulk     --url U --count N     N jobs in one call of the system's bulk API    -> seconds
    single   --url U --count N     N jobs, one call and one transaction each        -> seconds
    produce  --url U --count N --rate R --first F --lanes L --out FILE
                                   N jobs (payloads n = F, F+1, ...) paced at R/s, one
                                   transaction each, dealt to L connections in turn;
                                   FILE gets [[n, commit time], ...]
    claim    --url U --count K --batch B --budget S
                                   K claims of up to B jobs through the system's claim code,
                                   each timed on its own, fewer if S seconds ran out -> ms
    work     (raw_sql.py and pgqueuer_bench.py only) the worker, until SIGTERM; the other
             workers are their systems' own CLIs
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

TASK = "bench.job"
# compare.py sets this for workers of the latency scenarios; the tasks then append one
# line per start to it. Unset (the drains), a task does nothing at all.
STARTS_FILE_VARIABLE = "BENCH_STARTS_FILE"
# The database of the system, for the modules that workers import (they cannot be given
# a --url: their CLI imports them).
DATABASE_URL_VARIABLE = "BENCH_DATABASE_URL"


def payload(n: int) -> dict[str, int]:
    """The job's arguments: only its sequence number, so every system carries the same."""
    return {"n": n}


class StartMarks:
    """Appends `n wall-clock-time` for each task start to the file named by the environment.

    One `write` on an O_APPEND descriptor is atomic for lines this short, so threads,
    coroutines and processes may all append without a lock, and no database round trip is
    added to the task being measured.
    """

    def __init__(self) -> None:
        path = os.environ.get(STARTS_FILE_VARIABLE)
        self.enabled = bool(path)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644) if path else -1

    def mark(self, n: int) -> None:
        """Record that job `n` started now."""
        if self.enabled:
            os.write(self._fd, f"{n} {time.time():.6f}\n".encode())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="one system's workloads for bench/compare.py")
    parser.add_argument(
        "command", choices=["describe", "install", "bulk", "single", "produce", "claim", "work"]
    )
    parser.add_argument(
        "--url",
        default=os.environ.get(DATABASE_URL_VARIABLE, ""),
        help="URL of the system's database",
    )
    parser.add_argument("--count", type=int, default=0)
    parser.add_argument("--rate", type=float, default=0.0, help="produce: jobs per second")
    parser.add_argument("--first", type=int, default=0, help="produce: first sequence number")
    parser.add_argument("--lanes", type=int, default=1, help="produce: connections in turn")
    parser.add_argument("--out", default="", help="produce: where the commit times go")
    parser.add_argument("--batch", type=int, default=10, help="claim/work: jobs per claim")
    parser.add_argument(
        "--budget", type=float, default=30.0, help="claim: stop after this many seconds"
    )
    parser.add_argument("--threads", type=int, default=4, help="work: claiming threads")
    return parser.parse_args(argv)


def emit(result: dict[str, Any]) -> None:
    """The script's answer: one JSON object on stdout."""
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


class Schedule:
    """When each job of a producer is due: job k at start + k / rate, n = first + k.

    A fixed schedule, not a sleep after each job: a producer that falls behind catches up
    instead of drifting, and the commit times show whether it kept the rate. The jobs are
    dealt round-robin to `lanes` connections, each committing one job per transaction, so
    the rate does not hinge on one connection's commit latency.
    """

    LEAD = 0.2  # seconds for the lanes to connect before the first job is due

    def __init__(self, count: int, rate: float, first: int, lanes: int) -> None:
        self.count = count
        self.rate = rate
        self.first = first
        self.lanes = lanes
        self.start = time.monotonic() + self.LEAD

    def _lane(self, lane: int) -> Iterator[tuple[int, float]]:
        for k in range(lane, self.count, self.lanes):
            yield self.first + k, self.start + k / self.rate

    def paced(self, lane: int) -> Iterator[int]:
        """The sequence numbers of one lane, each released when it is due."""
        for n, due in self._lane(lane):
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            yield n

    async def paced_async(self, lane: int) -> AsyncIterator[int]:
        """`paced` for asyncio producers."""
        for n, due in self._lane(lane):
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            yield n


def in_lanes(lanes: int, produce_lane: Callable[[int], list[tuple[int, float]]]) -> list[Any]:
    """Run `produce_lane(lane)` on one thread per lane; all their commits, merged."""
    with ThreadPoolExecutor(lanes) as pool:
        return [commit for commits in pool.map(produce_lane, range(lanes)) for commit in commits]


async def in_lanes_async(
    lanes: int, produce_lane: Callable[[int], Awaitable[list[tuple[int, float]]]]
) -> list[Any]:
    """`in_lanes` for asyncio producers: one task per lane."""
    results = await asyncio.gather(*(produce_lane(lane) for lane in range(lanes)))
    return [commit for commits in results for commit in commits]


MIN_CLAIMS = 3


def timed_claims(count: int, budget: float, claim: Callable[[], object]) -> list[float]:
    """Milliseconds of each of `count` claims, or of as many as fit in `budget` seconds
    (at least MIN_CLAIMS): a claim that costs seconds on a big table must not stall the run."""
    deadline = time.monotonic() + budget
    timings: list[float] = []
    while len(timings) < count and (len(timings) < MIN_CLAIMS or time.monotonic() < deadline):
        started = time.perf_counter()
        claim()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


async def timed_claims_async(
    count: int, budget: float, claim: Callable[[], Awaitable[object]]
) -> list[float]:
    """`timed_claims` for asyncio claimers."""
    deadline = time.monotonic() + budget
    timings: list[float] = []
    while len(timings) < count and (len(timings) < MIN_CLAIMS or time.monotonic() < deadline):
        started = time.perf_counter()
        await claim()
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def write_commits(path: str, commits: list[tuple[int, float]]) -> None:
    """The producer's record: when each job's transaction had committed (wall clock)."""
    with open(path, "w") as file:
        json.dump(commits, file)


@dataclass(frozen=True)
class SyncWorkloads:
    """What a system with a synchronous client does for each command of compare.py."""

    version: str
    description: dict[str, str]
    install: Callable[[str], None]
    bulk: Callable[[str, int], float]
    single: Callable[[str, int], float]
    produce: Callable[[str, int, float, int, int], list[Any]]
    claim: Callable[[str, int, int, float], list[float]]


def run_sync(args: argparse.Namespace, workloads: SyncWorkloads) -> bool:
    """Run `args.command` with `workloads`; False when the command is not one of theirs."""
    started = time.perf_counter()
    if args.command == "describe":
        emit({"version": workloads.version, "sql": workloads.description})
    elif args.command == "install":
        workloads.install(args.url)
        emit({})
    elif args.command == "bulk":
        emit({"seconds": workloads.bulk(args.url, args.count)})
    elif args.command == "single":
        emit({"seconds": workloads.single(args.url, args.count)})
    elif args.command == "produce":
        commits = workloads.produce(args.url, args.count, args.rate, args.first, args.lanes)
        write_commits(args.out, commits)
        emit({"seconds": time.perf_counter() - started})
    elif args.command == "claim":
        emit({"ms": workloads.claim(args.url, args.count, args.batch, args.budget)})
    else:
        return False
    return True
