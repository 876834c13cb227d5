"""Drain, and async drain: no-op jobs are enqueued (untimed), then the worker starts; the
time runs from the first claim to the last recorded outcome, both read from the system's
own tables afterwards (pgjobs `started_at`/`finished_at`, procrastinate's
`procrastinate_events`, pgqueuer's `pgqueuer_log`), so interpreter start-up is left out.

Each system runs with each of its settings in `WORKER_ARGS["drain"]` every round (or in
as many as its driver's `drain_rounds` allows: procrastinate's drain is slow); a setting's
figure is the median of its rounds, the system's the best setting's, so every ratio takes
each system at its best; every setting's rounds go to a table under the report. A setting
with `--processes N` starts N worker processes at once, timed the same way: from the first
claim of any to the last outcome of any.

Every drain also gives the server's CPU per job (every backend serving it) and the
client's (the worker processes), over the same window (see `common/cpu.py`): a setting's
figures are the medians of its rounds, and the system's rows are its best setting's (by
rate), so each ratio to raw SQL is to raw SQL's best setting's CPU.

The async drain is the same with `async def` no-op tasks: pgjobs' worker serves
`pgjobs_bench:async_app` (the same task name, declared `async def`, run on the worker's
event loop beside its threads); pgqueuer's tasks are `async def` anyway, so its row is its
drain again, measured in the same run. Only systems with `WORKER_ARGS["drain_async"]` take
part.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable

from ..common.config import DRAIN_TIMEOUT
from ..common.counts import Counts
from ..common.cpu import sampling_cpu
from ..common.messages import say
from ..common.run import Result, Run
from ..common.scripts import drive
from ..common.tables import Target, reset, settle, window_bounds
from ..common.workers import running_workers, wait_drained
from ..drivers import DRAIN_ROUNDS_CAP, WORKER_ARGS
from .base import InRounds

# The CPU figures of a drain (the keys of `DrainCpu.per_job`), as the report names them.
CPU_METRICS = {
    "server_us": "server CPU µs/job ↓",
    "client_us": "client CPU µs/job ↓",
}
TITLES: dict[str, Callable[[Counts], str]] = {
    "drain": lambda counts: f"drain {counts.drain:,} no-op jobs",
    "drain_async": lambda counts: f"drain {counts.drain:,} no-op async def jobs",
}


def drain_round(run: Run, target: Target, scenario: str = "drain") -> dict[str, float]:
    """One drain of each setting of the system (none if it has none for `scenario`). With
    several processes the window still runs from the first claim of any of them to the last
    outcome of any, as the tables record them."""
    if scenario not in WORKER_ARGS[target.system.name]:
        return {}
    count = run.counts.drain
    system = target.system.name
    cpu = run.settings.cpu.setdefault(TITLES[scenario](run.counts), {}).setdefault(system, {})
    rates: dict[str, float] = {}
    for args in run.worker_args(system, scenario):
        reset(target)
        drive(target, "bulk", "--count", str(count))
        settle(target)
        with (
            sampling_cpu(target.url, {target.admin.info.backend_pid}) as sampler,
            running_workers(target, args, run.files) as workers,
        ):
            sampler.watch([worker.process.pid for worker in workers.processes])
            left = wait_drained(target, workers, DRAIN_TIMEOUT)
        if left:
            raise RuntimeError(f"{left:,} of {count:,} jobs left after {DRAIN_TIMEOUT:g}s")
        setting = " ".join(args)
        first, last = window_bounds(target, count)
        rates[setting] = count / (last - first)
        try:
            per_job = sampler.between(first, last).per_job(count)
        except RuntimeError as error:  # the rate stands; this round has no CPU figures
            say(f"  {scenario} {system} {setting}: {rates[setting]:,.0f} jobs/s ({error})")
            continue
        cpu.setdefault(setting, []).append(per_job)
        say(
            f"  {scenario} {system} {setting}: {rates[setting]:,.0f} jobs/s, CPU per job "
            f"{per_job['server_us']:.1f} µs server, {per_job['client_us']:.1f} µs client"
        )
    return rates


def drain_summary(
    run: Run, system: str, rates: dict[str, list[float]], scenario: str = "drain"
) -> list[Result]:
    """The best setting by its median round is the system's figure, so every ratio takes
    each system at its best; every setting's rounds go to the table under the report. The
    CPU rows are that setting's: the median of its rounds' CPU per job."""
    medians = {setting: statistics.median(rounds) for setting, rounds in rates.items()}
    best = max(medians, key=lambda setting: medians[setting])
    run.settings.record(system, f"{scenario} (best)", best)
    scenario_title = TITLES[scenario](run.counts)
    run.settings.drains.setdefault(scenario_title, {})[system] = rates
    note = f"best of {len(rates)} settings: {best}" if len(rates) > 1 else best
    results = [Result(scenario_title, "jobs/s ↑", system, medians[best], True, note)]
    rounds = run.settings.cpu.get(scenario_title, {}).get(system, {}).get(best, [])
    for key, metric in CPU_METRICS.items():
        value = statistics.median(cpu[key] for cpu in rounds) if rounds else None
        results.append(Result(scenario_title, metric, system, value, False, f"at {best}"))
    return results


def in_rounds(scenario: str) -> InRounds:
    """The drain of `scenario`'s settings, in rounds of `Counts.drain_rounds`."""
    return InRounds(
        TITLES[scenario],
        lambda run, target: drain_round(run, target, scenario),
        lambda run, system, rates: drain_summary(run, system, rates, scenario),
        lambda counts: counts.drain_rounds,
        DRAIN_ROUNDS_CAP,
    )


DRAIN = in_rounds("drain")
DRAIN_ASYNC = in_rounds("drain_async")
