"""The notification check: proves that NOTIFY reaches the listener, and polls fast when not.

Behind a transaction-mode pooler (PgBouncer's `pool_mode = transaction`) LISTEN runs on
whichever server connection the pooler lends for that one statement, and notifications
never come back: the worker still runs every job, but only when its poll finds it, and
nothing says why. So at start, and now and then, the worker sends a notification on its
own channel from another connection and waits briefly for the listener to hear anything.
When nothing arrives it logs one WARNING naming the likely cause and the fix
(`--listen-database-url`) and shortens the fetcher's poll until notifications arrive again.

The probe's payload is the empty string, which no queue name can be, so it never wakes a
fetcher; any notification the listener hears, probe or job, counts as proof.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pgjobs.worker.service import LoopService, StopPhase

log = logging.getLogger("pgjobs.worker")

PROBE_PAYLOAD = ""
# Seconds between checks while notifications arrive, and while they do not.
CHECK_EVERY = 60.0
RECHECK_EVERY = 10.0
# A notification on a working connection arrives within milliseconds; this is generous
# for a loaded machine and only delays the verdict, never a job.
PROBE_WAIT = 2.0
# The poll while notifications do not arrive: pickup within this, plus a claim.
FAST_POLL_INTERVAL = 0.2
# How soon to look again while the listener has not run LISTEN yet.
LISTENER_NOT_READY_RETRY = 0.2

PROBE_FAILED = (
    "notifications do not reach this worker, so it polls every {fast:g}s instead of "
    "waking on NOTIFY; likely cause: LISTEN through a transaction-mode pooler such as "
    "PgBouncer; fix: give the listener a direct or session-pooled URL with "
    "--listen-database-url (PGJOBS_LISTEN_DATABASE_URL)"
)


class NotifyCheck(LoopService):
    """Sends a probe notification and tells the fetcher how often to poll."""

    stop_phase = StopPhase.UPKEEP

    def __init__(
        self,
        *,
        send_probe: Callable[[], None],
        listening: Callable[[], bool],
        poll_every: Callable[[float], None],
        poll_interval: float,
        interval: float = CHECK_EVERY,
        recheck: float = RECHECK_EVERY,
        wait: float = PROBE_WAIT,
    ) -> None:
        super().__init__("notify-check", interval)
        self.send_probe = send_probe
        self.listening = listening
        self.poll_every = poll_every
        self.poll_interval = poll_interval
        self.recheck = recheck
        self.wait = wait
        self.working: bool | None = None  # None until a check has run
        self._heard = threading.Event()

    @property
    def fast_poll_interval(self) -> float:
        """The poll while notifications do not arrive (never slower than the usual one)."""
        return min(FAST_POLL_INTERVAL, self.poll_interval)

    def heard(self) -> None:
        """Called by the listener for every notification it receives."""
        self._heard.set()

    def run_once(self) -> bool | None:
        """Probe once; whether a notification arrived (None: the listener is not ready)."""
        if not self.listening():
            return None
        self._heard.clear()
        self.send_probe()
        arrived = self._heard.wait(self.wait) and not self.stopping
        if arrived and self.working is not True:
            # Once at start, and once when they come back (the operator saw the warning).
            log.info(
                f"notifications reach this worker; polling every {self.poll_interval:g}s",
                extra={"component": self.name},
            )
            if self.working is False:
                self.poll_every(self.poll_interval)
        elif not arrived and self.working is not False and not self.stopping:
            log.warning(
                PROBE_FAILED.format(fast=self.fast_poll_interval), extra={"component": self.name}
            )
            self.poll_every(self.fast_poll_interval)
        if not self.stopping:
            self.working = arrived
        return arrived

    def next_wait(self) -> float:
        if self.working is None:
            return LISTENER_NOT_READY_RETRY
        return self.interval if self.working else self.recheck

    def request_stop(self) -> None:
        super().request_stop()
        self._heard.set()  # end a probe's wait at once
