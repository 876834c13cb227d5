"""pgjobs-async: pgjobs' worker with `--async-claim-commit` added to every setting.

pgjobs' worker commits its claims durably by default; with the option a claim does not
wait for the disk (faster pickup; a server crash may undo a claim). Both get a row in the
scenarios where that shows.
"""

from __future__ import annotations

from .base import Variant

VARIANT = Variant(
    name="pgjobs-async",
    base="pgjobs",
    options=("--async-claim-commit",),
    scenarios=("drain", "latency", "steady"),
)
