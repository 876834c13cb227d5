"""The life cycle every part of the worker shares: start, run one pass, stop.

Each service owns a thread that calls `run_once()` when woken or when its interval
passes. Tests call `run_once()` directly, in-process, without timers. Each service also
declares when it stops (`stop_phase`) and how long it may take (`stop_timeout`): the
worker derives its start and shutdown order from those declarations, so adding a service
is adding it to the assembly (`worker/assembly.py`), not editing a shutdown sequence.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from enum import IntEnum
from typing import TYPE_CHECKING, Generic, TypeVar

import psycopg

from pgjobs.db import first_line
from pgjobs.errors import SchemaNotMigratedError

if TYPE_CHECKING:
    from pgjobs.worker.connection import Connections

log = logging.getLogger("pgjobs.worker")
# The statements a service runs: one of the data layer's groups (data/layer.py).
S = TypeVar("S")

# A failing pass is retried after its interval, doubling up to this many seconds.
MAX_RETRY_DELAY = 30.0
# No sleep is longer than this, whatever a service asks for: a wait past what the
# platform's timers hold would kill the thread (`OverflowError`).
MAX_SLEEP = 3600.0
# Errors no retry can heal: the schema lacks a table, column or function this version
# of pgjobs uses (not migrated, or migrated to an older version).
UNHEALABLE = (
    SchemaNotMigratedError,
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedColumn,
    psycopg.errors.UndefinedFunction,
)


def _report_fatal(service: Service, error: BaseException) -> None:
    log.critical(
        f"{service.name} cannot go on: {first_line(error)}", extra={"component": service.name}
    )


class StopPhase(IntEnum):
    """When a service stops in a shutdown, earliest first; services start in the reverse
    order, so that whatever produces work starts after what consumes it, and whatever
    keeps held jobs alive outlives whatever could still hold one."""

    INTAKE = 1  # stop taking work: claims, readying, maintenance (then jobs are drained)
    EXECUTION = 2  # the executors, once running jobs finished or were put back
    OUTCOMES = 3  # write the last outcomes; the worker exits 0 only if these stop cleanly
    UPKEEP = 4  # heartbeats, LISTEN and its check: held jobs stay alive until written
    PRESENCE = 5  # what shows the worker to others: the registry row, the metrics server


class Service(ABC):
    """A part of the worker with its own thread (or threads)."""

    name: str = "service"
    stop_phase: StopPhase = StopPhase.UPKEEP
    stop_timeout: float = 2.0  # seconds `stop()` may take in a shutdown

    @abstractmethod
    def start(self) -> None:
        """Start the service's thread; returns at once."""

    @abstractmethod
    def stop(self, timeout: float) -> bool:
        """Stop and wait up to `timeout` seconds; True when it stopped cleanly in time."""

    @abstractmethod
    def run_once(self) -> object:
        """One pass of the service's work, in the calling thread."""

    def subservices(self) -> Sequence[Service]:
        """Services this one starts and stops itself (a watchdog); supervised alike."""
        return ()


class LoopService(Service):
    """A service that runs `run_once()` every `interval` seconds, or sooner on `wake()`.

    Its thread never dies silently, which would leave a worker that looks alive and does
    nothing. A pass that fails is retried after a pause that doubles from `interval` up
    to `MAX_RETRY_DELAY`: a database error is logged in one line, once per episode, and
    anything else with its traceback. An error that no retry can heal (`UNHEALABLE`)
    ends the loop and calls `on_fatal`, with which the worker stops with a non-zero exit.
    """

    on_fatal: Callable[[Service, BaseException], None] = staticmethod(_report_fatal)

    def __init__(self, name: str, interval: float) -> None:
        self.name = name
        self.interval = interval
        self._stopping = threading.Event()
        self._woken = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called."""
        return self._stopping.is_set()

    def start(self) -> None:
        """Start the loop's thread; again once a previous one has ended (maintenance stops
        when its worker stops leading and starts again when it leads again)."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name=f"pgjobs-{self.name}", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        """Run a pass as soon as possible."""
        # Set already: the loop has not cleared it yet, so it runs a pass after this
        # call, which sees whatever the caller changed before calling.
        if not self._woken.is_set():
            self._woken.set()

    def stop(self, timeout: float) -> bool:
        self.request_stop()
        stopped = self.join(timeout)
        self.close()
        return stopped

    def request_stop(self) -> None:
        """Ask the loop to end after its current pass."""
        self._stopping.set()
        self._woken.set()

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the loop to end; True if it has."""
        thread = self._thread
        if thread is not None and thread.is_alive():
            thread.join(timeout)
        return thread is None or not thread.is_alive()

    def keep_running(self) -> bool:
        """Whether the loop should run another pass; until `stop()` by default."""
        return not self._stopping.is_set()

    def close(self) -> None:
        """Release what the service holds, after its thread ended."""

    def next_wait(self) -> float:
        """Seconds to sleep before the next pass unless woken; the interval by default."""
        return self.interval

    def _loop(self) -> None:
        failures = 0
        while self.keep_running():
            try:
                self.run_once()
            except UNHEALABLE as error:
                self.on_fatal(self, error)
                return
            except Exception as error:
                failures += 1
                delay = min(self.interval * 2 ** min(failures - 1, 16), MAX_RETRY_DELAY)
                self._log_failure(error, first=failures == 1, delay=delay)
                self._sleep(delay)
                continue
            if failures:
                log.info(f"{self.name} recovered", extra={"component": self.name})
                failures = 0
            if not self.keep_running():
                return
            try:
                wait = self.next_wait()
            except Exception as error:
                self._log_failure(error, first=True, delay=self.interval)
                wait = self.interval
            self._sleep(wait)

    def _sleep(self, seconds: float) -> None:
        self._woken.wait(min(max(seconds, 0.0), MAX_SLEEP))
        self._woken.clear()

    def _log_failure(self, error: Exception, *, first: bool, delay: float) -> None:
        """A database error is one line per episode (a database that is down fails every
        pass alike); any other error is a bug somewhere, and shows its traceback."""
        expected = isinstance(error, psycopg.Error)
        if expected and not first:
            level = logging.DEBUG
        else:
            level = logging.WARNING if expected else logging.ERROR
        log.log(
            level,
            f"{self.name} failed, retrying in {delay:g}s",
            extra={"component": self.name, "error": first_line(error)},
            exc_info=None if expected else error,
        )


class StatementService(LoopService, Generic[S]):
    """A loop service whose passes run statements: `statements` says them, `connection`
    runs them (one of the worker's shared connections, or the caller's in
    `pgjobs.testing`)."""

    def __init__(self, name: str, interval: float, connection: Connections, statements: S) -> None:
        super().__init__(name, interval)
        self.connection = connection
        self.statements = statements
