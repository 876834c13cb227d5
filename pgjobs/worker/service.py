"""The life cycle every part of the worker shares: start, run one pass, stop.

Each service owns a thread that calls `run_once()` when woken or when its interval
passes. Tests call `run_once()` directly, in-process, without timers; the worker only
starts and stops services, so adding one (periodic enqueuer, registry) is adding a list
entry.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

import psycopg

from pgjobs.db import first_line
from pgjobs.errors import SchemaNotMigratedError

log = logging.getLogger("pgjobs.worker")

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


class Service(ABC):
    """A part of the worker with its own thread."""

    name: str = "service"

    @abstractmethod
    def start(self) -> None:
        """Start the service's thread; returns at once."""

    @abstractmethod
    def stop(self, timeout: float) -> bool:
        """Stop and wait up to `timeout` seconds; True when it stopped cleanly in time."""

    @abstractmethod
    def run_once(self) -> object:
        """One pass of the service's work, in the calling thread."""


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
        self._thread = threading.Thread(target=self._loop, name=f"pgjobs-{name}", daemon=True)

    @property
    def stopping(self) -> bool:
        """True once `stop()` was called."""
        return self._stopping.is_set()

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """Run a pass as soon as possible."""
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
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def keep_running(self) -> bool:
        """Whether the loop should run another pass; until `stop()` by default."""
        return not self._stopping.is_set()

    def close(self) -> None:
        """Release what the service holds (its connection), after its thread ended."""

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
