"""The two shapes of a scenario: measured once per system, or in rounds."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..common.counts import Counts
from ..common.run import Result, Run
from ..common.tables import Target


@dataclass(frozen=True)
class Once:
    """A scenario measured once per system, each system in turn. `title` names it in the
    report, with the run's counts."""

    title: Callable[[Counts], str]
    measure: Callable[[Run, Target], list[Result]]


@dataclass(frozen=True)
class InRounds:
    """A scenario measured in rounds: in each, every system has its turn, in an order that
    rotates from round to round, so that a slow or quick spell of the machine falls on all
    of them alike instead of on whichever ran its rounds then. `measure` gives one round's
    rate per setting, `summary` turns each setting's rates into the system's figures;
    `rounds_cap` holds the systems that take part in fewer rounds, and in how many."""

    title: Callable[[Counts], str]
    measure: Callable[[Run, Target], dict[str, float]]
    summary: Callable[[Run, str, dict[str, list[float]]], list[Result]]
    rounds: Callable[[Counts], int]
    rounds_cap: Mapping[str, int] = field(default_factory=dict)
