"""Running the per-system scripts of `bench/peers/`, and asking a worker what it offers.

Every subprocess gets the system's database in its environment and the peers folder on its
path, since workers import their app from there.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

from ..drivers.base import System
from .config import DRIVER_TIMEOUT, PEERS
from .messages import last_line, say
from .tables import Target


def child_env(url: str, starts: Path | None = None) -> dict[str, str]:
    """The environment of every subprocess: the system's database, the peers folder on the
    path (workers import their app from it) before whatever PYTHONPATH already holds (a
    pgjobs exported at another revision, `harness.export_before`), and where task starts
    go, if anywhere."""
    path = os.pathsep.join(filter(None, [str(PEERS), os.environ.get("PYTHONPATH")]))
    env = {
        **os.environ,
        "BENCH_DATABASE_URL": url,
        "PGJOBS_DATABASE_URL": url,
        "PYTHONPATH": path,
    }
    env.pop("BENCH_STARTS_FILE", None)
    if starts is not None:
        env["BENCH_STARTS_FILE"] = str(starts)
    return env


def drive(target: Target, command: str, *args: str) -> dict[str, Any]:
    """Run one command of the system's script and return the JSON it printed."""
    system = target.system
    finished = subprocess.run(
        [str(system.python), str(PEERS / system.script), command, "--url", target.url, *args],
        cwd=PEERS,
        env=child_env(target.url),
        capture_output=True,
        text=True,
        timeout=DRIVER_TIMEOUT,
        start_new_session=True,
    )
    if finished.returncode != 0:
        raise RuntimeError(
            f"{system.script} {command} failed: {last_line(finished.stderr)}\n"
            f"{finished.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(finished.stdout.strip().splitlines()[-1])
    return result


def describe(system: System) -> dict[str, Any]:
    finished = subprocess.run(
        [str(system.python), str(PEERS / system.script), "describe"],
        cwd=PEERS,
        env=child_env(""),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(finished.stdout)
    return result


def worker_options(system: System) -> frozenset[str] | None:
    """The options the system's worker lists in its `--help` (pgjobs' come and go as it is
    developed), or None, and no setting is skipped, if it would not say."""
    finished = subprocess.run(
        [*system.worker, "--help"],
        cwd=PEERS,
        env=child_env(""),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if finished.returncode != 0:
        say(f"  {system.name}: its worker's --help failed; every setting is tried")
        return None
    return frozenset(re.findall(r"--[a-z][a-z0-9-]*", finished.stdout))
