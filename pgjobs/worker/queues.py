"""Which queues a worker serves, and how free slots are shared between weighted queues."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from pgjobs.errors import ConfigurationError


@dataclass(frozen=True)
class QueueSpec:
    """The queues of a worker: None serves every queue; otherwise name -> weight."""

    weights: dict[str, int] | None

    @classmethod
    def parse(cls, text: str | None) -> QueueSpec:
        """Parse `--queues`: empty for all queues, `a,b`, or `a=6,b=3,c=1`."""
        if text is None or not text.strip():
            return cls(None)
        weights: dict[str, int] = {}
        for part in text.split(","):
            name, sep, weight_text = part.strip().partition("=")
            name = name.strip()
            if not name:
                raise ConfigurationError(f"--queues has an empty queue name in {text!r}")
            weight = 1
            if sep:
                try:
                    weight = int(weight_text)
                except ValueError:
                    raise ConfigurationError(
                        f"--queues weight of {name!r} must be an integer, got {weight_text!r}"
                    ) from None
                if weight < 1:
                    raise ConfigurationError(f"--queues weight of {name!r} must be >= 1")
            if name in weights:
                raise ConfigurationError(f"--queues names {name!r} twice")
            weights[name] = weight
        return cls(weights)

    def wants(self, queue: str) -> bool:
        """Whether a NOTIFY for `queue` should wake this worker."""
        return self.weights is None or queue in self.weights

    def describe(self) -> str:
        if self.weights is None:
            return "*"
        return ",".join(f"{name}={weight}" for name, weight in self.weights.items())


def allocate(
    weights: dict[str, int], slots: int, random: Callable[[], float]
) -> list[tuple[str, int]]:
    """Share `slots` between queues by weight: each slot goes to a queue drawn by weight.

    Returns (queue, count) pairs, busiest first and then every other queue with count 0,
    so the fetcher can hand a queue's shortfall to the next queue in line and a worker is
    never idle while any of its queues has work.
    """
    names = list(weights)
    total = sum(weights.values())
    counts: Counter[str] = Counter()
    for _ in range(slots):
        point = random() * total
        for name in names:
            point -= weights[name]
            if point < 0:
                counts[name] += 1
                break
        else:
            counts[names[-1]] += 1
    return sorted(
        ((name, counts[name]) for name in names), key=lambda item: (-item[1], -weights[item[0]])
    )
