"""The CPU a drain costs: the server's (every backend serving it) and the client's (the
worker processes), per job.

Both are read from the kernel's CPU-time clock of each process (`clock_gettime` on the
clock of another pid, as glibc's `clock_getcpuclockid` builds it): nanoseconds of
utime + stime, the sum that `/proc/<pid>/stat` gives in ticks of 10 ms, which is too
coarse here (the whole client side of a raw-SQL drain of 20,000 jobs is about 0.1 s), and
for the whole thread group at once, dead threads included. One clock read costs under a
microsecond, so a thread of compare.py reads every postmaster child and every worker
process every `INTERVAL` seconds during the drain (about 3 % of one core).

The backends are the postmaster's children (its `/proc` list of children, read at each
sample, so a backend is seen within one interval of its birth) that `pg_stat_activity`
places in the system's database as client backends or parallel workers, less compare.py's
own connections; the server's background processes (WAL writer, checkpointer,
autovacuum) are not counted. pg_stat_statements is not used: the bundled server does not
ship it, and it times statements (waits included), not CPU.

A drain's CPU is taken between the same two instants as its rate: from the first claim's
`started_at` to the last outcome's `finished_at` (both the server's clock, as `time.time`
reads it on this machine), plus `TAIL` seconds, since an outcome's statement records the
time it began and its work comes after; each process's clock is interpolated between the
samples on either side. So the workers' start-up (imports, connecting, registering) counts
for neither side, nor does anything after the drain; a second worker process still
starting up after the first one's first claim counts from that claim.
"""

from __future__ import annotations

import bisect
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

INTERVAL = 0.002  # seconds between samples
SLOW_AFTER = 10.0  # seconds of sampling after which the interval grows tenfold
TAIL = 0.010  # seconds after the last outcome's recorded time that still count
SERVING = ("client backend", "parallel worker")
UNLISTED_LOOKS = 250  # samples (half a second) before an unlisted child is given up on
CPUCLOCK_SCHED = 2


def process_cpu_ns(pid: int) -> int | None:
    """CPU time (user + system) of process `pid` and all its threads, in nanoseconds;
    None once it has exited."""
    try:
        return time.clock_gettime_ns(((~pid) << 3) | CPUCLOCK_SCHED)
    except OSError:
        return None


def children_of(pid: int) -> list[int]:
    """The pids of `pid`'s children (of its main thread, which is the postmaster's only)."""
    try:
        return [
            int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
        ]
    except OSError:
        return []


def parent_of(pid: int) -> int:
    # The fields after the command's closing parenthesis: state, then the parent's pid.
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


@dataclass(frozen=True)
class DrainCpu:
    """CPU seconds spent in a drain's window by the server's backends serving it and by the
    worker processes, and how many backends served it."""

    server: float
    client: float
    backends: int

    def per_job(self, jobs: int) -> dict[str, float]:
        """Microseconds per job, as `--json` writes them."""
        return {
            "server_us": self.server / jobs * 1e6,
            "client_us": self.client / jobs * 1e6,
            "backends": self.backends,
        }


@dataclass
class Series:
    """One process's CPU clock, read at samples `first`, `first + 1`, ... of the trace."""

    first: int
    values: list[int] = field(default_factory=list)

    def at(self, index: int) -> int:
        """Its clock at sample `index`: 0 before it was seen (it was born since the sample
        before), its last reading after it exited."""
        if index < self.first:
            return 0
        return self.values[min(index - self.first, len(self.values) - 1)]


class CpuSampler:
    """Reads the CPU clocks of a database's backends and of the worker processes `watch`
    is given, from `start` to `stop`; `between` sums them over an interval."""

    def __init__(self, url: str, excluded: set[int], interval: float = INTERVAL) -> None:
        self.url = url
        self.database = urlsplit(url).path.lstrip("/")
        self.excluded = set(excluded)
        self.interval = interval
        self.times: list[float] = []
        self.server: dict[int, Series] = {}
        self.client: dict[int, Series] = {}
        self.kinds: dict[int, bool] = {}  # backend pid -> whether it serves the drain
        self.types: dict[int, str] = {}  # postmaster child -> its backend_type
        self.asked: dict[int, int] = {}  # pids pg_stat_activity did not list yet -> times asked
        self.clients: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._conn: psycopg.Connection[Any] | None = None
        self._postmaster = 0
        self._error: BaseException | None = None

    def start(self) -> None:
        self._conn = psycopg.connect(self.url, autocommit=True)
        own = self._conn.info.backend_pid
        self.excluded.add(own)
        self._postmaster = parent_of(own)
        self._sample()
        self._thread.start()

    def watch(self, pids: list[int]) -> None:
        """Count these processes as the client (no worker under test starts others)."""
        self.clients = list(pids)

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._conn is not None and self._error is None:
            try:
                self._classify()
            except psycopg.Error as error:
                self._error = error
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _run(self) -> None:
        started = time.monotonic()
        try:
            # Past SLOW_AFTER seconds (procrastinate's drain takes half a minute), samples
            # ten times further apart keep the trace small; an interval's error is then a
            # far smaller share of the drain's CPU.
            while not self._stop.wait(
                self.interval * (10 if time.monotonic() - started > SLOW_AFTER else 1)
            ):
                self._sample()
        except Exception as error:  # reported by between(): the drain's rate stands
            self._error = error

    def _sample(self) -> None:
        index = len(self.times)
        self.times.append(time.time())
        self._read(self.server, children_of(self._postmaster), index)
        self._read(self.client, self.clients, index)
        if any(pid not in self.kinds for pid in self.server):
            self._classify()

    @staticmethod
    def _read(series: dict[int, Series], pids: list[int], index: int) -> None:
        for pid in pids:
            value = process_cpu_ns(pid)
            if value is not None:
                series.setdefault(pid, Series(index)).values.append(value)

    def _classify(self) -> None:
        """Which new postmaster children serve the drain, by `pg_stat_activity`. A backend
        not listed yet (still starting) is asked about again at the next sample."""
        assert self._conn is not None
        unknown = [pid for pid in self.server if pid not in self.kinds]
        listed = self._conn.execute(
            "SELECT pid, datname, backend_type FROM pg_stat_activity WHERE pid = ANY(%s)",
            [unknown],
        ).fetchall()
        for pid, database, backend_type in listed:
            self.types[pid] = backend_type
            if database is None and backend_type in SERVING:
                continue  # still authenticating (PostgreSQL 18 lists it already)
            self.kinds[pid] = (
                database == self.database and backend_type in SERVING and pid not in self.excluded
            )
        for pid in unknown:
            if pid not in self.kinds:
                self.asked[pid] = self.asked.get(pid, 0) + 1
                # Still unlisted at the last look, or long after its birth: not a backend
                # of the drain (a backend is listed once it has authenticated).
                if self._stop.is_set() or self.asked[pid] > UNLISTED_LOOKS:
                    self.kinds[pid] = False

    def _total(self, series: dict[int, Series], pids: list[int], at: float) -> float:
        """The processes' summed clocks at time `at`, interpolated between two samples
        (the first or the last sample's, outside them)."""
        if len(self.times) < 2:
            raise RuntimeError("too few CPU samples")
        index = min(max(bisect.bisect_right(self.times, at) - 1, 0), len(self.times) - 2)
        at = min(max(at, self.times[0]), self.times[-1])
        before = sum(series[pid].at(index) for pid in pids)
        after = sum(series[pid].at(index + 1) for pid in pids)
        start, end = self.times[index], self.times[index + 1]
        return before + (after - before) * (at - start) / (end - start)

    def between(self, first: float, last: float) -> DrainCpu:
        """CPU seconds of the drain's backends and of the workers from `first` to
        `last + TAIL` (epoch seconds). RuntimeError if the sampler failed."""
        if self._error is not None:
            raise RuntimeError(f"CPU sampler failed: {self._error}") from self._error
        backends = [pid for pid, serves in self.kinds.items() if serves and pid in self.server]
        end = last + TAIL
        server = self._total(self.server, backends, end) - self._total(self.server, backends, first)
        clients = list(self.client)
        client = self._total(self.client, clients, end) - self._total(self.client, clients, first)
        return DrainCpu(server / 1e9, client / 1e9, len(backends))

    def backends_between(self, first: float, last: float) -> dict[int, float]:
        """CPU seconds of every postmaster child over the same interval as `between`, the
        drain's backends and the server's background processes alike (by pid)."""
        end = last + TAIL
        return {
            pid: (self._total(self.server, [pid], end) - self._total(self.server, [pid], first))
            / 1e9
            for pid in self.server
        }


@contextlib.contextmanager
def sampling_cpu(url: str, excluded: set[int]) -> Iterator[CpuSampler]:
    """A CpuSampler of `url`'s database running for the block (`excluded`: compare.py's
    own backends)."""
    sampler = CpuSampler(url, excluded)
    sampler.start()
    try:
        yield sampler
    finally:
        sampler.stop()
