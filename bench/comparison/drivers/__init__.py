"""Every system compare.py drives, one module each; edit a system's worker settings there.

`WORKER_ARGS` gathers what each worker is started with per scenario (the report prints it,
`--json` writes it), the drivers' first and their variants' after, the order `--systems`
lists them in.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

from . import pgjobs, pgjobs_async, pgqueuer, procrastinate, raw_sql
from .base import Driver, System, Variant, WorkerArgs

DRIVERS: tuple[Driver, ...] = (
    pgjobs.DRIVER,
    procrastinate.DRIVER,
    pgqueuer.DRIVER,
    raw_sql.DRIVER,
)
VARIANTS: dict[str, Variant] = {variant.name: variant for variant in (pgjobs_async.VARIANT,)}

WORKER_ARGS: dict[str, WorkerArgs] = {driver.name: driver.worker_args for driver in DRIVERS}
WORKER_ARGS |= {
    name: variant.worker_args(WORKER_ARGS[variant.base]) for name, variant in VARIANTS.items()
}
CLAIM_BATCH = {driver.name: driver.claim_batch for driver in DRIVERS}
DRAIN_ROUNDS_CAP = {driver.name: driver.drain_rounds for driver in DRIVERS if driver.drain_rounds}


def systems(peers: Path) -> list[System]:
    """Every system, each Variant right after the system it varies; `peers` is the peers'
    python, the others run on this one."""
    main = Path(sys.executable)
    listed: list[System] = []
    for driver in DRIVERS:
        system = driver.system(main, peers)
        listed.append(system)
        for name, variant in VARIANTS.items():
            if variant.base == system.name:
                scenarios = frozenset(variant.scenarios)
                listed.append(
                    replace(system, name=name, scenarios=scenarios, variant_of=variant.base)
                )
    return listed
