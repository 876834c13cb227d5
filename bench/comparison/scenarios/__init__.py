"""Every scenario, one module each, in the order a run takes them (`--scenarios` names)."""

from __future__ import annotations

from . import bulk, claim, drain, idle, memory, single, steady
from .base import InRounds, Once

SCENARIOS: dict[str, Once | InRounds] = {
    "bulk": bulk.SCENARIO,
    "single": single.SCENARIO,
    "drain": drain.DRAIN,
    "drain_async": drain.DRAIN_ASYNC,
    "latency": idle.SCENARIO,
    "steady": steady.SCENARIO,
    "claim": claim.SCENARIO,
    "memory": memory.SCENARIO,
}
SCENARIO_NAMES = list(SCENARIOS)
