"""Maintenance: the fleet's upkeep, run by its leader alone, as one group.

Rescuing lost workers' jobs, deleting finished jobs past their retention, enqueueing
periodic jobs, forgetting long-lost workers and sampling the queue gauges are work for
the fleet, not for each worker. So one worker does each: the leader of its duty, which
the registry's beat elects (`registry.py`: the longest-running live worker that has the
duty, no lock and no extra round trip). This group follows the registry: when a beat
finds this worker leading a member's duty, the member starts, on its own loop, sharing
one connection with the others that they use one statement at a time; when a beat finds
it no longer leading (or cannot tell: the beat failed), the member stops after its
current pass, and the connection closes once no member runs. So a worker holds a
maintenance connection only while it leads, and stops within a beat of losing the lead.
A dead leader is replaced once it counts as lost.

Two workers may both think they lead for one beat (each beat reads the rows as they
were before it), so the members' statements keep their guards: an advisory lock inside
the rescue statement, a session advisory lock around a retention pass, and the schedule
row's lock and unique index for a periodic tick. They make a duplicate pass harmless;
leadership makes it rare.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from pgjobs.worker.connection import ResilientConnection
from pgjobs.worker.service import LoopService, StopPhase


class Maintenance(LoopService):
    """Runs each of `members`, given as (duty, member), while `leads(duty)`; woken by the
    registry when leadership changes, and checking anyway every `interval` seconds."""

    stop_phase = StopPhase.INTAKE  # periodic jobs and rescues are work coming in

    def __init__(
        self,
        members: Sequence[tuple[str, LoopService]],
        connection: ResilientConnection,
        *,
        leads: Callable[[str], bool],
        interval: float,
    ) -> None:
        super().__init__("maintenance", interval)
        self.duties = {member: duty for duty, member in members}
        self.members = [member for _, member in members]
        self.connection = connection
        self.leads = leads
        self._running: set[LoopService] = set()  # the members that run now

    @property
    def running(self) -> bool:
        """Whether any member runs now."""
        return bool(self._running)

    def subservices(self) -> list[LoopService]:
        return self.members

    def run_once(self) -> bool:
        """Start the members whose duty this worker leads, stop the others; whether any
        runs."""
        led = [m for m in self.members if self.leads(self.duties[m]) and not self.stopping]
        stopped = [m for m in self.members if m in self._running and m not in led]
        if stopped:
            self._stop_members(stopped, self.stop_timeout)
        for member in led:
            # A member still ending its last pass of a previous leadership starts at the
            # next check (`start` keeps a live thread).
            if member.join(0):
                member.start()
            self._running.add(member)
        return self.running

    def stop(self, timeout: float) -> bool:
        """Stop the group and its members; True when all ended in time."""
        self.request_stop()
        stopped = self.join(timeout)
        return self._stop_members(self.members, timeout) and stopped

    def _stop_members(self, members: Sequence[LoopService], timeout: float) -> bool:
        """Stop `members`; the connection the group shares closes once none runs. They
        count as running until then, so `running` never reads False while they still
        hold the connection."""
        for member in members:
            member.request_stop()
        deadline = time.monotonic() + timeout
        stopped = True
        for member in members:
            stopped = member.join(max(0.0, deadline - time.monotonic())) and stopped
            member.close()
        still_running = self._running.difference(members)
        if not still_running:
            self.connection.close()
        self._running = still_running
        return stopped
