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

from pgjobs.db import first_line

log = logging.getLogger("pgjobs.worker")


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

    An exception in a pass is logged and the loop carries on at its interval: a service
    thread that died silently would leave a worker that looks alive and does nothing.
    """

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
        failing = False
        while self.keep_running():
            try:
                self.run_once()
            except Exception as error:
                # One warning per outage, not one per pass: the pass is retried at its
                # interval, and a database that is down fails every pass alike.
                log.log(
                    logging.DEBUG if failing else logging.WARNING,
                    f"{self.name} failed, retrying every {self.interval:g}s",
                    extra={"component": self.name, "error": first_line(error)},
                )
                failing = True
                self._woken.wait(self.interval)
                self._woken.clear()
                continue
            if failing:
                log.info(f"{self.name} recovered", extra={"component": self.name})
                failing = False
            if not self.keep_running():
                return
            self._woken.wait(self.next_wait())
            self._woken.clear()
