"""The claim buffer's promises, in-process: start order, and a bound in time.

The worker tests (test_claim_ahead.py) show the same with real worker processes; these
drive `ClaimBuffer` by hand, so each rule is checked without timers or a database.
"""

from __future__ import annotations

import time

import pytest

from pgjobs.types import ClaimedJob
from pgjobs.worker.claim_buffer import ClaimBuffer
from pgjobs.worker.estimates import Estimates

NOW = time.time()


def held(job_id: int, *, priority: int = 0, task: str = "noop", waited: float = 0.0) -> ClaimedJob:
    return ClaimedJob(job_id, "default", task, "{}", 1, 3, NOW - waited, None, priority)


def ready_what_is_wanted(buffer: ClaimBuffer) -> list[int]:
    """What the readier does: ready the claimed jobs the threads will need next."""
    readied = []
    while buffer.wants_ready():
        jobs = buffer.to_ready()
        buffer.readied()
        readied += [job.id for job in jobs]
    return readied


def take(buffer: ClaimBuffer) -> ClaimedJob:
    """What an executor thread gets next, the fetcher readying jobs as it would."""
    ready_what_is_wanted(buffer)
    job = buffer.take()
    assert job is not None
    return job


def test_held_jobs_start_by_priority_then_run_at_then_id_across_claims() -> None:
    # given: two claims whose rows came back in no particular order
    buffer = ClaimBuffer(concurrency=1, prefetch=10)
    buffer.add([held(1, priority=0), held(2, priority=5), held(3, priority=-3)])
    buffer.add([held(4, priority=10), held(5, priority=1), held(6, priority=5, waited=60)])
    # when: one thread takes them one after the other
    order = []
    while buffer.waiting():
        job = take(buffer)
        order.append(job.id)
        buffer.done(job, 0.001)
    # then: priority first, the job waiting longer first within one priority
    assert order == [4, 6, 2, 5, 1, 3]


def test_threads_start_only_jobs_readied_just_before_they_need_them() -> None:
    # given: two threads that just ran 16 short jobs within 4 ms
    now = [100.0]
    buffer = ClaimBuffer(concurrency=2, prefetch=100, clock=lambda: now[0])
    for n in range(16):
        buffer.done(held(1000 + n), 0.0002)
    # then: a claim readies a job for each free thread, and 4 ms worth
    assert buffer.ready_at_claim() == 2 + 16
    buffer.add([held(n) for n in range(1, 41)], ready=[1, 2])
    # then: the threads may take the two readied ones; the fetcher readies the next few
    # in line (what two threads start in 4 ms), not the whole buffer
    assert buffer.ready() == 2
    assert ready_what_is_wanted(buffer) == list(range(3, 19))
    assert buffer.waiting() == 40
    # and: a claimed job that was not readied is never handed to a thread
    started = [take(buffer).id for _ in range(18)]
    assert started == list(range(1, 19))
    assert set([job.id for job in buffer.waiting_jobs()]) == set(range(19, 41))


def test_slots_busy_with_long_jobs_get_nothing_readied_ahead() -> None:
    # given: one thread that ran short jobs a while ago, now running a long one
    now = [100.0]
    buffer = ClaimBuffer(concurrency=1, prefetch=100, clock=lambda: now[0])
    for n in range(50):
        buffer.done(held(1000 + n), 0.0002)
    now[0] += 1.0
    buffer.add([held(1)], ready=[1])
    assert buffer.take() is not None
    # when: twenty more jobs are claimed behind it
    assert buffer.ready_at_claim() == 0
    buffer.add([held(n) for n in range(2, 22)])
    # then: none is readied, so none would be charged should the worker die now
    assert not buffer.wants_ready() and buffer.ready() == 0


def test_nothing_is_claimed_ahead_before_a_duration_was_measured() -> None:
    buffer = ClaimBuffer(concurrency=4, prefetch=100)
    assert buffer.room() == 4  # the free threads only


def test_short_jobs_fill_the_buffer_up_to_prefetch() -> None:
    buffer = ClaimBuffer(concurrency=4, prefetch=100, window=0.25)
    buffer.estimates.observe("noop", 0.0001)
    assert buffer.room() == 4 + 100


def test_the_buffer_holds_what_the_threads_start_within_the_window() -> None:
    # given: 2 threads, jobs of 50 ms, a window of 250 ms: 10 jobs' worth of thread time
    buffer = ClaimBuffer(concurrency=2, prefetch=100, window=0.25)
    buffer.estimates.observe("noop", 0.05)
    # then: 2 for the threads and 10 ahead
    assert buffer.room() == 2 + 10


def test_slow_jobs_are_claimed_only_for_free_threads() -> None:
    # given: jobs of 2.5 s and 2 threads
    buffer = ClaimBuffer(concurrency=2, prefetch=40, window=0.25)
    buffer.estimates.observe("slow", 2.5)
    assert buffer.room() == 2
    # when: both threads run one
    buffer.add([held(1, task="slow"), held(2, task="slow")])
    take(buffer), take(buffer)
    # then: nothing more is claimed until a thread is free
    assert buffer.room() == 0 and not buffer.wants_jobs()


def test_held_jobs_of_a_task_found_slow_are_handed_back() -> None:
    # given: short jobs measured, so the buffer took 8 jobs of a task never seen
    buffer = ClaimBuffer(concurrency=2, prefetch=40, window=0.25)
    buffer.estimates.observe("noop", 0.0001)
    buffer.add([held(n, task="report", priority=-n) for n in range(1, 9)])
    first, second = take(buffer), take(buffer)
    assert buffer.surplus() == []  # nothing known against them yet
    # when: the two running attempts turn out to take 2.5 s
    buffer.done(first, 2.5)
    buffer.done(second, 2.5)
    started = [take(buffer), take(buffer)]  # the threads take the next two at once
    # then: the rest would wait seconds for a thread; they go back to the queue
    surplus = buffer.surplus()
    assert [job.id for job in surplus] == [5, 6, 7, 8]
    assert [job.id for job in started if job] == [3, 4]
    assert buffer.waiting() == 0 and buffer.room() == 0


def test_an_attempt_running_past_the_window_hands_back_what_waits_behind_it() -> None:
    # given: one thread busy with a job of a task never measured, three waiting
    buffer = ClaimBuffer(concurrency=1, prefetch=40, window=0.25)
    buffer.estimates.observe("noop", 0.0001)
    buffer.add([held(n, task="report") for n in range(1, 5)])
    take(buffer)
    woken: list[bool] = []
    buffer.on_room(lambda: woken.append(True))
    # when: the watchdog finds it running for a second
    buffer.running_for("report", 1.0)
    # then: the fetcher is woken and hands the waiting ones back
    assert woken
    assert [job.id for job in buffer.surplus()] == [2, 3, 4]


def test_a_free_thread_keeps_the_next_job_whatever_it_costs() -> None:
    buffer = ClaimBuffer(concurrency=1, prefetch=40, window=0.25)
    buffer.estimates.observe("slow", 10.0)
    buffer.add([held(1, task="slow")])
    buffer.estimates.observe("slow", 30.0)
    assert buffer.surplus() == []
    assert buffer.waiting() == 1


def test_estimates_follow_each_task_and_report_a_marked_rise() -> None:
    estimates = Estimates()
    assert estimates.of("a") == 0.0 and estimates.mean is None
    assert estimates.observe("a", 0.01) is False  # nothing was assumed before
    assert estimates.of("b") == 0.01  # a task never seen: the mean of all
    assert estimates.observe("b", 1.0) is True  # far slower than assumed
    assert estimates.observe("a", 0.011) is False
    assert estimates.running_for("c", 0.5) is True  # never measured, running long already
    assert estimates.of("c") == 0.5
    assert estimates.running_for("c", 0.4) is False
    # a task measured short keeps its estimate while an attempt stalls, and one slow
    # attempt moves it at most as if it had taken four times the estimate
    before = estimates.of("a")
    assert estimates.running_for("a", 0.5) is False
    estimates.observe("a", 0.5)
    assert estimates.of("a") == pytest.approx(before + 0.3 * 3 * before)


def test_one_slow_attempt_of_a_short_task_hands_back_nothing() -> None:
    # given: 2 threads busy and 900 short jobs held (a quarter of the window's worth)
    buffer = ClaimBuffer(concurrency=2, prefetch=1000, window=0.25)
    for _ in range(20):
        buffer.estimates.observe("noop", 0.00015)
    buffer.add([held(n) for n in range(1, 903)])
    first = take(buffer)
    take(buffer)
    # when: one attempt took 50 ms (its thread waited for the CPU), another ran 0.3 s
    buffer.done(first, 0.05)
    buffer.running_for("noop", 0.3)
    # then: the estimate moved, but not enough to hand back what the window can hold
    assert buffer.surplus() == []


def test_weighted_queues_start_in_the_weights_proportions_within_a_priority() -> None:
    # given: a buffer of a worker serving a=6,b=3,c=1, holding 30 jobs of each queue
    buffer = ClaimBuffer(concurrency=1, prefetch=200, weights={"a": 6, "b": 3, "c": 1})
    jobs = [
        ClaimedJob(n * 3 + k, queue, "noop", "{}", 1, 3, NOW, None, 0)
        for n in range(30)
        for k, queue in enumerate("abc")
    ]
    urgent = ClaimedJob(1000, "c", "noop", "{}", 1, 3, NOW, None, 5)
    buffer.add([*jobs, urgent])
    # when: one thread takes 21 of them
    taken = []
    for _ in range(21):
        job = take(buffer)
        taken.append(job)
        buffer.done(job, 0.001)
    # then: the higher priority first, then 6:3:1 (the urgent job had c's first turn),
    # each queue's jobs by id
    assert taken[0] == urgent
    shares = [job.queue for job in taken[1:]]
    assert (shares.count("a"), shares.count("b"), shares.count("c")) == (13, 6, 1)
    a_ids = [job.id for job in taken if job.queue == "a"]
    assert a_ids == sorted(a_ids)


def test_a_lost_claim_is_dropped_but_a_later_claim_of_the_same_job_stays() -> None:
    # given: job 1 was handed back, and the worker claimed it again while a heartbeat
    # that still counted the first claim was on its way
    buffer = ClaimBuffer(concurrency=1, prefetch=10)
    first_claim, second_claim = held(1), held(1)
    other = held(2)
    buffer.add([second_claim, other])
    # when: the heartbeat reports the first claim of job 1 (and job 2) lost
    dropped = buffer.discard({1: first_claim, 2: other}, same_claim=True)
    # then: only job 2 goes; the later claim of job 1 stays
    assert [job.id for job in dropped] == [2]
    assert [job.id for job in buffer.waiting_jobs()] == [1]
    # and: a control message (a cancel) drops whatever claim of the job is held
    assert [job.id for job in buffer.discard([1])] == [1]
