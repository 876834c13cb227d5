"""The listener: one LISTEN connection that wakes the fetcher when work arrives.

Notifications carry the queue name, so a worker ignores queues it does not serve. After
a lost connection it reconnects, LISTENs again and wakes the fetcher once, because
notifications sent while it was away are gone; the poll would find those jobs too, but
later.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from pgjobs.queries import Queries
from pgjobs.worker.connection import ResilientConnection

log = logging.getLogger("pgjobs.worker")


class Listener:
    """Runs LISTEN on the schema's channel and calls `wake` for wanted queues."""

    def __init__(
        self,
        connection: ResilientConnection,
        queries: Queries,
        wants: Callable[[str], bool],
        wake: Callable[[], None],
    ) -> None:
        self.connection = connection
        self.queries = queries
        self.wants = wants
        self.wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pgjobs-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _listen(self) -> None:
        self.connection.run(lambda conn: conn.execute(self.queries.listen), give_up=self._stop)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self._listen()
                self.wake()
                conn = self.connection.connection()
                while not self._stop.is_set():
                    for notify in conn.notifies(timeout=0.5):
                        if self.wants(notify.payload):
                            self.wake()
            except Exception as error:
                self.connection.discard()
                if self._stop.is_set():
                    return
                log.warning("listener lost its connection", extra={"error": str(error)})
                self._stop.wait(0.5)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2.0)
        self.connection.close()
