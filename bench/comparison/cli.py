"""compare.py's command line: options, the checks of the worker settings, and the run from
cluster start to report, with SIGTERM and Ctrl-C removing the cluster and the workers."""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import FrameType

import psycopg
from rich.console import Console

from pgjobs.embedded import temporary_cluster

from .common.cluster import apply_server_settings, peers_python, prepare, versions
from .common.counts import FULL, QUICK
from .common.messages import first_line, say
from .common.report import report, write_json
from .common.run import Run, Settings
from .common.scripts import worker_options
from .common.tables import Target
from .drivers import DRIVERS, WORKER_ARGS, systems
from .drivers.base import PROCESSES, System, processes_of
from .runner import run_all
from .scenarios import SCENARIO_NAMES


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smaller counts (see QUICK in bench/comparison/common/counts.py), 1-2 minutes",
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument(
        "--pg-setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a reloadable server setting for the cluster, e.g. synchronous_commit=off",
    )
    parser.add_argument(
        "--scenarios",
        default=",".join(SCENARIO_NAMES),
        help=f"comma-separated subset of: {','.join(SCENARIO_NAMES)}",
    )
    parser.add_argument(
        "--systems",
        default=",".join(WORKER_ARGS),
        help=f"comma-separated subset of: {','.join(WORKER_ARGS)}",
    )
    args = parser.parse_args()
    for option, known in (("scenarios", SCENARIO_NAMES), ("systems", WORKER_ARGS)):
        unknown = set(getattr(args, option).split(",")) - set(known)
        if unknown:
            parser.error(f"unknown {option}: {', '.join(sorted(unknown))}")
    check_worker_args()
    return args


def check_worker_args() -> None:
    """An edit of WORKER_ARGS that cannot run fails now, not a quarter of an hour in: only
    drains start several processes (the other scenarios measure one worker's latency or
    memory)."""
    for system, scenarios in WORKER_ARGS.items():
        for scenario, settings in scenarios.items():
            for args in settings:
                where = f"WORKER_ARGS[{system!r}][{scenario!r}] {' '.join(args)!r}"
                try:
                    count, _ = processes_of(args)
                except (IndexError, ValueError):
                    raise SystemExit(f"{where}: {PROCESSES} takes a number") from None
                if count < 1 or (count > 1 and not scenario.startswith("drain")):
                    raise SystemExit(f"{where}: several processes only in drains")


def main(description: str) -> None:
    args = parse_args(description)
    counts = QUICK if args.quick else FULL
    # A pipe or a file gets the full width; a terminal keeps its own.
    console = Console(width=None if sys.stdout.isatty() else 170)
    started = time.monotonic()
    wanted = args.systems.split(",")
    # The peers' virtualenv is made (pip) only when a peer is among the systems run.
    peers = peers_python() if any(d.peer and d.name in wanted for d in DRIVERS) else None
    chosen = [s for s in systems(peers or Path(sys.executable)) if s.name in wanted]
    settings = Settings()
    with (
        tempfile.TemporaryDirectory(prefix="pgjobs-compare-") as files,
        contextlib.ExitStack() as stack,
    ):
        say("starting a throwaway PostgreSQL cluster...")
        cluster_url = stack.enter_context(temporary_cluster())
        apply_server_settings(cluster_url, args.pg_setting)
        targets: list[Target] = []
        broken: dict[System, str] = {}
        for system in chosen:
            try:
                targets.append(prepare(cluster_url, system))
                stack.callback(targets[-1].admin.close)
            except (RuntimeError, OSError, psycopg.Error, subprocess.SubprocessError) as error:
                say(f"setting up {system.name} FAILED: {error}")
                broken[system] = first_line(error)
        offered = {target.system.name: worker_options(target.system) for target in targets}
        run = Run(counts, Path(files), settings, offered)
        results = run_all(run, targets, broken, args.scenarios.split(","))
        header = versions(cluster_url, targets, args.pg_setting)
    report(console, results, targets, header, settings, counts, args.quick)
    if args.json:
        write_json(args.json, results, header, settings, counts)
    say(f"done in {time.monotonic() - started:.0f}s")


def stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """SIGTERM unwinds like Ctrl-C, so workers are stopped and the cluster is removed."""
    raise KeyboardInterrupt


def run(description: str) -> None:
    """The whole of `python bench/compare.py`; `description` heads its `--help`."""
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    try:
        main(description)
    except KeyboardInterrupt:
        say("interrupted: workers stopped, cluster removed")
        sys.exit(130)
