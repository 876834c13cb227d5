"""Helpers for tests that run real `pgjobs work` processes.

- `wait_until` / `stays_true`: poll a condition instead of sleeping, so a test waits
  exactly as long as it must and fails with a message instead of hanging.
- `WorkerProcess`: one `pgjobs work` subprocess on a test schema, with its output in a
  file (a pipe could fill up and block the worker), signals, exit status and logs.
- `job`, `jobs`, `runs`, `wait_for_job`: read the jobs table and the `runs` table that
  the tasks of `tests/worker_app.py` write to; `create_runs_table` creates the latter.
- `job_row_locked`: hold a job's row lock, so that writing its outcome has to wait.

The matching pytest fixtures (`runs_table`, `start_worker`) live in
`tests/worker_fixtures.py`; a test module pulls them in with
`pytest_plugins = ["tests.worker_fixtures"]`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from pgjobs.queries import notify_channel
from pgjobs.worker.queues import QueueSpec

T = TypeVar("T")

REPO_ROOT = Path(__file__).resolve().parent.parent
WORKER_APP = "tests.worker_app:app"

Message = str | Callable[[], str]
# The `start_worker` fixture's type: start_worker(*args, ready=True, app=WORKER_APP).
StartWorker = Callable[..., "WorkerProcess"]


def _text(message: Message) -> str:
    return message() if callable(message) else message


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: Message = "condition not met",
) -> T:
    """Call `predicate` every `interval` seconds until it returns something truthy.

    Returns that value. Raises AssertionError with `message` (a string, or a callable
    that builds one, e.g. to include a worker's logs) when `timeout` passes first.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s: {_text(message)}")
        time.sleep(interval)


def stays_true(
    predicate: Callable[[], object],
    duration: float,
    interval: float = 0.02,
    message: Message = "condition stopped holding",
) -> None:
    """Check that `predicate` holds on every poll for `duration` seconds.

    The way to show that something does *not* happen (a job is not picked up, a worker
    is not woken): raises AssertionError with `message` at the first poll that fails.
    """
    deadline = time.monotonic() + duration
    while True:
        if not predicate():
            raise AssertionError(_text(message))
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def _option(args: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in a command line, if present."""
    for index, arg in enumerate(args):
        if arg == name and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith(f"{name}="):
            return arg.partition("=")[2]
    return None


class WorkerProcess:
    """One `pgjobs work` subprocess serving `app` (default: the test App) on `schema`.

    The worker gets `--database-url` with an `application_name` of its own, so its
    connections (and not those its tasks open) can be told apart in `pg_stat_activity`;
    the tasks read `PGJOBS_DATABASE_URL` and `PGJOBS_SCHEMA` from the environment.
    Use it as a context manager (which also deletes the log file on exit), or call
    `close()`: a process still running then is killed, so no test leaves a worker behind.
    Failure messages of its waits include the logs (`describe()`).
    """

    def __init__(self, database_url: str, schema: str, *args: str, app: str = WORKER_APP) -> None:
        self.database_url = database_url
        self.schema = schema
        self.args = list(args)
        self.app = app
        self.application_name = f"pgjobs-test-{uuid.uuid4().hex[:12]}"
        descriptor, path = tempfile.mkstemp(prefix="pgjobs-worker-", suffix=".log")
        os.close(descriptor)
        self.log_path = Path(path)
        self.process: subprocess.Popen[bytes] | None = None
        self._observer: psycopg.Connection[Any] | None = None

    @property
    def command(self) -> list[str]:
        """The command line the worker runs with."""
        worker_url = make_conninfo(self.database_url, application_name=self.application_name)
        return [
            sys.executable,
            "-m",
            "pgjobs",
            "work",
            "--app",
            self.app,
            "--schema",
            self.schema,
            "--database-url",
            worker_url,
            *self.args,
        ]

    @property
    def pid(self) -> int:
        """The process id (the worker must have been started)."""
        return self._started().pid

    def start(self) -> WorkerProcess:
        """Start the process (returns at once; see `wait_ready`)."""
        if self.process is not None:
            raise RuntimeError("worker already started")
        env = {
            **os.environ,
            "PGJOBS_DATABASE_URL": self.database_url,
            "PGJOBS_SCHEMA": self.schema,
            "PYTHONUNBUFFERED": "1",
        }
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO_ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        return self

    def _started(self) -> subprocess.Popen[bytes]:
        if self.process is None:
            raise RuntimeError("worker not started")
        return self.process

    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self._started().poll() is None

    def logs(self) -> str:
        """Everything the worker wrote to stdout and stderr so far."""
        return self.log_path.read_text(errors="replace")

    def json_logs(self) -> list[dict[str, Any]]:
        """The log lines of a `--log-format json` worker, parsed; every line must be JSON."""
        entries = []
        for line in self.logs().splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                raise AssertionError(f"log line is not JSON: {line!r}") from None
            if not isinstance(entry, dict):
                raise AssertionError(f"log line is not a JSON object: {line!r}")
            entries.append(entry)
        return entries

    def describe(self) -> str:
        """The command and the logs, for failure messages."""
        code = None if self.process is None else self.process.poll()
        return f"worker {self.args} (exit status {code}) logs:\n{self.logs()}"

    def wait_ready(self, timeout: float = 20.0) -> WorkerProcess:
        """Wait until the worker logged "worker started" and its listener is listening.

        Without the second step a job enqueued right after start could be missed by a
        listener that has not run LISTEN yet, and would wait for the next poll.
        """

        def started() -> bool:
            if not self.running():
                raise AssertionError(f"worker exited during start-up; {self.describe()}")
            return "worker started" in self.logs()

        wait_until(started, timeout, message=lambda: f"worker did not start; {self.describe()}")
        self.wait_listening(timeout)
        return self

    def wait_listening(self, timeout: float = 20.0) -> None:
        """Wait until a NOTIFY on the schema's channel makes the worker claim.

        `pg_stat_activity` only shows a session's last statement, not whether its LISTEN
        is in effect nor whether anyone reads the notifications, so this probes: send a
        notification for a queue the worker serves and watch its connections for the
        claim it triggers. Two probes in a row must answer, so the claim the fetcher
        makes at start-up cannot pass for an answer. The probe is only conclusive for a
        worker with nothing to do: a busy one claims anyway.
        """
        spec = QueueSpec.parse(_option(self.args, "--queues"))
        queue = "default" if spec.weights is None else next(iter(spec.weights))
        channel = notify_channel(self.schema)
        answered = 0

        def probe_answered() -> bool:
            nonlocal answered
            before = self.last_activity()
            self._observe().execute("SELECT pg_notify(%s, %s)", (channel, queue))
            try:
                wait_until(lambda: self.active_since(before), timeout=0.5, interval=0.01)
            except AssertionError:
                answered = 0
            else:
                answered += 1
            return answered >= 2

        wait_until(
            probe_answered,
            timeout,
            interval=0,
            message=lambda: f"worker never answered a NOTIFY; {self.describe()}",
        )

    def last_activity(self) -> datetime | None:
        """When the worker's connections last started a statement now finished.

        Only idle sessions count, so a statement (or transaction) is seen once, finished.
        None when no connection of the worker has finished a statement yet.
        """
        row = (
            self._observe()
            .execute(
                "SELECT max(query_start) FROM pg_stat_activity"
                " WHERE application_name = %s AND state = 'idle'",
                (self.application_name,),
            )
            .fetchone()
        )
        return None if row is None else row[0]

    def active_since(self, moment: datetime | None) -> bool:
        """Whether the worker's connections finished a statement after `moment`."""
        latest = self.last_activity()
        return latest is not None and (moment is None or latest > moment)

    def worker_id(self) -> str:
        """The worker id from the "worker started" log line (text or JSON format)."""
        for line in self.logs().splitlines():
            if "worker started" not in line:
                continue
            if line.startswith("{"):
                return str(json.loads(line)["worker_id"])
            for field in line.split():
                if field.startswith("worker_id="):
                    return field.partition("=")[2]
        raise AssertionError(f"no 'worker started' line; {self.describe()}")

    def send(self, signum: signal.Signals) -> None:
        """Send a signal to the worker process."""
        self._started().send_signal(signum)

    def wait_exit(self, timeout: float = 15.0) -> int:
        """Wait for the process to end; returns its exit status."""
        try:
            return self._started().wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"worker still running after {timeout:g}s; {self.describe()}"
            ) from None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM, then wait for the exit status."""
        self.send(signal.SIGTERM)
        return self.wait_exit(timeout)

    def close(self) -> None:
        """Kill the process if it still runs, and release the observer connection."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        if self._observer is not None:
            self._observer.close()
            self._observer = None

    def remove_log(self) -> None:
        """Delete the log file (after `close()`, once the logs are no longer needed)."""
        self.log_path.unlink(missing_ok=True)

    def _observe(self) -> psycopg.Connection[Any]:
        if self._observer is None or self._observer.closed:
            self._observer = psycopg.connect(self.database_url, autocommit=True)
        return self._observer

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        self.remove_log()


def _table(schema: str, name: str) -> sql.Identifier:
    return sql.Identifier(schema, name)


def create_runs_table(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create `<schema>.runs`, where the test App's tasks record every run."""
    conn.execute(
        sql.SQL(
            "CREATE TABLE {} (job_id bigint, attempt int, label text, worker_id text,"
            " at timestamptz DEFAULT clock_timestamp())"
        ).format(_table(schema, "runs"))
    )


@contextmanager
def job_row_locked(database_url: str, schema: str, job_id: int) -> Iterator[None]:
    """Hold a row lock on one job for the duration, so a worker's write to it waits.

    A way to freeze the moment between "the task returned" and "its outcome is in the
    table" (claims skip locked rows, so the rest of the queue keeps moving).
    """
    with psycopg.connect(database_url) as blocker:
        blocker.execute(
            sql.SQL("SELECT 1 FROM {} WHERE id = %s FOR UPDATE").format(_table(schema, "jobs")),
            (job_id,),
        )
        yield


def job(observer: psycopg.Connection[Any], schema: str, job_id: int) -> dict[str, Any]:
    """One row of `<schema>.jobs` as a dict; AssertionError if there is none."""
    with observer.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            sql.SQL("SELECT * FROM {} WHERE id = %s").format(_table(schema, "jobs")), (job_id,)
        ).fetchone()
    if row is None:
        raise AssertionError(f"no job {job_id} in {schema}.jobs")
    return row


def jobs(observer: psycopg.Connection[Any], schema: str) -> list[dict[str, Any]]:
    """Every row of `<schema>.jobs`, by id."""
    with observer.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            sql.SQL("SELECT * FROM {} ORDER BY id").format(_table(schema, "jobs"))
        ).fetchall()


def runs(observer: psycopg.Connection[Any], schema: str) -> list[dict[str, Any]]:
    """Every row of `<schema>.runs`, in the order the runs were recorded."""
    with observer.cursor(row_factory=dict_row) as cur:
        return cur.execute(
            sql.SQL("SELECT * FROM {} ORDER BY at, job_id, attempt").format(_table(schema, "runs"))
        ).fetchall()


def wait_for_job(
    observer: psycopg.Connection[Any],
    schema: str,
    job_id: int,
    state: str = "completed",
    *,
    timeout: float = 10.0,
    worker: WorkerProcess | None = None,
) -> dict[str, Any]:
    """Wait until job `job_id` is in `state`; returns its row.

    On timeout the message shows the job as it is and, given `worker`, the worker's logs.
    """
    found: dict[str, Any] = {}

    def reached() -> bool:
        found.update(job(observer, schema, job_id))
        return bool(found["state"] == state)

    def explain() -> str:
        logs = f"; {worker.describe()}" if worker is not None else ""
        return f"job {job_id} never became {state}: {found}{logs}"

    wait_until(reached, timeout, message=explain)
    return found
