"""What a system's driver declares, and the system it becomes once the pythons are known.

A driver names the script in `bench/peers/` that knows the system, the command that starts
its worker, and the worker settings of each scenario. A `Variant` is the same code with
options added to every setting, shown as a system of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

# compare.py's own pseudo-option, stripped before the worker's command is built: a drain
# starts that many worker processes with the rest of the setting (see `running_workers`).
PROCESSES = "--processes"

# Per scenario, the worker settings tried: "drain" and "drain_async" list every setting
# (the best is reported, all are noted); the other scenarios use one each.
WorkerArgs = dict[str, list[list[str]]]


@dataclass(frozen=True)
class System:
    """One system under test: which python runs its script, and how its worker starts."""

    name: str
    peer: bool
    python: Path
    script: str
    worker: tuple[str, ...]
    # The scenarios it takes part in; None: every one.
    scenarios: frozenset[str] | None = None
    # The system it is a Variant of (the same code, other worker options), if any.
    variant_of: str = ""

    def takes_part(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios


@dataclass(frozen=True)
class Driver:
    """A system as compare.py drives it. `peer` systems run on the peers' virtualenv's
    python, the others on compare.py's own.

    Its worker settings: every one its drain is tried with (the best is reported, all are
    noted), a small worker for idle latency, and the worker a user starts with for the
    steady state and memory. A setting with an option the worker's `--help` does not list
    is skipped (pgjobs' worker options come and go as it is developed).
    """

    name: str
    peer: bool
    script: str
    drain: list[list[str]]
    latency: list[str]
    default: list[str]
    # Jobs per claim in the claim-cost scenario.
    claim_batch: int
    # The settings of the async drain, for the systems that take part in it.
    drain_async: list[list[str]] | None = None
    # The worker's command after the python that runs it; empty: the script's `work`.
    worker: tuple[str, ...] = ()
    # Fewer drain rounds than the run's, for a system whose drain takes long; 0: all.
    drain_rounds: int = 0

    @property
    def worker_args(self) -> WorkerArgs:
        """Per scenario, the settings its worker is started with (see WORKER_ARGS)."""
        args = {"drain": self.drain}
        if self.drain_async is not None:
            args["drain_async"] = self.drain_async
        return args | {
            "latency": [self.latency],
            "steady": [self.default],
            "memory": [self.default],
        }

    def system(self, main: Path, peers: Path) -> System:
        python = peers if self.peer else main
        worker = self.worker or (self.script, "work")
        return System(self.name, self.peer, python, self.script, (str(python), *worker))


@dataclass(frozen=True)
class Variant:
    """A system's worker with options appended to all of its settings, shown as a system
    of its own in the scenarios those options bear on. It is not a peer: no `vs best peer`
    is taken against it."""

    name: str
    base: str
    options: tuple[str, ...]
    scenarios: tuple[str, ...]

    def worker_args(self, base: WorkerArgs) -> WorkerArgs:
        return {s: [[*args, *self.options] for args in base[s]] for s in self.scenarios}


def setting_options(args: Sequence[str]) -> set[str]:
    """The options a setting passes to the worker (`--name` or `--name=value`)."""
    return {arg.partition("=")[0] for arg in args if arg.startswith("--")}


def processes_of(setting: Sequence[str]) -> tuple[int, list[str]]:
    """How many worker processes a setting asks for (PROCESSES, else one), and the rest of
    its arguments, which every process is started with."""
    args = list(setting)
    if PROCESSES not in args:
        return 1, args
    at = args.index(PROCESSES)
    count = int(args[at + 1])
    del args[at : at + 2]
    return count, args
