"""Waiting for jobs to finish: `App.result`, `App.result_async` and `App.results`.

Each App has one waiter per process. A wait registers a `concurrent.futures.Future` per
job id, then reads the jobs once on the App's own pool, so a job that finished before
anyone waited is answered at once. The rest are answered by one listener thread per App
and process, started by the first wait that needs it, on a connection of its own
(autocommit, `application_name` "pgjobs-results <pid>") that LISTENs on the schema's
results channel. The worker notifies that channel once per
statement that finishes jobs of tasks with `store_result=True`, workflow steps, and any
failure or cancellation it records; on a notification, and every `POLL_INTERVAL` seconds
while anyone waits (plain jobs complete without a notification), the thread reads every
job waited for in one statement and resolves the finished ones. A lost connection is
reopened after a pause that doubles up to `RECONNECT_MAX_DELAY`, LISTENs again and
re-reads everything waited for; the waits go on meanwhile, until their timeouts.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Iterable, Sequence
from concurrent import futures
from typing import TYPE_CHECKING, Any, Protocol

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from pgjobs.bounds import check_bigint, check_seconds
from pgjobs.data.connector import rows, run
from pgjobs.data.results import Standing, finished_jobs, listen_statement
from pgjobs.db import Database, first_line
from pgjobs.errors import (
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    PgJobsError,
)

if TYPE_CHECKING:
    from pgjobs.async_db import AsyncDatabase
    from pgjobs.data.layer import DataLayer
    from pgjobs.data.sql import SchemaSQL

log = logging.getLogger("pgjobs.results")

# How often the listener reads the jobs waited for when no notification came: the most a
# plain job's completion (which notifies no one) waits to be seen. One indexed lookup per
# waited-for job, only while someone waits.
POLL_INTERVAL = 0.5
# The least time between two reads woken by notifications: under a stream of them (busy
# workers of tasks that store results) a waiting process reads at most 100 times a second.
MIN_CHECK_GAP = 0.01
RECONNECT_INITIAL_DELAY = 0.1
RECONNECT_MAX_DELAY = 2.0
CONNECT_TIMEOUT = 5
APPLICATION_NAME_PREFIX = "pgjobs-results"
CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
# What `results(..., return_exceptions=True)` returns in place of a value.
JOB_ERRORS = (JobFailedError, JobCancelledError, JobNotFoundError)
Waits = dict[int, futures.Future[Any]]


class Owner(Protocol):
    """What the waiter needs of its App (typed by what it uses: no import of the App)."""

    database: Database
    schema: str
    data: DataLayer

    @property
    def async_database(self) -> AsyncDatabase: ...


def not_found(job_id: int) -> JobNotFoundError:
    return JobNotFoundError(
        f"job {job_id} does not exist: it was never enqueued, was pruned, or the "
        "transaction that enqueues it has not committed yet"
    )


def check_timeout(timeout: object) -> float | None:
    """None (no limit), or seconds >= 0 (a timedelta too); ValueError otherwise."""
    return None if timeout is None else check_seconds("timeout", timeout)


def check_job_id(job_id: object) -> int:
    if isinstance(job_id, bool) or not isinstance(job_id, int):
        raise TypeError(f"a job id is an int, got {job_id!r}")
    return check_bigint("job id", job_id)


def settle(waits: Iterable[tuple[int, futures.Future[Any]]], standing: Standing) -> None:
    """Resolve the futures of the jobs `standing` says finished or cannot be seen."""
    for job_id, future in waits:
        if future.done():
            continue
        ending = standing.finished.get(job_id)
        try:
            if ending is None:
                if job_id not in standing.unfinished:
                    future.set_exception(not_found(job_id))
            elif ending.state == "completed":
                future.set_result(ending.result)
            elif ending.state == "failed":
                future.set_exception(JobFailedError(job_id, ending.error, ending.traceback))
            else:
                future.set_exception(JobCancelledError(job_id, cancel_reason(ending.error)))
        except futures.InvalidStateError:
            pass  # resolved or cancelled (an async wait that timed out) meanwhile


def timed_out(ids: Sequence[int], seconds: float | None) -> TimeoutError:
    """The error of a wait whose `ids` did not finish in time (the first ten named)."""
    shown = ", ".join(map(str, ids[:10])) + (", ..." if len(ids) > 10 else "")
    which = f"job {shown}" if len(ids) == 1 else f"{len(ids)} jobs ({shown})"
    return TimeoutError(f"{which} did not finish within {seconds or 0:g}s")


class ResultWaiter:
    """An App's waits for results in this process, and its one listener."""

    def __init__(self, owner: Owner) -> None:
        self.owner = owner
        self._lock = threading.Lock()
        self._listener: Listener | None = None

    def results(
        self, ids: Iterable[int], timeout: object = None, return_exceptions: bool = False
    ) -> list[Any]:
        """The values of jobs `ids`, in order, once all have finished (see App.results)."""
        seconds = check_timeout(timeout)
        ids = [check_job_id(job_id) for job_id in ids]
        if not ids:
            return []
        deadline = None if seconds is None else time.monotonic() + seconds
        listener, waits = self._register(ids)
        try:
            with self.owner.database.transaction() as conn:
                plan = finished_jobs(listener.sql, ids)
                settle(waits.items(), run(conn, self.owner.schema, plan))
            listener.start_for(waits)
            until = futures.ALL_COMPLETED if return_exceptions else futures.FIRST_EXCEPTION
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            futures.wait(waits.values(), remaining, return_when=until)
            for job_id in ids:  # the first error in the order of `ids`, unless returned
                error = self._error(waits[job_id])
                if error is not None and not (return_exceptions and isinstance(error, JOB_ERRORS)):
                    raise error
            late = [job_id for job_id, future in waits.items() if not future.done()]
            if late:
                raise timed_out(late, seconds)
            return [self._error(waits[job_id]) or waits[job_id].result() for job_id in ids]
        finally:
            listener.forget(waits)

    @staticmethod
    def _error(future: futures.Future[Any]) -> BaseException | None:
        """The exception a finished future holds; None for a value or when unfinished."""
        return future.exception() if future.done() else None

    async def result_async(self, job_id: int, timeout: object = None) -> Any:
        """`App.result` for asyncio: the first read on pgjobs' asyncio pool, the wait on
        the listener's future, so the event loop never blocks."""
        import asyncio

        from pgjobs.data.connector import run_async

        seconds = check_timeout(timeout)
        job_id = check_job_id(job_id)
        deadline = None if seconds is None else time.monotonic() + seconds
        listener, waits = self._register([job_id])
        try:
            async with self.owner.async_database.transaction() as conn:
                plan = finished_jobs(listener.sql, [job_id])
                settle(waits.items(), await run_async(conn, self.owner.schema, plan))
            listener.start_for(waits)
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                return await asyncio.wait_for(asyncio.wrap_future(waits[job_id]), remaining)
            except asyncio.TimeoutError:  # TimeoutError itself from Python 3.11 on
                if waits[job_id].done() and not waits[job_id].cancelled():
                    return waits[job_id].result()  # finished just as the time ran out
                raise timed_out([job_id], seconds) from None
        finally:
            listener.forget(waits)

    def _register(self, ids: Iterable[int]) -> tuple[Listener, Waits]:
        """A future per job id, registered with the listener (a new one if need be)."""
        with self._lock:
            listener = self._listener
            owner = self.owner
            if listener is None or not listener.serves(owner.database, owner.data.sql):
                # A forked child inherits a listener whose thread is not there, and whose
                # socket is its parent's: left alone.
                if listener is not None and listener.pid == os.getpid():
                    listener.close()
                listener = self._listener = Listener(owner.database, owner.data.sql)
            return listener, listener.register(ids)

    def close(self) -> None:
        """Stop the listener and close its connection; waits still on fail. The next wait
        starts a new one."""
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()


class Listener:
    """The thread that LISTENs for finished jobs and resolves the futures waiting for them."""

    def __init__(self, database: Database, sql: SchemaSQL) -> None:
        self.database = database
        self.sql = sql
        self.pid = os.getpid()
        self.poll_interval = POLL_INTERVAL
        self._pending: dict[int, set[futures.Future[Any]]] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        # A write to `_waker` wakes the thread from its wait on the connection's socket.
        self._wakeup, self._waker = socket.socketpair()
        self._wakeup.setblocking(False)
        self._waker.setblocking(False)
        self._conn: psycopg.Connection[Any] | None = None
        self._lost = False
        self._delay = RECONNECT_INITIAL_DELAY
        self._thread: threading.Thread | None = None

    def serves(self, database: Database, sql: SchemaSQL) -> bool:
        """Whether this listener serves that database and schema, in this process."""
        return (
            not self._stopping.is_set()
            and database is self.database
            and sql is self.sql
            and self.pid == os.getpid()
        )

    def register(self, ids: Iterable[int]) -> Waits:
        """A future for each of `ids`, resolved once that job is seen finished."""
        waits: Waits = {}
        with self._lock:
            was_idle = not self._pending
            for job_id in ids:
                if job_id not in waits:
                    waits[job_id] = futures.Future()
                    self._pending.setdefault(job_id, set()).add(waits[job_id])
        if was_idle:
            self._wake()  # from waiting for notifications only to polling as well
        return waits

    def start_for(self, waits: Waits) -> None:
        """Start the thread, unless it runs already or the first read answered `waits`.

        Started after that read, it still misses nothing: its first act after LISTEN is
        to read every job waited for.
        """
        if all(future.done() for future in waits.values()):
            return
        with self._lock:
            if self._thread is None and not self._stopping.is_set():
                self._thread = threading.Thread(
                    target=self._run, name=f"pgjobs-results {self.sql.schema}", daemon=True
                )
                self._thread.start()

    def forget(self, waits: Waits) -> None:
        """The wait is over (answered, timed out or abandoned)."""
        with self._lock:
            for job_id, future in waits.items():
                held = self._pending.get(job_id)
                if held is not None:
                    held.discard(future)
                    if not held:
                        del self._pending[job_id]

    def close(self, timeout: float = 10.0) -> None:
        """Stop the thread, close its connection, and fail the waits still going on."""
        with self._lock:
            self._stopping.set()
            thread = self._thread
        self._wake()
        if thread is not None:
            thread.join(timeout)
        self._fail_pending(PgJobsError("stopped waiting for the job: the App was closed"))
        if thread is None or not thread.is_alive():
            self._wakeup.close()
            self._waker.close()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake is pending anyway) or closed
            self._waker.send(b"\0")

    def _snapshot(self) -> list[tuple[int, futures.Future[Any]]]:
        with self._lock:
            return [(job_id, f) for job_id, held in self._pending.items() for f in held]

    def _fail_pending(self, error: BaseException) -> None:
        for _, future in self._snapshot():
            with contextlib.suppress(futures.InvalidStateError):
                future.set_exception(error)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._serve()
            except CONNECTION_ERRORS as error:
                # The waits go on (the first read reached the server: it will be back),
                # up to their timeouts.
                self._discard()
                level = logging.DEBUG if self._lost else logging.WARNING
                self._lost = True
                log.log(
                    level,
                    "results listener has no database connection, retrying",
                    extra={"error": first_line(error), "retry_in": round(self._delay, 2)},
                )
            except Exception as error:  # the URL, the schema: no wait can succeed
                self._discard()
                log.exception("results listener failed, retrying")
                self._fail_pending(error)
            else:
                continue  # stopping
            self._stopping.wait(self._delay)
            self._delay = min(self._delay * 2, RECONNECT_MAX_DELAY)
        self._discard()

    def _serve(self) -> None:
        """Connect, LISTEN, then read the waited-for jobs on every notification and poll."""
        conn = self._conn = self._connect()
        rows(conn, self.sql.schema, listen_statement(self.sql))
        self._delay = RECONNECT_INITIAL_DELAY
        if self._lost:
            self._lost = False
            log.info("results listener connection restored")
        # Whatever finished while no one listened: notifications sent then are gone.
        self._check(conn)
        checked = time.monotonic()
        heard = False
        with selectors.DefaultSelector() as selector:
            selector.register(conn.fileno(), selectors.EVENT_READ)
            selector.register(self._wakeup, selectors.EVENT_READ)
            while not self._stopping.is_set():
                # Notifications read with a statement's result wait in psycopg's backlog,
                # those not yet read in the socket: `notifies(timeout=0)` takes both.
                heard = any(True for _ in conn.notifies(timeout=0)) or heard
                now = time.monotonic()
                wait: float | None = None
                if not self._pending:
                    checked, heard = now, False  # the next poll: a full interval after a wait
                else:
                    due = checked + (MIN_CHECK_GAP if heard else self.poll_interval)
                    if now >= due:
                        self._check(conn)
                        checked, heard = time.monotonic(), False
                        continue
                    wait = due - now
                for key, _ in selector.select(wait):
                    if key.fileobj is self._wakeup:
                        with contextlib.suppress(OSError):
                            self._wakeup.recv(4096)

    def _check(self, conn: psycopg.Connection[Any]) -> None:
        """Read every job waited for, in one statement, and resolve the finished ones."""
        waits = self._snapshot()
        if waits:
            plan = finished_jobs(self.sql, [job_id for job_id, _ in waits])
            settle(waits, run(conn, self.sql.schema, plan))

    def _connect(self) -> psycopg.Connection[Any]:
        url = self.database.url
        # The operator's application_name (in the URL or PGAPPNAME) wins over ours.
        if "application_name" not in conninfo_to_dict(url) and not os.environ.get("PGAPPNAME"):
            url = make_conninfo(url, application_name=f"{APPLICATION_NAME_PREFIX} {os.getpid()}")
        return psycopg.connect(
            url, autocommit=True, connect_timeout=CONNECT_TIMEOUT, prepare_threshold=None
        )

    def _discard(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):  # a broken socket may fail to close too
                conn.close()


def cancel_reason(error: str | None) -> str | None:
    """Why a job was cancelled, from its last `errors` entry: `dependency fetch (job 12)
    failed` for a workflow step its dependency broke; None for a cancel by hand."""
    prefix = "cancelled: "
    return error[len(prefix) :] if error and error.startswith(prefix) else None
