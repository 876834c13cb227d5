"""The worker's per-job Python without a database: the claim buffer and the executor
threads alone, fed ready jobs, their outcomes dropped.

    python bench/profile/hot_path.py [--jobs 200000] [--rounds 3]

pgjobs' own `ClaimBuffer` and `ExecutorPool` (with its `OutcomePolicy` and an `EventBus`
that logging subscribes to, as `worker/assembly.py` builds them), serving a no-op task.
This thread plays the fetcher: it adds jobs already readied (no readier), as many as the
buffer has room for, whenever the buffer asks for more; the outcomes go to a list under a
lock (a completer's queue without its writes). Per thread count: jobs/s, the process's
CPU per job (user + system, `time.process_time`), and how often per job the buffer asked
for a claim (in a worker: the fetcher woken). With one thread a job passes no hand-off
between executor threads; the difference to ten threads is what waking threads and
sharing the buffer's lock cost, on the same machine, in the same run.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parent.parent / "peers")]

import pgjobs  # noqa: E402
from pgjobs.types import ClaimedJob, Outcome  # noqa: E402
from pgjobs.worker.claim_buffer import ClaimBuffer  # noqa: E402
from pgjobs.worker.events import EventBus  # noqa: E402
from pgjobs.worker.executor import ExecutorPool  # noqa: E402
from pgjobs.worker.log_events import log_event, logged_event_types  # noqa: E402
from pgjobs.worker.outcomes import OutcomePolicy  # noqa: E402

THREADS = (1, 2, 4, 10, 32)
PREFETCH = 1024

app = pgjobs.App(schema="pgjobs")


@app.task(name="bench.job")
def job(n: int) -> None:
    """A no-op, as compare.py's drains run."""


def drain(threads: int, count: int) -> tuple[float, float, dict[str, float]]:
    """Jobs/s and CPU µs per job of `count` jobs on `threads` executor threads, and how
    often per job the buffer called for a claim and for readying."""
    buffer = ClaimBuffer(threads, PREFETCH)
    wanted = threading.Event()
    calls = {"claim wanted": 0}

    def claim_wanted() -> None:
        calls["claim wanted"] += 1
        wanted.set()

    buffer.on_room(claim_wanted)
    buffer.on_ready_wanted(lambda: None)
    events = EventBus()
    events.subscribe(log_event, *logged_event_types())
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def report(outcome: Outcome) -> None:
        with lock:
            outcomes.append(outcome)

    policy = OutcomePolicy(app.tasks, app.backoff, random.random, "hot-path")
    pool = ExecutorPool(buffer=buffer, policy=policy, report=report, events=events)
    now = time.time()
    jobs = [
        ClaimedJob(n, "default", "bench.job", f'{{"n": {n}}}', 1, 20, now) for n in range(count)
    ]
    pool.start()
    started, cpu = time.perf_counter(), time.process_time()
    added = 0
    while added < count:
        room = buffer.room()
        if room <= 0:
            wanted.wait(0.01)
            wanted.clear()
            continue
        batch = jobs[added : added + room]
        buffer.add(batch, ready={j.id for j in batch})
        added += len(batch)
    while len(outcomes) < count:
        time.sleep(0.001)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    buffer.close()
    pool.stop(5.0)
    return count / seconds, cpu / count * 1e6, {k: v / count for k, v in calls.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="*", default=THREADS)
    args = parser.parse_args()
    counts = tuple(args.threads)
    results: dict[int, list[tuple[float, float, dict[str, float]]]] = {n: [] for n in counts}
    for number in range(args.rounds):
        for threads in counts if number % 2 == 0 else counts[::-1]:
            results[threads].append(drain(threads, args.jobs))
    print(f"{args.jobs:,} no-op jobs, {args.rounds} rounds, medians\n")
    print("| executor threads | jobs/s | CPU µs per job | claims wanted per job |")
    print("| ---: | ---: | ---: | ---: |")
    for threads, rounds in results.items():
        rate = statistics.median(r[0] for r in rounds)
        cpu = statistics.median(r[1] for r in rounds)
        claim = statistics.median(r[2]["claim wanted"] for r in rounds)
        print(f"| {threads} | {rate:,.0f} | {cpu:.2f} | {claim:.3f} |")


if __name__ == "__main__":
    main()
