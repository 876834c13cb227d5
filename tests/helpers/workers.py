"""`WorkerProcess`: one `pgjobs work` subprocess on a test schema, with its output in a
file (a pipe could fill up and block the worker), signals, exit status and logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import make_conninfo

from pgjobs.data.sql import notify_channel
from pgjobs.worker.queues import QueueSpec
from tests.helpers.waiting import wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
WORKER_APP = "tests.worker_app:app"
# The `start_worker` fixture's type: start_worker(*args, ready=True, app=WORKER_APP).
StartWorker = Callable[..., "WorkerProcess"]


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
        """Wait until the worker logged "worker started", its listener is listening and
        its notification check has passed.

        Without the second step a job enqueued right after start could be missed by a
        listener that has not run LISTEN yet, and would wait for the next poll.
        """

        def started() -> bool:
            if not self.running():
                raise AssertionError(f"worker exited during start-up; {self.describe()}")
            return "worker started" in self.logs()

        wait_until(started, timeout, message=lambda: f"worker did not start; {self.describe()}")
        self.wait_listening(timeout)
        # The notification check's probe at start would otherwise count as activity in a
        # test that watches the worker stay quiet (`active_since`).
        wait_until(
            lambda: "notifications reach this worker" in self.logs(),
            timeout,
            message=lambda: f"the notification check never passed; {self.describe()}",
        )
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

    def last_activity(self, like: str = "%") -> datetime | None:
        """When the worker's connections last started a statement now finished (one whose
        text is `like` that pattern: '%claim_jobs"(%' for a claim).

        Only idle sessions count, so a statement (or transaction) is seen once, finished.
        None when no connection of the worker has finished a statement yet.
        """
        row = (
            self._observe()
            .execute(
                "SELECT max(query_start) FROM pg_stat_activity"
                " WHERE application_name = %s AND state = 'idle' AND query LIKE %s",
                (self.application_name, like),
            )
            .fetchone()
        )
        return None if row is None else row[0]

    def wait_quiet(self, like: str = "%", quiet_for: float = 0.3, timeout: float = 10.0) -> None:
        """Wait until the worker has run no statement `like` that pattern for `quiet_for`
        seconds (none running either): what start-up and its probes set off is over."""

        def quiet() -> bool:
            row = (
                self._observe()
                .execute(
                    "SELECT coalesce(bool_and(state = 'idle'"
                    " AND now() - query_start >= make_interval(secs => %s)), true)"
                    " FROM pg_stat_activity WHERE application_name = %s AND query LIKE %s",
                    (quiet_for, self.application_name, like),
                )
                .fetchone()
            )
            return bool(row and row[0])

        wait_until(
            quiet, timeout, message=lambda: f"the worker never went quiet; {self.describe()}"
        )

    def active_since(self, moment: datetime | None, like: str = "%") -> bool:
        """Whether the worker's connections finished a statement (`like` that pattern)
        after `moment`."""
        latest = self.last_activity(like)
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
            # Not prepared, so that it also works through a transaction pooler.
            self._observer = psycopg.connect(
                self.database_url, autocommit=True, prepare_threshold=None
            )
        return self._observer

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
        self.remove_log()
