"""`pgjobs work`, run in this process with what `drain.py` needs to see of it.

    PROFILE_STATE=FILE [PROFILE_COUNT=1] [PROFILE_CLAIMS=LOG] python bench/profile/worker.py ARGS

Every 0.1 s a daemon thread writes to FILE (JSON, replaced atomically) the native id and
name of every thread, so that the drain's per-thread CPU clocks can be named. With
`PROFILE_COUNT=1` it also wraps `psycopg.Cursor.execute`, the call every statement of the
worker goes through (data/connector.py), and counts per thread and statement: calls, rows
returned or changed, and seconds in the call (the round trip, the server's work included).
The counts are cumulative; `drain.py` takes the difference of two readings. The wrapper
costs a few microseconds a statement, so the CPU figures come from runs without it. The
garbage collector's collections and their time, per generation, are always written.
`PROFILE_CLAIMS=LOG` wraps it too, and appends to LOG (each time FILE is written) a line
`began rows seconds` per CLAIM call: its wall-clock start, the jobs it claimed, and its
time (`bench/sustained.py` follows the claims' cost over a long run).
"""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import psycopg.sql

STATE = Path(os.environ["PROFILE_STATE"])
COUNT = os.environ.get("PROFILE_COUNT") == "1"
CLAIMS = os.environ.get("PROFILE_CLAIMS")
PERIOD = 0.1

# Statement names by a fragment only that statement's text holds (pgjobs/data/*.py).
MARKERS = (
    ("CLAIM", 'claim_jobs"('),
    ("COMPLETE_WATCHED", "results AS MATERIALIZED"),
    ("RECORD_OUTCOMES", "o(id, attempt, state, delay"),
    ("COMPLETE_JOBS", "'completed', done.priority"),  # the row it moves to the history
    ("READY_JOBS", "SET ready_jobs ="),
    ("HEARTBEAT", "SET heartbeat_at = now()"),
)

lock = threading.Lock()
# (thread name, statement) -> [calls, rows, seconds]
counts: dict[tuple[str, str], list[float]] = {}
names: dict[int, str] = {}
# Per generation: [collections, seconds], from gc.callbacks (a collection runs in
# whichever thread allocated past the threshold, so no frame of py-spy's names it).
collections: dict[int, list[float]] = {0: [0, 0.0], 1: [0, 0.0], 2: [0, 0.0]}
collecting: list[float] = [0.0]
claim_calls: list[str] = []  # lines for CLAIMS, not written yet


def on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        collecting[0] = time.perf_counter()
    else:
        entry = collections[info["generation"]]
        entry[0] += 1
        entry[1] += time.perf_counter() - collecting[0]


def statement_name(query: Any) -> str:
    if isinstance(query, bytes | bytearray):
        text = bytes(query).decode(errors="replace")
    elif isinstance(query, str):
        text = query
    elif isinstance(query, psycopg.sql.SQL):
        text = query.as_string()
    else:
        text = repr(query)
    for name, marker in MARKERS:
        if marker in text:
            return name
    return " ".join(text.split())[:80]


def counting(execute: Any) -> Any:
    def execute_counted(self: Any, query: Any, *args: Any, **kwargs: Any) -> Any:
        began = time.time()
        started = time.perf_counter()
        try:
            return execute(self, query, *args, **kwargs)
        finally:
            seconds = time.perf_counter() - started
            key = (threading.current_thread().name, statement_name(query))
            with lock:
                entry = counts.setdefault(key, [0, 0, 0.0])
                entry[0] += 1
                entry[1] += max(self.rowcount, 0)
                entry[2] += seconds
                if CLAIMS and key[1] == "CLAIM":
                    claim_calls.append(f"{began:.6f} {max(self.rowcount, 0)} {seconds:.6f}\n")

    return execute_counted


def write_state() -> None:
    for thread in threading.enumerate():
        if thread.native_id is not None:
            names[thread.native_id] = thread.name
    with lock:
        statements = [[*key, *value] for key, value in counts.items()]
        claimed = claim_calls.copy()
        claim_calls.clear()
    if CLAIMS and claimed:
        with open(CLAIMS, "a") as log:
            log.writelines(claimed)
    state = {
        "threads": {str(k): v for k, v in names.items()},
        "statements": statements,
        "gc": {str(generation): list(entry) for generation, entry in collections.items()},
    }
    temporary = STATE.with_suffix(".tmp")
    temporary.write_text(json.dumps(state))
    temporary.replace(STATE)


def keep_writing() -> None:
    while True:
        write_state()
        time.sleep(PERIOD)


def main() -> None:
    if COUNT or CLAIMS:
        psycopg.Cursor.execute = counting(psycopg.Cursor.execute)  # type: ignore[method-assign]
    gc.callbacks.append(on_gc)
    threading.Thread(target=keep_writing, name="profile-state", daemon=True).start()
    from pgjobs.cli import main as pgjobs_main

    pgjobs_main(["work", *sys.argv[1:]])


if __name__ == "__main__":
    main()
