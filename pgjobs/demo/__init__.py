"""`pgjobs demo`: a self-contained tour that needs nothing but pgjobs installed.

- `tasks.py`: the sample tasks and the jobs the tour enqueues (serve them yourself with
  `pgjobs work --app pgjobs.demo.tasks:app`);
- `tour.py`: the tour: migrate, enqueue, run a worker in-process, summarise;
- `display.py`: following the demo's jobs while the worker runs them, live on a terminal.
"""

DEMO_SCHEMA = "pgjobs_demo"
DEMO_QUEUE = "demo"
