"""Worker processes under test: started per setting, watched through the tables and /proc,
stopped together."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..drivers.base import processes_of
from .config import PEERS, POLL, STALL_TIMEOUT, STOP_TIMEOUT
from .messages import last_line
from .scripts import child_env
from .tables import Target, scalar


@dataclass
class WorkerProcess:
    """A worker under test, its log, and its memory as /proc tells it."""

    process: subprocess.Popen[bytes]
    log: Path
    label: str

    def check_alive(self) -> None:
        """Fail with the worker's output if it exited early."""
        if self.process.poll() is None:
            return
        output = self.log.read_text(errors="replace")[-3000:]
        raise RuntimeError(
            f"{self.label} exited with {self.process.returncode}: {last_line(output)}\n{output}"
        )

    def rss_bytes(self) -> int:
        """Resident memory of the worker and every process it started."""
        return sum(status_kb(pid, "VmRSS") for pid in process_tree(self.process.pid)) * 1024

    def peak_bytes(self) -> int:
        return status_kb(self.process.pid, "VmHWM") * 1024


def process_tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for child in (task / "children").read_text().split():
                pids += process_tree(int(child))
    return pids


def status_kb(pid: int, key: str) -> int:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return int(line.split()[1])
    return 0


@dataclass
class Workers:
    """The processes of one worker setting, started and stopped together."""

    processes: list[WorkerProcess]
    label: str

    def check_alive(self) -> None:
        for worker in self.processes:
            worker.check_alive()


@contextlib.contextmanager
def running_workers(
    target: Target, setting: Sequence[str], logs: Path, starts: Path | None = None
) -> Iterator[Workers]:
    """The setting's worker processes (PROCESSES of them, else one), all started at once
    with the rest of the setting; SIGTERM (a graceful stop) to all when done. Nothing
    coordinates them but the database, as when a user starts several."""
    count, args = processes_of(setting)
    label = f"{target.system.name} worker {' '.join(setting)}"
    workers: list[WorkerProcess] = []
    try:
        for number in range(1, count + 1):
            suffix = f" (process {number} of {count})" if count > 1 else ""
            workers.append(start_worker(target, args, logs, starts, label + suffix))
        yield Workers(workers, label)
    finally:
        stop([worker.process for worker in workers])


@contextlib.contextmanager
def running_worker(
    target: Target, args: Sequence[str], logs: Path, starts: Path | None = None
) -> Iterator[WorkerProcess]:
    """The system's worker as one subprocess, for the scenarios that measure one."""
    with running_workers(target, args, logs, starts) as workers:
        (worker,) = workers.processes
        yield worker


def start_worker(
    target: Target, args: Sequence[str], logs: Path, starts: Path | None, label: str
) -> WorkerProcess:
    log = logs / f"{target.system.name}-{time.monotonic_ns()}.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [*target.system.worker, *args],
            cwd=PEERS,
            env=child_env(target.url, starts),
            stdout=output,
            stderr=subprocess.STDOUT,
            # Its own session: a Ctrl-C reaches only compare.py, which stops workers in turn.
            start_new_session=True,
        )
    return WorkerProcess(process, log, label)


def stop(processes: Sequence[subprocess.Popen[bytes]]) -> None:
    """SIGTERM to every process first, so that several stop in the time of one."""
    running = [process for process in processes if process.poll() is None]
    for process in running:
        process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    for process in running:
        try:
            process.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def wait_drained(
    target: Target,
    worker: WorkerProcess | Workers,
    timeout: float,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Until no job is waiting or running, or for `timeout` seconds; returns how many are
    left. Fails if the worker dies or finishes nothing for STALL_TIMEOUT seconds."""
    deadline = time.monotonic() + timeout
    last_unfinished, last_change = -1, time.monotonic()
    while True:
        unfinished = int(scalar(target, target.sql["unfinished"]))
        if on_progress is not None:
            on_progress(unfinished)
        if unfinished == 0 or time.monotonic() > deadline:
            return unfinished
        worker.check_alive()
        if unfinished != last_unfinished:
            last_unfinished, last_change = unfinished, time.monotonic()
        elif time.monotonic() - last_change > STALL_TIMEOUT:
            raise RuntimeError(f"{worker.label}: no job finished in {STALL_TIMEOUT:g}s")
        time.sleep(POLL)
