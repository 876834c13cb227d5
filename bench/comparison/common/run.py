"""What every scenario is handed (`Run`) and gives back (`Result`), and what the report
says was run (`Settings`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..drivers import WORKER_ARGS
from ..drivers.base import processes_of, setting_options
from .counts import Counts


@dataclass
class Result:
    """One figure of one system in one scenario."""

    scenario: str
    metric: str
    system: str
    value: float | None
    higher_is_better: bool
    note: str = ""
    error: str = ""


def failure(scenario: str, system: str, error: str) -> Result:
    return Result(scenario, "(failed)", system, None, True, error=error)


@dataclass
class Settings:
    """What was run, for the report: worker arguments per scenario, drain winners, every
    drain setting's rounds (scenario -> system -> setting -> jobs/s per round), and the CPU
    per job of each of those rounds (the same keys -> `DrainCpu.per_job` per round)."""

    used: dict[str, dict[str, str]] = field(default_factory=dict)
    drains: dict[str, dict[str, dict[str, list[float]]]] = field(default_factory=dict)
    cpu: dict[str, dict[str, dict[str, list[dict[str, float]]]]] = field(default_factory=dict)

    def record(self, system: str, scenario: str, value: str) -> None:
        self.used.setdefault(system, {})[scenario] = value


@dataclass
class Run:
    """Everything a scenario needs: the sizes, where files go, and what to report."""

    counts: Counts
    files: Path
    settings: Settings
    # Per system, the options its worker offers (None: unknown, every setting is tried).
    offered: dict[str, frozenset[str] | None]

    def worker_args(self, system: str, scenario: str) -> list[list[str]]:
        """The system's settings for the scenario, less those its worker cannot take."""
        usable, skipped = [], []
        offered = self.offered.get(system)
        for args in WORKER_ARGS[system][scenario]:
            missing = sorted(setting_options(processes_of(args)[1]) - (offered or set()))
            if offered is None or not missing:
                usable.append(args)
            else:
                skipped.append(f"{' '.join(args)} ({', '.join(missing)} not offered)")
        if skipped:
            self.settings.record(system, f"{scenario} (skipped)", "; ".join(skipped))
        for args in usable:
            if not scenario.startswith("drain"):
                self.settings.record(system, scenario, " ".join(args))
        return usable
