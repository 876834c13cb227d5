"""The worker's pure parts, in-process: retry policy, queue weights, outcomes, JSON logs.

Randomness is injected everywhere, so these tests are exact and need no database.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import sys
from collections.abc import Callable, Iterable
from datetime import datetime, timezone
from typing import Any

import pytest

from pgjobs.errors import ConfigurationError, FailJob, SnoozeJob
from pgjobs.logs import JsonFormatter
from pgjobs.retry import Backoff
from pgjobs.types import ClaimedJob
from pgjobs.worker.outcomes import outcome_of_exception, outcome_of_timeout
from pgjobs.worker.queues import QueueSpec, allocate


def always(value: float) -> Callable[[], float]:
    """A jitter source that always returns `value`."""
    return lambda: value


def draws(values: Iterable[float]) -> Callable[[], float]:
    """A random source that returns `values` in turn, over and over."""
    return itertools.cycle(values).__next__


# --- Backoff -------------------------------------------------------------------------


def test_backoff_doubles_from_the_base_without_jitter() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=100.0, jitter=0.2)
    assert [backoff.delay(n, always(0.0)) for n in range(1, 6)] == [1, 2, 4, 8, 16]


def test_backoff_defaults_start_at_one_second() -> None:
    assert [Backoff().delay(n, always(0.0)) for n in (1, 2, 3)] == [1, 2, 4]


def test_backoff_stops_growing_at_the_cap() -> None:
    backoff = Backoff(base=1.0, factor=2.0, cap=10.0, jitter=0.0)
    assert [backoff.delay(n, always(0.0)) for n in range(3, 7)] == [4, 8, 10, 10]


@pytest.mark.parametrize("factor", [2, 2.0, 3, 10.0])
def test_backoff_cap_is_an_upper_bound_even_with_jitter_and_huge_attempts(
    factor: float,
) -> None:
    # factor ** (attempt - 1) leaves the float range long before max_attempts does.
    backoff = Backoff(base=0.5, factor=factor, cap=60.0, jitter=0.5)
    for attempt in (*range(1, 40), 310, 647, 1_025, 10**9):
        assert backoff.delay(attempt, always(0.0)) == 60.0 or attempt < 40
        for jitter in (0.3, 0.999999):
            assert 0 <= backoff.delay(attempt, always(jitter)) <= 60.0


def test_backoff_with_zero_base_never_waits() -> None:
    assert Backoff(base=0.0, factor=3.0).delay(5_000, always(0.0)) == 0.0


def test_backoff_jitter_only_shortens_the_delay_by_at_most_its_fraction() -> None:
    backoff = Backoff(base=10.0, factor=2.0, cap=1000.0, jitter=0.2)
    assert backoff.delay(1, always(0.0)) == 10.0
    assert backoff.delay(1, always(0.5)) == pytest.approx(9.0)
    assert backoff.delay(1, always(1.0)) == pytest.approx(8.0)
    source = random.Random(7).random
    delays = [backoff.delay(1, source) for _ in range(1000)]
    assert all(8.0 <= d <= 10.0 for d in delays)
    assert max(delays) - min(delays) > 1.5, "jitter should spread the delays"


def test_backoff_without_jitter_ignores_the_random_source() -> None:
    backoff = Backoff(base=2.0, factor=2.0, cap=100.0, jitter=0.0)
    assert backoff.delay(2, always(0.9)) == 4.0


@pytest.mark.parametrize(
    "options",
    [
        {"base": -1.0},
        {"cap": -1.0},
        {"factor": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
    ],
)
def test_backoff_rejects_invalid_settings(options: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**options)


# --- QueueSpec.parse -------------------------------------------------------------------


@pytest.mark.parametrize("text", [None, "", "   "])
def test_queue_spec_without_names_serves_every_queue(text: str | None) -> None:
    spec = QueueSpec.parse(text)
    assert spec.weights is None
    assert spec.wants("default")
    assert spec.wants("anything")
    assert spec.describe() == "*"


def test_queue_spec_names_without_weights_weigh_one_each() -> None:
    spec = QueueSpec.parse(" mail , default ")
    assert spec.weights == {"mail": 1, "default": 1}
    assert spec.wants("mail")
    assert not spec.wants("reports")


def test_queue_spec_keeps_weights_and_their_order() -> None:
    spec = QueueSpec.parse("a=6,b=3,c=1")
    assert list((spec.weights or {}).items()) == [("a", 6), ("b", 3), ("c", 1)]
    assert spec.describe() == "a=6,b=3,c=1"


def test_queue_spec_mixes_weighted_and_plain_names() -> None:
    assert QueueSpec.parse("a=4,b").weights == {"a": 4, "b": 1}


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("a,,b", "empty queue name"),
        ("=3", "empty queue name"),
        ("a=x", "must be an integer"),
        ("a=1.5", "must be an integer"),
        ("a=0", ">= 1"),
        ("a=-2", ">= 1"),
        ("a,b,a", "twice"),
    ],
)
def test_queue_spec_rejects_bad_input_with_a_clear_error(text: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=complaint):
        QueueSpec.parse(text)


# --- allocate -----------------------------------------------------------------------


WEIGHTS = {"a": 6, "b": 3, "c": 1}


def test_allocate_draws_each_slot_by_weight_interval() -> None:
    # With total weight 10: [0, 0.6) -> a, [0.6, 0.9) -> b, [0.9, 1) -> c.
    shares = allocate(WEIGHTS, 6, draws([0.0, 0.59, 0.6, 0.89, 0.9, 0.99]))
    assert dict(shares) == {"a": 2, "b": 2, "c": 2}


def test_allocate_counts_sum_to_the_slots_and_list_every_queue() -> None:
    source = random.Random(1).random
    for slots in range(0, 12):
        shares = allocate(WEIGHTS, slots, source)
        assert sorted(name for name, _ in shares) == ["a", "b", "c"]
        assert sum(count for _, count in shares) == slots


def test_allocate_lists_the_busiest_queue_first_then_by_weight() -> None:
    shares = allocate(WEIGHTS, 3, draws([0.95]))  # every slot to c
    assert shares == [("c", 3), ("a", 0), ("b", 0)]
    assert allocate(WEIGHTS, 0, draws([0.0])) == [("a", 0), ("b", 0), ("c", 0)]


def test_allocate_respects_the_weights_over_many_draws() -> None:
    shares = dict(allocate(WEIGHTS, 10_000, random.Random(42).random))
    assert shares["a"] == pytest.approx(6000, abs=300)
    assert shares["b"] == pytest.approx(3000, abs=300)
    assert shares["c"] == pytest.approx(1000, abs=300)


def test_allocate_survives_a_source_returning_almost_one() -> None:
    assert dict(allocate(WEIGHTS, 2, always(1.0 - sys.float_info.epsilon)))["c"] == 2


# --- outcomes -------------------------------------------------------------------------

BACKOFF = Backoff(base=1.0, factor=2.0, cap=60.0, jitter=0.5)


def claimed(attempt: int, max_attempts: int) -> ClaimedJob:
    return ClaimedJob(
        id=42,
        queue="default",
        task="resize",
        payload_json="{}",
        attempt=attempt,
        max_attempts=max_attempts,
        run_at_epoch=datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp(),
    )


def raised(error: BaseException) -> BaseException:
    """`error` with a traceback, as the executor catches it."""
    try:
        raise error
    except BaseException as caught:
        return caught


def test_exception_with_attempts_left_is_retried_after_the_backoff() -> None:
    job = claimed(attempt=2, max_attempts=5)
    outcome = outcome_of_exception(
        job, raised(ValueError("boom")), backoff=BACKOFF, random=always(0.5), worker_id="w1"
    )
    assert outcome.state == "available"
    assert outcome.delay == BACKOFF.delay(2, always(0.5)) == 1.5
    assert (outcome.job_id, outcome.attempt) == (42, 2)
    assert outcome.attempts_delta == outcome.max_attempts_delta == 0
    assert outcome.error is not None
    assert outcome.error["attempt"] == 2
    assert outcome.error["error"] == "ValueError: boom"
    assert "raise error" in outcome.error["traceback"]
    assert outcome.error["worker"] == "w1"


def test_exception_on_the_last_attempt_fails_the_job() -> None:
    job = claimed(attempt=5, max_attempts=5)
    outcome = outcome_of_exception(
        job, raised(ValueError("boom")), backoff=BACKOFF, random=always(0.0), worker_id="w1"
    )
    assert outcome.state == "failed"
    assert outcome.error is not None
    assert outcome.error["error"] == "ValueError: boom"


def test_fail_job_fails_at_once_with_attempts_left() -> None:
    job = claimed(attempt=1, max_attempts=10)
    outcome = outcome_of_exception(
        job, raised(FailJob("bad input")), backoff=BACKOFF, random=always(0.0), worker_id="w"
    )
    assert outcome.state == "failed"
    assert outcome.error is not None
    assert "bad input" in outcome.error["error"]


def test_snooze_job_reschedules_without_error_and_gives_the_attempt_back() -> None:
    job = claimed(attempt=3, max_attempts=3)
    outcome = outcome_of_exception(
        job, raised(SnoozeJob(2.5)), backoff=BACKOFF, random=always(0.0), worker_id="w"
    )
    assert outcome.state == "available"
    assert outcome.delay == 2.5
    assert outcome.error is None
    assert outcome.max_attempts_delta == 1


def test_snooze_job_refuses_a_negative_delay() -> None:
    with pytest.raises(ValueError):
        SnoozeJob(-1)


def test_timeout_with_attempts_left_is_a_timed_out_failure_retried_by_policy() -> None:
    job = claimed(attempt=1, max_attempts=2)
    outcome = outcome_of_timeout(job, 0.3, backoff=BACKOFF, random=always(0.0), worker_id="w")
    assert outcome.state == "available"
    assert outcome.delay == BACKOFF.delay(1, always(0.0))
    assert outcome.error is not None
    assert outcome.error["timed_out"] is True
    assert "timed out after 0.3s" in outcome.error["error"]
    assert outcome.error["attempt"] == 1


def test_timeout_on_the_last_attempt_fails_the_job() -> None:
    job = claimed(attempt=2, max_attempts=2)
    outcome = outcome_of_timeout(job, 0.3, backoff=BACKOFF, random=always(0.0), worker_id="w")
    assert outcome.state == "failed"
    assert outcome.error is not None
    assert outcome.error["timed_out"] is True


# --- JsonFormatter -----------------------------------------------------------------------


def formatted(message: str, *, exc_info: Any = None, **fields: Any) -> dict[str, Any]:
    record = logging.getLogger("pgjobs.worker").makeRecord(
        "pgjobs.worker", logging.INFO, __file__, 1, message, (), exc_info, extra=fields
    )
    line = JsonFormatter().format(record)
    assert "\n" not in line, "one JSON object a line"
    entry = json.loads(line)
    assert isinstance(entry, dict)
    return entry


def test_json_formatter_writes_the_standard_keys_and_the_fields() -> None:
    entry = formatted(
        "job completed",
        job_id=7,
        task="resize",
        queue="default",
        attempt=1,
        duration=0.25,
        worker_id="host:1:abc",
    )
    assert entry["level"] == "info"
    assert entry["logger"] == "pgjobs.worker"
    assert entry["message"] == "job completed"
    assert datetime.fromisoformat(entry["time"]).utcoffset() is not None
    assert {k: entry[k] for k in ("job_id", "task", "queue", "attempt", "duration")} == {
        "job_id": 7,
        "task": "resize",
        "queue": "default",
        "attempt": 1,
        "duration": 0.25,
    }
    assert entry["worker_id"] == "host:1:abc"
    assert "args" not in entry
    assert "levelno" not in entry


def test_json_formatter_writes_unserialisable_fields_as_text() -> None:
    entry = formatted("started", at=datetime(2024, 5, 1, tzinfo=timezone.utc))
    assert entry["at"] == "2024-05-01 00:00:00+00:00"


def test_json_formatter_keeps_a_traceback_in_one_line() -> None:
    try:
        raise RuntimeError("database gone")
    except RuntimeError:
        entry = formatted("could not write outcomes", exc_info=sys.exc_info())
    assert "RuntimeError: database gone" in entry["traceback"]
