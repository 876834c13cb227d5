"""The listener: one LISTEN connection that wakes the fetcher when work arrives.

Notifications carry the queue name, so a worker ignores queues it does not serve. After
a lost connection it reconnects, LISTENs again and wakes the fetcher once, because
notifications sent while it was away are gone; the poll would find those jobs too, but
later.
"""

from __future__ import annotations

from collections.abc import Callable

from pgjobs.data.maintenance import MaintenanceStatements
from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.notify_check import PROBE_PAYLOAD
from pgjobs.worker.service import StatementService, StopPhase

# How long one pass waits for notifications; also how quickly a stop is noticed.
WAIT = 0.5


class Listener(StatementService[MaintenanceStatements]):
    """Runs LISTEN on the schema's channel and calls `wake` for wanted queues.

    Its connection is its own (LISTEN is a session's state), and the only one it closes.
    """

    stop_phase = StopPhase.UPKEEP  # a cancel's control message may come until the end
    connection: ResilientConnection

    def __init__(
        self,
        connection: ResilientConnection,
        statements: MaintenanceStatements,
        wants: Callable[[str], bool],
        wake: Callable[[], None],
        heard: Callable[[], None] = lambda: None,
        on_control: Callable[[str], None] = lambda payload: None,
    ) -> None:
        super().__init__("listener", WAIT, connection, statements)
        self.wants = wants
        self.wake_fetcher = wake
        self.heard = heard  # every notification, for the notification check
        self.on_control = on_control  # payloads of the control channel (worker/control.py)
        self._listening = False

    @property
    def listening(self) -> bool:
        """Whether LISTEN is in effect on the current connection, as far as we know."""
        return self._listening

    def run_once(self) -> int:
        """LISTEN if not yet, then wait up to `WAIT` s for notifications; how many woke us."""
        try:
            if not self._listening:
                self.connection.run(self.statements.listen, attempts=1)
                self._listening = True
                self.wake_fetcher()  # whatever was notified while we were away
            woken = 0
            conn = self.connection.connection()
            for notify in conn.notifies(timeout=WAIT):
                self.heard()
                if notify.channel == self.statements.sql.control_channel:
                    self.on_control(notify.payload)
                elif notify.payload != PROBE_PAYLOAD and self.wants(notify.payload):
                    woken += 1
                    self.wake_fetcher()
            return woken
        except Exception:
            self._listening = False
            self.connection.discard()
            raise

    def next_wait(self) -> float:
        return 0.0  # run_once itself waits on the connection

    def close(self) -> None:
        self.connection.close()
