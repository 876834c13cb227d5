"""Prometheus metrics: `pgjobs work --metrics-port` serves `/metrics` with the official
client, counts every outcome once, times attempts, and exports the queue gauges from the
maintenance leader's sample."""

from __future__ import annotations

import random
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import closing
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from pgjobs import App, admin
from pgjobs.types import ClaimedJob, Outcome
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.events import Ending, JobEnded
from pgjobs.worker.metrics import QueueSampler, WorkerMetrics
from tests.helpers import (
    REPO_ROOT,
    StartWorker,
    pgjobs,
    run_cli,
    runs,
    the_error_line,
    wait_until,
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def parse(text: str) -> Samples:
    """Every sample of an exposition, by (name, labels), parsed by prometheus_client."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return parse(response.read().decode())


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def claimed(
    job_id: int, *, queue: str = "default", task: str = "t", waited: float = 0
) -> ClaimedJob:
    return ClaimedJob(job_id, queue, task, "{}", 1, 3, time.time() - waited)


def metrics(leader: bool = True) -> WorkerMetrics:
    return WorkerMetrics(
        "w1", concurrency=4, busy=lambda: 3, prefetched=lambda: 2, unwritten=lambda: 1,
        leader=lambda: leader,
    )  # fmt: skip


def registry_value(m: WorkerMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_each_ending_counts_once_under_its_outcome() -> None:
    m = metrics()
    job = claimed(1, task="send")
    endings = [
        (Ending.COMPLETED, Outcome(1, 1, "completed")),
        (Ending.RETRIED, Outcome(1, 1, "available", error={"error": "x"})),
        (Ending.FAILED, Outcome(1, 1, "failed", error={"error": "x"})),
        (Ending.TIMED_OUT, Outcome(1, 1, "available", error={"error": "t"})),
        (Ending.TIMED_OUT, Outcome(1, 1, "failed", error={"error": "t"})),
        (Ending.SNOOZED, Outcome(1, 1, "available")),
        (Ending.TAKEN_AWAY, None),
        (Ending.PUT_BACK, Outcome(1, 1, "available", attempts_delta=-1)),
        (Ending.LATE, None),
    ]
    for ending, outcome in endings:
        m.jobs.job_ended(JobEnded(job, ending, outcome, 0.002, "w1", time.time()))

    counts = {
        outcome: registry_value(
            m, "pgjobs_jobs_finished_total", queue="default", task="send", outcome=outcome
        )
        for outcome in ("completed", "retried", "failed", "snoozed", "cancelled")
    }
    assert counts == {"completed": 1, "retried": 2, "failed": 2, "snoozed": 1, "cancelled": 1}
    # Only attempts the task itself ended are timed: not a cancel, a put-back or a late one.
    assert registry_value(m, "pgjobs_job_duration_seconds_count", task="send") == 6
    assert registry_value(m, "pgjobs_job_duration_seconds_bucket", task="send", le="0.005") == 6
    assert registry_value(m, "pgjobs_job_duration_seconds_bucket", task="send", le="0.001") == 0


def test_queue_lag_is_the_time_from_run_at_to_the_attempts_start() -> None:
    m = metrics()
    done = Outcome(1, 1, "completed")

    # an attempt that became runnable 7 s before it ended after 2 s: it waited 5 s
    m.jobs.job_ended(
        JobEnded(
            claimed(1, queue="mail", waited=7.0), Ending.COMPLETED, done, 2.0, "w1", time.time()
        )
    )
    m.jobs.job_ended(
        JobEnded(claimed(2, queue="mail"), Ending.COMPLETED, done, 0.0, "w1", time.time())
    )
    # a late result belongs to an attempt counted already
    m.jobs.job_ended(
        JobEnded(claimed(1, queue="mail", waited=7.0), Ending.LATE, None, 3.0, "w1", time.time())
    )

    assert registry_value(m, "pgjobs_queue_lag_seconds_count", queue="mail") == 2
    assert registry_value(m, "pgjobs_queue_lag_seconds_bucket", queue="mail", le="2.5") == 1
    assert registry_value(m, "pgjobs_queue_lag_seconds_bucket", queue="mail", le="10.0") == 2
    total = registry_value(m, "pgjobs_queue_lag_seconds_sum", queue="mail") or 0
    assert 5.0 <= total < 6.0


def test_batched_counting_reads_as_the_official_client_counting_each_attempt() -> None:
    # given a mix of tasks, queues and endings, with durations and lags on bucket bounds,
    # between them, past the last, and lags below zero (a clock behind the database's),
    # counted in batches that take both the one-task-all-completed path and the mixed one
    from prometheus_client import CollectorRegistry, Counter, Histogram

    from pgjobs.worker.job_metrics import DURATION_BUCKETS, FOLD_AT, LAG_BUCKETS

    rng = random.Random(7)
    official = CollectorRegistry()
    finished = Counter("pgjobs_jobs_finished", "", ["queue", "task", "outcome"], registry=official)
    durations = Histogram(
        "pgjobs_job_duration_seconds", "", ["task"], buckets=DURATION_BUCKETS, registry=official
    )
    lags = Histogram(
        "pgjobs_queue_lag_seconds", "", ["queue"], buckets=LAG_BUCKETS, registry=official
    )
    mixed = [
        (Ending.COMPLETED, "completed", "completed"),
        (Ending.RETRIED, "available", "retried"),
        (Ending.FAILED, "failed", "failed"),
        (Ending.TIMED_OUT, "failed", "failed"),
    ]
    m = metrics()
    values = [*DURATION_BUCKETS, *LAG_BUCKETS, 0.0, 5000.0, 0.0021]
    # a lag is worked out from the clock readings below, which float arithmetic rounds:
    # near each bound, not on it
    near = [bound + side for bound in LAG_BUCKETS for side in (-0.0004, 0.0004)]
    for batch in range(6):
        drain = batch % 2 == 0  # one task, all completed
        for n in range(FOLD_AT + 1 if drain else 50):
            ending, state, label = mixed[0] if drain else rng.choice(mixed)
            queue, task = ("q", "t") if drain else (rng.choice("ab"), rng.choice("xy"))
            duration = rng.choice(values)
            lag = rng.choice([*near, 0.0, 5000.0, -0.5, -0.001])
            # one reading for both ends: a busy machine may pause the test between two
            now = time.time()
            m.jobs.job_ended(
                JobEnded(
                    ClaimedJob(n, queue, task, "{}", 1, 3, now - duration - lag),
                    ending, Outcome(n, 1, state), duration, "w1", now,
                )
            )  # fmt: skip
            finished.labels(queue, task, label).inc()
            durations.labels(task).observe(duration)
            lags.labels(queue).observe(max(lag, 0.0))
        if not drain:
            m.jobs.fold()  # as a scrape does; a drain's batch folds itself

    # then every sample equals what the official types show (lag sums: to the clock reads)
    ours = {
        (s.name, frozenset(s.labels.items())): s.value
        for family in m.registry.collect()
        for s in family.samples
    }
    theirs = [s for family in official.collect() for s in family.samples]
    assert len(theirs) > 100
    for sample in theirs:
        if sample.name.endswith("_created"):
            continue
        key = (sample.name, frozenset(sample.labels.items()))
        assert ours[key] == pytest.approx(sample.value, abs=0.01), key


def test_thread_and_buffer_gauges_are_read_at_scrape_time() -> None:
    m = metrics()

    assert registry_value(m, "pgjobs_worker_threads") == 4
    assert registry_value(m, "pgjobs_worker_busy_threads") == 3
    assert registry_value(m, "pgjobs_worker_prefetched_jobs") == 2
    assert registry_value(m, "pgjobs_worker_unwritten_outcomes") == 1
    assert registry_value(m, "pgjobs_worker_leader") == 1
    assert registry_value(m, "pgjobs_worker_info", worker_id="w1", version="0.1.0") == 1


def test_every_metric_name_starts_with_pgjobs() -> None:
    m = metrics()
    m.jobs.job_ended(
        JobEnded(claimed(1), Ending.COMPLETED, Outcome(1, 1, "completed"), 0.1, "w1", time.time())
    )
    m.set_queues([("default", 1, 0.5)])

    names = {metric.name for metric in m.registry.collect()}

    assert names and all(name.startswith("pgjobs_") for name in names), names


def test_the_leader_samples_the_queues_and_others_export_no_queue_gauges(
    app: App, database_url: str
) -> None:
    # (the sampler is part of the maintenance, which runs on the leader only)
    # given 3 runnable jobs in "mail", 1 in "default", and a delayed one that is not due
    for _ in range(3):
        app.enqueue(None, "t", {}, queue="mail")
    app.enqueue(None, "t", {})
    app.enqueue(None, "t", {}, queue="later", delay=3600)
    m = metrics()
    connection = ResilientConnection(database_url, "maintenance")
    sampler = QueueSampler(connection, app.data.maintenance, m)
    try:
        # when the leader samples
        assert sampler.run_once()
        # then each queue's runnable jobs and their oldest wait are exported
        assert registry_value(m, "pgjobs_queue_depth", queue="mail") == 3
        assert registry_value(m, "pgjobs_queue_depth", queue="default") == 1
        assert registry_value(m, "pgjobs_queue_depth", queue="later") is None
        assert (registry_value(m, "pgjobs_queue_oldest_waiting_seconds", queue="mail") or -1) >= 0

        # when the queue drains, it reads 0 rather than vanishing
        with app.database.transaction() as conn:
            app.data.admin.delete_queue(conn, "mail")
        sampler.run_once()
        assert registry_value(m, "pgjobs_queue_depth", queue="mail") == 0

        # when this worker no longer leads (its maintenance stops the sampler), it exports
        # no stale queue gauges
        sampler.stop(1.0)
        assert registry_value(m, "pgjobs_queue_depth", queue="default") is None
    finally:
        connection.close()


def test_metrics_port_out_of_range_is_one_error_line(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    result = run_cli(
        capsys, database_url, schema, "work", "--app", "tests.worker_app:app",
        "--metrics-port", "70000",
    )  # fmt: skip

    assert result.code == 1
    assert result.err == "pgjobs: error: --metrics-port must be between 1 and 65535, got 70000\n"


@pytest.mark.slow
def test_metrics_port_without_prometheus_client_says_how_to_install_it() -> None:
    # given a Python where prometheus_client cannot be imported
    code = (
        "import sys; sys.modules['prometheus_client'] = None\n"
        "from pgjobs.cli import main\n"
        "main(['work', '--app', 'tests.worker_app:app', '--metrics-port', '9100'])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )

    line = the_error_line(result)
    assert "prometheus-client" in line and "pgjobs-queue[metrics]" in line


@pytest.mark.slow
def test_metrics_port_in_use_is_one_error_line_and_runs_nothing(
    database_url: str, schema: str
) -> None:
    with closing(socket.socket()) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = pgjobs(
            "work", "--app", "tests.worker_app:app", "--metrics-port", str(port),
            "--database-url", database_url, "--schema", schema,
        )  # fmt: skip

    assert f"cannot listen on 127.0.0.1:{port}" in the_error_line(result)


@pytest.mark.slow
def test_a_real_worker_serves_counts_histograms_and_queue_gauges(
    app: App, runs_table: str, observer: psycopg.Connection[Any], start_worker: StartWorker
) -> None:
    # given a worker with metrics, serving the default queue only
    port = free_port()
    worker = start_worker(
        "--metrics-port", str(port), "--queues", "default", "--concurrency", "4",
        "--rescue-after", "2",
    )  # fmt: skip
    # when it runs a known mix of outcomes, and one job is cancelled while it runs
    for _ in range(4):
        app.enqueue(None, "noop", {})
    for _ in range(2):
        app.enqueue(None, "flaky", {"failures": 1})
    app.enqueue(None, "fail_now", {})
    app.enqueue(None, "always_fails", {}, max_attempts=3)
    app.enqueue(None, "snooze", {"times": 1, "delay": 0.05})
    sleeper = app.enqueue(None, "sleep", {"seconds": 30, "cooperative": True})
    # (cancelled once its task began: `running` alone may still mean claimed, waiting)
    wait_until(lambda: any(r["job_id"] == sleeper for r in runs(observer, runs_table)), 20)
    admin.cancel_jobs(app, [sleeper])
    # and 3 jobs wait in a queue no worker serves
    for _ in range(3):
        app.enqueue(None, "noop", {}, queue="elsewhere")

    expected = {
        ("noop", "completed"): 4,
        ("flaky", "retried"): 2,
        ("flaky", "completed"): 2,
        ("fail_now", "failed"): 1,
        ("always_fails", "retried"): 2,
        ("always_fails", "failed"): 1,
        ("snooze", "snoozed"): 1,
        ("snooze", "completed"): 1,
        ("sleep", "cancelled"): 1,
    }

    def finished() -> dict[tuple[str, str], float]:
        samples = scrape(port)
        return {
            (dict(labels)["task"], dict(labels)["outcome"]): count
            for (name, labels), count in samples.items()
            if name == "pgjobs_jobs_finished_total"
        }

    wait_until(
        lambda: finished() == expected,
        30,
        message=lambda: f"finished {finished()} != {expected}; {worker.describe()}",
    )

    # the leader's queue sample comes every few seconds
    def sampled() -> Samples | None:
        samples = scrape(port)
        return samples if value(samples, "pgjobs_queue_depth", queue="elsewhere") else None

    samples = wait_until(sampled, 20, message=lambda: f"no queue gauges; {worker.describe()}")

    # then the histograms agree with the counts
    assert value(samples, "pgjobs_job_duration_seconds_count", task="noop") == 4
    buckets = sorted(
        (float(dict(labels)["le"]), count)
        for (name, labels), count in samples.items()
        if name == "pgjobs_job_duration_seconds_bucket" and dict(labels)["task"] == "noop"
    )
    assert [count for _, count in buckets] == sorted(count for _, count in buckets)
    assert buckets[-1] == (float("inf"), 4)
    attempts_started = sum(expected.values())
    assert value(samples, "pgjobs_queue_lag_seconds_count", queue="default") == attempts_started
    # and the gauges describe the worker and the queue it does not serve
    assert value(samples, "pgjobs_worker_threads") == 4
    assert value(samples, "pgjobs_worker_busy_threads") == 0
    assert value(samples, "pgjobs_worker_leader") == 1
    assert value(samples, "pgjobs_queue_depth", queue="elsewhere") == 3
    assert (value(samples, "pgjobs_queue_oldest_waiting_seconds", queue="elsewhere") or -1) >= 0
    assert worker.stop() == 0
