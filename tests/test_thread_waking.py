"""How the claim buffer wakes threads, in-process: short jobs are left to the threads
running already, a stalled thread does not keep ready jobs waiting, and the fetcher is
called once per look rather than once per job."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Container, Iterator

import pytest

from pgjobs import App
from pgjobs.types import ClaimedJob, Outcome
from pgjobs.worker.claim_buffer import ClaimBuffer
from pgjobs.worker.events import EventBus
from pgjobs.worker.executor import ExecutorPool
from pgjobs.worker.outcomes import OutcomePolicy
from tests.helpers import wait_until

NOOP = 0.00001  # what a no-op job measures in a worker: 10 µs
Starter = Callable[[ClaimBuffer, int, threading.Event, Container[int]], dict[int, str]]


def jobs(first: int, count: int, task: str = "noop") -> list[ClaimedJob]:
    return [
        ClaimedJob(n, "default", task, "{}", 1, 1, time.time()) for n in range(first, first + count)
    ]


@pytest.fixture
def threads() -> Iterator[Starter]:
    """Start `n` threads that run a buffer's jobs as executor threads do; the jobs of
    `holding` ids hold their thread until `release` is set. Returns {job id: thread
    name}, filled as they go."""
    started: list[threading.Thread] = []
    buffers: list[ClaimBuffer] = []

    def start(
        buffer: ClaimBuffer, n: int, release: threading.Event, holding: Container[int]
    ) -> dict[int, str]:
        ran: dict[int, str] = {}

        def run() -> None:
            while (job := buffer.take()) is not None:
                ran[job.id] = threading.current_thread().name
                if job.id in holding:
                    release.wait(10)
                buffer.done(job, NOOP)

        for number in range(n):
            thread = threading.Thread(target=run, name=f"t{number}", daemon=True)
            thread.start()
            started.append(thread)
        buffers.append(buffer)
        wait_until(lambda: buffer.idle_threads() == n)
        return ran

    yield start
    for buffer in buffers:
        buffer.close()
    for thread in started:
        thread.join(5)


def test_short_jobs_go_to_a_running_thread_and_a_stalled_one_is_relieved(
    threads: Starter,
) -> None:
    # given: three threads, jobs measured at 10 µs, and one thread stuck in job 1
    buffer = ClaimBuffer(concurrency=3, prefetch=0)
    buffer.estimates.observe("noop", NOOP)
    release = threading.Event()
    ran = threads(buffer, 3, release, {1})
    buffer.add(jobs(1, 1), ready=[1])
    wait_until(lambda: 1 in ran)

    # when: four more short jobs are ready
    buffer.add(jobs(2, 4), ready=range(2, 6))
    time.sleep(0.05)  # what must not happen: an idle thread woken for them

    # then: they wait for the running thread (the one in job 1) rather than wake another
    assert list(ran) == [1] and buffer.ready() == 4

    # when: the watchdog finds that thread stalled
    buffer.unstall(1)

    # then: one other thread takes all four, one after the other
    wait_until(lambda: len(ran) == 5)
    assert len({ran[n] for n in range(2, 6)}) == 1 and ran[2] != ran[1]
    release.set()


def test_jobs_that_take_a_while_reach_every_idle_thread(threads: Starter) -> None:
    # given: four idle threads, the task measured at 1 ms (never measured: in
    # test_services.py, test_a_burst_of_jobs_reaches_every_idle_thread)
    buffer = ClaimBuffer(concurrency=4, prefetch=0)
    buffer.estimates.observe("noop", 0.001)
    release = threading.Event()
    ran = threads(buffer, 4, release, range(1, 5))

    # when: four jobs are ready at once (each holds its thread until released)
    buffer.add(jobs(1, 4), ready=range(1, 5))

    # then: all four run at the same time, one on each thread
    wait_until(lambda: buffer.running() == 4)
    assert len(set(ran.values())) == 4
    release.set()


def test_a_worker_runs_short_jobs_past_one_that_blocks() -> None:
    # given: a pool of two threads that ran 200 no-op jobs, so they are known short
    app = App(schema="unused")
    blocking = threading.Event()
    release = threading.Event()

    @app.task(name="noop")
    def noop(n: int = 0) -> None:
        if n == -1:
            blocking.set()
            release.wait(10)

    buffer = ClaimBuffer(concurrency=2, prefetch=0)
    outcomes: list[Outcome] = []
    policy = OutcomePolicy(app.tasks, app.backoff, random.random, "w")
    pool = ExecutorPool(buffer=buffer, policy=policy, report=outcomes.append, events=EventBus())
    pool.start()
    try:
        warm = jobs(1, 200)
        buffer.add(warm, ready=[job.id for job in warm])
        wait_until(lambda: len(outcomes) == 200)

        # when: a job of the same task blocks, and 50 more are ready behind it
        stuck = ClaimedJob(1000, "default", "noop", '{"n": -1}', 1, 1, time.time())
        buffer.add([stuck], ready=[1000])
        blocking.wait(5)
        more = jobs(2000, 50)
        buffer.add(more, ready=[job.id for job in more])

        # then: the other thread runs them, within the watchdog's few milliseconds
        wait_until(lambda: len(outcomes) == 250, timeout=2)
        assert not release.is_set()
    finally:
        release.set()
        buffer.close()
        pool.stop(5)


def test_the_fetcher_is_called_once_until_it_found_nothing_to_do() -> None:
    # given: a thread's worth of room opening again and again
    buffer = ClaimBuffer(concurrency=1, prefetch=0)
    buffer.estimates.observe("noop", NOOP)
    calls: list[int] = []
    buffer.on_room(lambda: calls.append(1))

    def run_one(job_id: int) -> None:
        buffer.add(jobs(job_id, 1), ready=[job_id])
        taken = buffer.take()
        assert taken is not None
        buffer.done(taken, NOOP)

    # when: three jobs end while the fetcher is busy claiming the next ones
    for job_id in (1, 2, 3):
        run_one(job_id)
    # then: it was called once
    assert calls == [1]

    # when: it finds no room (a job runs), goes idle, and that job ends
    buffer.add(jobs(4, 1), ready=[4])
    taken = buffer.take()
    assert taken is not None and not buffer.wants_jobs()
    buffer.done(taken, NOOP)
    # then: it is called again
    assert calls == [1, 1]
