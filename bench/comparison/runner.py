"""Running the chosen scenarios, one after the other, each for every system in turn; a
system that fails gets a `(failed)` row with the reason, and the others still run."""

from __future__ import annotations

import time

import psycopg

from .common.messages import first_line, say
from .common.run import Result, Run, failure
from .common.tables import Target
from .drivers.base import System
from .scenarios import SCENARIOS
from .scenarios.base import InRounds

MEASUREMENT_ERRORS = (RuntimeError, TimeoutError, OSError, psycopg.Error)


def run_all(
    run: Run, targets: list[Target], broken: dict[System, str], scenarios: list[str]
) -> list[Result]:
    """Scenario by scenario, each system that takes part in turn; a failure is recorded,
    not fatal.

    `broken` holds the systems whose setup failed, with why: they get that error in every
    scenario they take part in, so the table still shows them.
    """
    results: list[Result] = []
    for scenario in scenarios:
        plan = SCENARIOS[scenario]
        title = plan.title(run.counts)
        say(f"{title}...")
        for system, error in broken.items():
            if system.takes_part(scenario):
                results.append(failure(title, system.name, f"setup failed: {error}"))
        taking = [target for target in targets if target.system.takes_part(scenario)]
        if isinstance(plan, InRounds):
            results += in_rounds(run, taking, plan)
            continue
        for target in taking:
            started = time.monotonic()
            try:
                results += plan.measure(run, target)
            except MEASUREMENT_ERRORS as error:
                say(f"  {target.system.name} FAILED: {error}")
                results.append(failure(title, target.system.name, first_line(error)))
            say(f"  {target.system.name}: {time.monotonic() - started:.0f}s")
    return results


def in_rounds(run: Run, targets: list[Target], plan: InRounds) -> list[Result]:
    """A scenario taken in rounds, each system in turn in a rotating order (see InRounds)."""
    rates: dict[str, dict[str, list[float]]] = {target.system.name: {} for target in targets}
    errors: dict[str, str] = {}
    rounds = plan.rounds(run.counts)
    for number in range(rounds):
        say(f"  round {number + 1} of {rounds}")
        turn = number % max(1, len(targets))
        for target in targets[turn:] + targets[:turn]:
            name = target.system.name
            if name in errors or number >= plan.rounds_cap.get(name, rounds):
                continue
            try:
                for setting, rate in plan.measure(run, target).items():
                    rates[name].setdefault(setting, []).append(rate)
            except MEASUREMENT_ERRORS as error:
                say(f"  {name} FAILED: {error}")
                errors[name] = first_line(error)
    results = []
    for target in targets:
        name = target.system.name
        if name in errors:
            results.append(failure(plan.title(run.counts), name, errors[name]))
        elif rates[name]:
            results += plan.summary(run, name, rates[name])
    return results
