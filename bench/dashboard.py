"""The web dashboard's pages on a million jobs: how long each takes to answer.

    python bench/dashboard.py [--database-url URL] [--jobs 1000000] [--loads 7]
                              [--workflows 200] [--keep]

It loads `--jobs` jobs into a schema of its own, in a few `INSERT ... SELECT
generate_series` statements, shaped like a week of a busy application's history
(`setseed` makes the load the same at every run):

- a week of history, ids in the order the jobs finished (`finished_at` spread evenly
  over the last 7 days): completed, about 94% of the table (5% after a failed first
  attempt: an `errors` entry, so they are in the errors index too); failed, 4%, after
  three attempts, every attempt in `errors` with its traceback, five error classes
  spread over the tasks; cancelled, 1%;
- waiting (`available`), 4.5%, enqueued over the last 20 minutes: most due, a quarter
  delayed by up to a day; running, 200 jobs, held by the registered workers;
- `--workflows` workflows of 10 steps (a fetch, eight parse steps after it, a report
  after those) enqueued with `pgjobs.Workflow`: half finished, half with their first
  step waiting and the rest `blocked`;
- twelve tasks in five queues (a skewed mix: a few tasks make most jobs), one queue
  paused, one with limits; six rows in `workers` (four beating, two lost an hour ago);
  three schedules.

Finished jobs go straight into `jobs_history` (the partitions of their states and days
made first), the others into `jobs_live`. Then VACUUM ANALYZE, and `pgjobs web` starts
on the schema as a user starts it (a uvicorn process on loopback; its pool and statement
timeout are the dashboard's own). Each page is fetched over real HTTP by one client
(keep-alive, one request at a time): once first (plans and caches cold: shown apart),
then `--loads` times; the table gives each page's median and slowest of those loads,
wall clock at the client (the request, the queries, the rendering, the response read to
its end), and whether the median is under the 300 ms every page must meet. The pages:
the overview; queues; the jobs list unfiltered, filtered by state (failed, completed),
queue, task, text in arguments or error, and time range (finished between 2 and 1 days
ago), and its second page (the list's own "next" link: a key, not an OFFSET); one failed
job; workflows and one workflow; failing tasks; workers; schedules; health.

A page that answers anything but 200 is reported as such. To see why a page is slow,
EXPLAIN (ANALYZE, BUFFERS) its statements (pgjobs/data/dashboard.py and its neighbours)
on the schema `--keep` leaves behind.

With no `--database-url` (nor `PGJOBS_DATABASE_URL`) a throwaway cluster is started and
removed at the end; the schema is dropped either way, unless `--keep` (then `--schema
NAME` times the pages of that schema again, without loading).
"""

from __future__ import annotations

import argparse
import os
import re
import socket
import subprocess
import sys
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from html import unescape
from typing import Any

import httpx
import psycopg
from harness import drop, make_partitions, median, next_id, say, scalar, stop, vacuum
from psycopg import sql

import pgjobs

BUDGET_MS = 300.0
STARTUP_TIMEOUT = 60.0
TASKS = (
    "email.send", "webhook.deliver", "image.resize", "report.build", "billing.charge",
    "email.digest", "image.thumbnail", "search.reindex", "sync.crm", "report.export",
    "billing.invoice", "cleanup.sessions",
)  # fmt: skip
ERRORS = (
    "ValueError: month must be in 1..12",
    "TimeoutError: the endpoint did not answer within 10 s",
    "ConnectionRefusedError: [Errno 111] Connection refused",
    "KeyError: 'customer'",
    "RuntimeError: rate limited by the provider (HTTP 429)",
)
WORKERS = 6  # registered; the last two stopped beating an hour ago
RUNNING = 200

# The values every generated row draws from: a skewed task (the first ones are the
# busiest), its queue (the part before the dot), an error class, and a moment that
# follows the id, as in a real table: row g of `count` finished (or was enqueued)
# `span` * (1 - g / count) ago, give or take a minute.
SOURCE = """
SELECT g, t.task,
       CASE split_part(t.task, '.', 1) WHEN 'email' THEN 'mail' WHEN 'image' THEN 'images'
            WHEN 'report' THEN 'reports' WHEN 'webhook' THEN 'webhooks' ELSE 'default' END
           AS queue,
       jsonb_build_object('user_id', g %% 50000, 'order', 'ord-' || g,
                          'email', 'user' || (g %% 50000) || '@example.com') AS payload,
       (%(errors)s::text[])[1 + (g + length(t.task)) %% 5] AS error,
       'web-' || (1 + g %% 4) || ':' || (4100 + g %% 4) AS worker,
       now() - %(span)s::interval * (1 - g::float8 / %(count)s)
           - random() * interval '1 minute' AS finished,
       make_interval(secs => 0.005 + random() * random() * 2) AS run,
       make_interval(secs => random() * 3) AS wait,
       CASE WHEN t.r < %(failed)s THEN 'failed'
            WHEN t.r < %(failed)s + %(cancelled)s THEN 'cancelled' ELSE 'completed' END
           AS state
FROM generate_series(1, %(count)s) AS g,
     LATERAL (SELECT (%(tasks)s::text[])[1 + floor(12 * power(random(), 1.8))::int] AS task,
                     random() AS r
              WHERE g IS NOT NULL) AS t
"""
ATTEMPT = """jsonb_build_object('attempt', {n}, 'at', finished - interval '{back} seconds',
    'worker', worker, 'error', error, 'traceback',
    'Traceback (most recent call last):' || chr(10) || '  File "app/tasks.py", line 42, in '
    || task || chr(10) || '    return client.send(order)' || chr(10) || error)"""
INSERTS = {
    # A week of history: completed (5% after a failed first attempt), failed after three
    # attempts, cancelled while waiting, interleaved as they happened.
    "finished": f"""
INSERT INTO {{history}} (id, queue, task, payload, state, attempts, max_attempts, run_at,
                         created_at, started_at, finished_at, errors, worker_id)
SELECT {{next_id}}, queue, task, payload, state,
       CASE state WHEN 'failed' THEN 3 WHEN 'cancelled' THEN 0
                  ELSE CASE WHEN g %% 20 = 0 THEN 2 ELSE 1 END END,
       3, finished - run - wait, finished - run - wait,
       CASE WHEN state <> 'cancelled' THEN finished - run END, finished,
       CASE WHEN state = 'failed'
            THEN jsonb_build_array({ATTEMPT.format(n=1, back=90)},
                                   {ATTEMPT.format(n=2, back=40)},
                                   {ATTEMPT.format(n=3, back=0)})
            WHEN state = 'completed' AND g %% 20 = 0
            THEN jsonb_build_array({ATTEMPT.format(n=1, back=30)})
            ELSE '[]'::jsonb END,
       CASE WHEN state <> 'cancelled' THEN worker END
FROM ({SOURCE}) AS s
""",
    # Enqueued over the last 20 minutes: most due, a quarter delayed by up to a day.
    "available": f"""
INSERT INTO {{live}} (queue, task, payload, state, priority, run_at, created_at)
SELECT queue, task, payload, 'available', CASE WHEN g %% 10 = 0 THEN 5 ELSE 0 END,
       CASE WHEN g %% 4 = 0 THEN now() + random() * interval '1 day' ELSE finished END,
       finished
FROM ({SOURCE}) AS s
""",
    "running": f"""
INSERT INTO {{live}} (queue, task, payload, state, attempts, run_at, created_at, started_at,
                      began_at, heartbeat_at, worker_id)
SELECT queue, task, payload, 'running', 1, finished - wait, finished - wait, finished,
       finished, now(), worker
FROM ({SOURCE}) AS s
""",
}
SPANS = {"finished": "7 days", "available": "20 minutes", "running": "1 minute"}
SETTINGS = (
    """
INSERT INTO {workers} (id, host, pid, queues, concurrency, version, rescue_after, started_at,
                       last_heartbeat_at)
SELECT 'web-' || n || ':' || (4099 + n), 'web-' || n, 4099 + n, NULL, 16, %(version)s, 30,
       now() - interval '3 hours', CASE WHEN n <= 4 THEN now() ELSE now() - interval '1 hour' END
FROM generate_series(1, %(workers)s) AS n
""",
    """
INSERT INTO {queues} (name, paused, max_waiting, max_running)
VALUES ('reports', true, NULL, NULL), ('webhooks', false, 100000, 20)
""",
    """
INSERT INTO {schedules} (name, expression, timezone, done_until, last_tick)
VALUES ('cleanup.sessions', '*/15 * * * *', 'UTC', now(), date_trunc('hour', now())),
       ('report.build', '0 3 * * *', 'Europe/Paris', now(), date_trunc('day', now())),
       ('sync.crm', '0 * * * *', 'UTC', now(), date_trunc('hour', now()))
""",
)
# Half the workflows ran to the end; the others wait for their first step. Their steps
# are live: the UPDATE moves each finished one into the history (its row trigger).
FINISH_WORKFLOWS = """
UPDATE {live} SET state = 'completed', attempts = 1, waiting_for = 0,
       started_at = now() - interval '2 hours', finished_at = now() - interval '1 hour'
WHERE workflow_id % 2 = 0
"""


@dataclass(frozen=True)
class Page:
    """A page to time: its name in the table and its path."""

    name: str
    path: str


def load(url: str, schema: str, jobs: int, workflows: int) -> dict[str, int]:
    """Fill `schema` as the docstring says; the number of jobs of each state. Finished
    jobs go into `jobs_history` (the partitions of their days made first), the others
    into `jobs_live`: both straight into the tables, as the view's triggers would write
    them one row at a time."""
    waiting = int(jobs * 0.045)
    finished = jobs - waiting - RUNNING - workflows * 10
    counts = {"finished": finished, "available": waiting, "running": RUNNING}
    names = {
        "live": sql.Identifier(schema, "jobs_live"),
        "history": sql.Identifier(schema, "jobs_history"),
        "next_id": next_id(schema),
        "workers": sql.Identifier(schema, "workers"),
        "queues": sql.Identifier(schema, "queues"),
        "schedules": sql.Identifier(schema, "schedules"),
    }
    with psycopg.connect(url, autocommit=True) as conn:
        # Every day the history spans, and a minute more (the moments' jitter); an hour
        # ahead, should a UTC day begin before the insert does.
        make_partitions(conn, schema, back=f"{SPANS['finished']} 1 minute", ahead="1 hour")
        conn.execute("SELECT setseed(0.27)")
        for part, count in counts.items():
            started = time.monotonic()
            conn.execute(
                sql.SQL(INSERTS[part]).format(**names),
                {
                    "count": count, "span": SPANS[part], "failed": 0.04, "cancelled": 0.01,
                    "tasks": list(TASKS), "errors": list(ERRORS),
                },
            )  # fmt: skip
            say(f"  {count:>9,} {part} in {time.monotonic() - started:.1f} s")
        for statement in SETTINGS:
            conn.execute(
                sql.SQL(statement).format(**names),
                {"version": pgjobs.__version__, "workers": WORKERS},
            )
    app = pgjobs.App(url, schema=schema)
    try:
        for n in range(workflows):
            flow = pgjobs.Workflow(f"import batch {n}", app=app)
            fetch = flow.add("import.fetch", batch=n)
            parts = [flow.add("import.parse", after=[fetch], part=p) for p in range(8)]
            flow.add("import.report", after=parts, run_if="finished")
            flow.enqueue(None)
    finally:
        app.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(sql.SQL(FINISH_WORKFLOWS).format(**names))
        started = time.monotonic()
        vacuum(conn, schema)
        say(f"  VACUUM ANALYZE in {time.monotonic() - started:.1f} s")
    return state_counts(url, schema)


def state_counts(url: str, schema: str) -> dict[str, int]:
    query = sql.SQL("SELECT state, count(*) FROM {} GROUP BY 1")
    with psycopg.connect(url) as conn:
        rows = conn.execute(query.format(sql.Identifier(schema, "jobs"))).fetchall()
    return dict(rows)


# The jobs tables and their indexes, every partition of the history included.
SIZE = """
SELECT pg_size_pretty(sum(pg_total_relation_size(t.relid)))
FROM (SELECT %(live)s::regclass AS relid
      UNION ALL SELECT relid FROM pg_partition_tree(%(history)s::regclass)) AS t
"""


def start_dashboard(url: str, schema: str, stack: ExitStack) -> str:
    """`pgjobs web` on a free port of loopback, stopped with `stack`; its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable, "-m", "pgjobs", "web", "--port", str(port), "--database-url", url,
        "--schema", schema,
    ]  # fmt: skip
    env = {key: value for key, value in os.environ.items() if not key.startswith("PGJOBS_")}
    process = subprocess.Popen(command, env=env)
    stack.callback(stop, process)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{command} did not start")
        try:
            if httpx.get(base + "/static/pgjobs.css", timeout=5).status_code == 200:
                return base
        except httpx.TransportError:
            time.sleep(0.2)


def pages(client: httpx.Client, url: str, schema: str) -> list[Page]:
    """Every page to time; the ids, the next link and the text filter read from the data
    and from the pages themselves."""

    def one(query: str) -> Any:
        return scalar(url, sql.SQL(query).format(jobs=sql.Identifier(schema, "jobs")))

    failed_job = one("SELECT id FROM {jobs} WHERE state = 'failed' ORDER BY id DESC LIMIT 1")
    workflow = one("SELECT max(workflow_id) FROM {jobs}")
    try:
        listing = client.get("/jobs").text
    except httpx.HTTPError:
        listing = ""
    following = re.search(r'<a[^>]*rel="next"[^>]*href="([^"]+)"', listing) or re.search(
        r'<a[^>]*href="([^"]+)"[^>]*rel="next"', listing
    )
    text_field = re.search(r'<input[^>]*name="(q|text|search)"', listing)
    text = text_field.group(1) if text_field else "q"
    found = [
        Page("overview", "/"),
        Page("queues", "/queues"),
        Page("jobs", "/jobs"),
        Page("jobs, state=failed", "/jobs?state=failed"),
        Page("jobs, state=completed", "/jobs?state=completed"),
        Page("jobs, queue=mail", "/jobs?queue=mail"),
        Page("jobs, task=billing.charge", "/jobs?task=billing.charge"),
        Page(f"jobs, {text}=ord-4242 (arguments)", f"/jobs?{text}=ord-4242"),
        Page(f"jobs, {text}=month (error)", f"/jobs?{text}=month+must"),
        Page(
            "jobs, finished 2 to 1 days ago",
            f"/jobs?time=finished&since={moment(days=2)}&until={moment(days=1)}",
        ),
    ]
    if following:
        next_url = httpx.URL(unescape(following.group(1)))
        found.append(Page("jobs, page 2 (next link)", f"{next_url.path}?{next_url.query.decode()}"))
    found += [
        Page("one job (failed, 3 attempts)", f"/jobs/{failed_job}"),
        Page("workflows", "/workflows"),
        Page("one workflow", f"/workflows/{workflow}"),
        Page("failing", "/failing"),
        Page("workers", "/workers"),
        Page("schedules", "/schedules"),
        Page("health", "/health"),
    ]
    return found


def moment(days: int) -> str:
    """`days` ago, as the jobs list's time fields take it (UTC)."""
    at = datetime.now(timezone.utc) - timedelta(days=days)
    return at.strftime("%Y-%m-%dT%H:%M:%S")


def time_pages(base: str, url: str, schema: str, loads: int) -> list[tuple[Page, str, list[float]]]:
    """(page, status, milliseconds of each load, the first one first) of every page; the
    status is the first that was not 200, or the error that cut a load short."""
    timed = []
    with httpx.Client(base_url=base, timeout=60) as client:
        for page in pages(client, url, schema):
            statuses = set()
            samples = []
            for _ in range(loads + 1):
                started = time.perf_counter()
                try:
                    statuses.add(str(client.get(page.path).status_code))
                except httpx.HTTPError as error:
                    statuses.add(type(error).__name__)
                samples.append((time.perf_counter() - started) * 1000)
            status = ",".join(sorted(statuses - {"200"})) or "200"
            say(f"  {page.name}: {status}, median {median(samples[1:]):.0f} ms")
            timed.append((page, status, samples))
    return timed


def report(timed: list[tuple[Page, str, list[float]]]) -> str:
    lines = [
        "| page | path | status | median ms | max ms | first load ms | median < 300 ms |",
        "| --- | --- | --- | ---: | ---: | ---: | --- |",
    ]
    for page, status, (first, *samples) in timed:
        ok = "yes" if status == "200" and median(samples) < BUDGET_MS else "**no**"
        lines.append(
            f"| {page.name} | `{page.path}` | {status} | {median(samples):,.0f} "
            f"| {max(samples):,.0f} | {first:,.0f} | {ok} |"
        )
    return "\n".join(lines)


def main() -> None:
    from pgjobs.embedded import temporary_cluster
    from pgjobs.migrate import upgrade

    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--database-url", default=os.environ.get("PGJOBS_DATABASE_URL"))
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--loads", type=int, default=7, help="timed loads of each page")
    parser.add_argument("--workflows", type=int, default=200, help="of 10 steps each")
    parser.add_argument("--keep", action="store_true", help="leave the schema (and say so)")
    parser.add_argument("--schema", help="time the pages of this schema, left by --keep")
    args = parser.parse_args()
    schema = args.schema or f"bench_web_{uuid.uuid4().hex[:8]}"
    began = time.monotonic()
    with ExitStack() as stack:
        url = args.database_url or stack.enter_context(temporary_cluster())
        started = time.monotonic()
        if args.schema:
            counts = state_counts(url, schema)
        else:
            upgrade(url, schema)
            if args.keep:
                say(f"the schema {schema} stays (--keep)")
            else:
                stack.callback(drop, url, schema)
            say(f"loading {args.jobs:,} jobs into {schema}")
            counts = load(url, schema, args.jobs, args.workflows)
        loaded = "loaded before" if args.schema else f"loaded in {time.monotonic() - started:.0f} s"
        with psycopg.connect(url, autocommit=True) as conn:
            tables = {
                name: sql.Identifier(schema, f"jobs_{name}").as_string(conn)
                for name in ("live", "history")
            }
            size = (conn.execute(SIZE, tables).fetchone() or ("?",))[0]
        base = start_dashboard(url, schema, stack)
        timed = time_pages(base, url, schema, args.loads)
        version = scalar(url, "SHOW server_version")
        states = ", ".join(f"{state} {count:,}" for state, count in sorted(counts.items()))
        print(
            f"pgjobs dashboard, {sum(counts.values()):,} jobs ({states}; jobs_live and "
            f"jobs_history with their indexes {size}, {loaded}), PostgreSQL {version}, "
            f"{os.cpu_count()} cores, {time.monotonic() - began:.0f} s in all; each page "
            f"over HTTP from `pgjobs web`: median and slowest of {args.loads} loads after "
            "the first one (shown apart: plans and caches are cold)\n"
        )
        print(report(timed))


if __name__ == "__main__":
    main()
