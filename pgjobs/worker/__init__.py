"""The worker: claims jobs, runs them on a bounded thread pool, records every outcome.

It is a handful of parts that talk through callbacks and queues, each on its own thread
with its own connection:

- `Listener`     LISTEN for new jobs, wakes the fetcher
- `Fetcher`      claims up to the number of free threads in one statement
- `ExecutorPool` runs tasks, enforces timeouts, settles each attempt once
- `Completer`    writes outcomes in batches
- `Maintenance`  heartbeats held jobs, rescues jobs of lost workers
"""

from pgjobs.worker.worker import Worker, WorkerSettings

__all__ = ["Worker", "WorkerSettings"]
