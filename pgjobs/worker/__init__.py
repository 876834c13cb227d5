"""The worker: claims jobs, runs them on a bounded thread pool, records every outcome.

Its parts are services, each on its own thread, built and wired in one place
(`assembly.py`) and started and stopped by `Worker` (`worker.py`) in the order each
declares (`service.StopPhase`):

- `Fetcher`        claims up to the room in the claim buffer in one statement
- `ClaimBuffer`    holds claimed jobs in start order, bounded in count and in time
- `Readier`        readies the next claimed jobs just before the slots need them
- `ExecutorPool`   runs tasks on threads (`AsyncExecutor`: `async def` ones on a loop)
- `Completer`      writes outcomes in batches
- `Heartbeat`      keeps every held job alive
- `Listener`       LISTENs and wakes the fetcher (`NotifyCheck` proves it hears)
- `WorkerRegistry` keeps the worker's row and elects the maintenance leader
- `Maintenance`    on the leader alone: rescue, retention, periodic jobs, lost workers
"""

from pgjobs.worker.settings import WorkerSettings
from pgjobs.worker.worker import Worker

__all__ = ["Worker", "WorkerSettings"]
