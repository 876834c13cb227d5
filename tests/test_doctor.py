"""`pgjobs doctor`: each finding provoked for real on a real server, the report and its
exit status, `--fix` on what it fixes, and what a least-privilege role is told.

The session's server cannot hold a logical slot or a prepared transaction, so those
findings are provoked on a throwaway cluster of their own (`tests/doctor_servers.py`),
as is the hot standby whose feedback sets a physical slot's xmin.
"""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest
from psycopg import sql

from pgjobs import App
from pgjobs.doctor import CHECKS, Finding, Thresholds, diagnose, run_checks
from pgjobs.doctor.server import version_verdict
from pgjobs.embedded import LocalCluster
from pgjobs.migrate import upgrade
from pgjobs.schema_revision import package_revisions
from tests.doctor_servers import contrib_bindir, hot_standby, replication_cluster
from tests.helpers import (
    UNREACHABLE_URL,
    StartWorker,
    WorkerProcess,
    make_job,
    pgjobs,
    run_cli,
    the_error_line,
    wait_for_job,
    wait_until,
)
from tests.test_least_privilege import Roles
from tests.test_least_privilege import migrated_by_owner as owner_migrated
from tests.test_least_privilege import roles as least_privilege_roles

# The least-privilege tests' roles: an owner who migrated, a worker with the documented
# grants (fixtures are found by their name in this module).
roles = least_privilege_roles
migrated_by_owner = owner_migrated
NAMES = [name for name, _ in CHECKS]
Findings = dict[str, dict[str, str]]


def doctor_json(
    capsys: pytest.CaptureFixture[str], url: str, schema: str, *args: str
) -> tuple[int, Findings, str]:
    """Run `pgjobs doctor --json ARGS`: (exit status, findings by name, stderr)."""
    result = run_cli(capsys, url, schema, "doctor", "--json", *args)
    assert "Traceback" not in result.err
    found = json.loads(result.out)
    assert [finding["name"] for finding in found] == NAMES
    return result.code, {finding["name"]: finding for finding in found}, result.err


def finding(app: App, name: str, thresholds: Thresholds | None = None) -> Finding:
    """One check's finding, the checks run as the CLI runs them."""
    return next(found for found in diagnose(app, thresholds) if found.name == name)


def execute(url: str, statement: str | sql.Composed, params: Any = None) -> list[tuple[Any, ...]]:
    """Run one statement on a connection of its own (autocommit); its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def table(schema: str, name: str = "jobs_live") -> sql.Identifier:
    return sql.Identifier(schema, name)


# --- the report -------------------------------------------------------------------------


@pytest.mark.slow
def test_a_healthy_queue_with_a_live_worker_is_ok_everywhere(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str, start_worker: StartWorker
) -> None:
    # given: a worker that serves the schema
    start_worker("--concurrency", "2").wait_listening()

    # when
    code, found, _ = doctor_json(capsys, database_url, schema)

    # then: every check is ok; the worker is counted, with its budget and its listener
    assert {name: f["status"] for name, f in found.items()} == dict.fromkeys(NAMES, "ok")
    assert code == 0
    assert "1 live worker (2 threads)" in found["connections"]["message"]
    assert "may open up to 8 in a drain" in found["connections"]["message"]
    assert "1 live worker, 1 session LISTENing" in found["notifications"]["message"]


def test_the_table_names_each_check_with_its_status_and_a_summary(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    result = run_cli(capsys, database_url, schema, "doctor")

    lines = result.out.splitlines()
    assert lines[0].split()[:4] == ["check", "status", "message", "fix"]
    assert any(line.startswith("migrations") and " ok " in line for line in lines)
    # no worker runs: notifications warn, nothing fails
    assert any(line.startswith("notifications") and " warn " in line for line in lines)
    assert lines[-1] == "12 checks: 11 ok, 1 warn, 0 fail"
    assert result.code == 0


def test_json_is_an_array_of_name_status_message_fix(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    result = run_cli(capsys, database_url, schema, "doctor", "--json")

    document = json.loads(result.out)
    assert isinstance(document, list)
    assert [sorted(item) for item in document] == [["fix", "message", "name", "status"]] * 12
    assert [item["name"] for item in document] == NAMES
    assert {item["status"] for item in document} <= {"ok", "warn", "fail"}
    assert all(isinstance(item["message"], str) and item["message"] for item in document)


def test_run_checks_serves_a_callers_transaction_and_survives_a_check_that_times_out(
    app: App, database_url: str, schema: str
) -> None:
    # given: the jobs table locked by another session, and the caller's transaction
    # whose statements give up after 200 ms
    with psycopg.connect(database_url) as locker, psycopg.connect(database_url) as caller:
        locker.execute(sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(table(schema)))
        caller.execute("SET LOCAL statement_timeout = '200ms'")

        # when
        found = {f.name: f for f in run_checks(app, caller)}

        # then: the checks that read the jobs table say why they could not; the others ran
        assert found["queue lag"].status == "warn"
        assert found["queue lag"].message.startswith("could not check: canceling statement")
        assert found["server version"].status == "ok"
        assert found["invalid indexes"].status == "ok"
        assert caller.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS


# --- sessions ---------------------------------------------------------------------------


@pytest.mark.slow
def test_a_session_idle_in_transaction_past_ten_seconds_is_a_warning_naming_its_pid(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    with psycopg.connect(database_url) as idle:
        # given: a session that began a transaction and left it open
        idle.execute("SELECT 1")
        pid = idle.info.backend_pid

        # then: not at once (10 s is the threshold) ...
        _, found, _ = doctor_json(capsys, database_url, schema)
        assert found["idle in transaction"]["status"] == "ok"

        # ... but once it has idled 10 s, a warning naming it
        def warned() -> dict[str, str] | None:
            item = doctor_json(capsys, database_url, schema)[1]["idle in transaction"]
            return item if item["status"] == "warn" else None

        item = wait_until(warned, timeout=20, interval=0.5)
        assert f"pid {pid} (user " in item["message"]
        assert "idle in transaction for more than 10s: " in item["message"]
        assert f"pg_terminate_backend({pid})" in item["fix"]


def test_a_long_transaction_holding_the_horizon_is_named_with_its_application_and_query(
    app: App, database_url: str
) -> None:
    # given: a transaction that wrote (it has an xid) and idles, under a known name
    with psycopg.connect(database_url, application_name="doctor-holder") as holder:
        holder.execute("SELECT txid_current() AS holding_the_horizon")
        pid = holder.info.backend_pid

        # when: judged with thresholds that it passes
        quick = Thresholds(horizon_warn=timedelta(0), horizon_fail=timedelta(0))
        found = finding(app, "xmin horizon", quick)

        # then
        assert found.status == "fail"
        assert f"pid {pid} (user " in found.message
        assert "application doctor-holder, idle in transaction" in found.message
        assert "query: SELECT txid_current() AS holding_the_horizon" in found.message
        assert f"pg_terminate_backend({pid})" in found.fix
        # and with the default thresholds (5 min, 1 h) it is a fine, named holder
        assert finding(app, "xmin horizon").status == "ok"


@pytest.fixture(scope="module")
def replication() -> Iterator[LocalCluster]:
    """A cluster of this module's own with logical decoding and prepared transactions."""
    with replication_cluster() as cluster:
        yield cluster


@pytest.fixture
def replication_app(replication: LocalCluster) -> Iterator[App]:
    """An App on a freshly migrated schema of the replication cluster."""
    url, name = replication.ensure_running(), f"d_{uuid.uuid4().hex[:12]}"
    upgrade(url, name)
    application = App(url, schema=name)
    yield application
    application.close()
    execute(url, sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def test_a_prepared_transaction_holding_the_horizon_is_named_with_its_gid(
    replication_app: App,
) -> None:
    url = replication_app.database.url
    gid = f"doctor-{uuid.uuid4().hex[:8]}"
    with psycopg.connect(url) as conn:
        conn.execute("SELECT txid_current()")
        conn.execute(sql.SQL("PREPARE TRANSACTION {}").format(sql.Literal(gid)))
    try:
        found = finding(replication_app, "xmin horizon", Thresholds(horizon_warn=timedelta(0)))

        assert found.status == "warn"
        assert (
            f"prepared transaction '{gid}' (owner postgres) holds the xmin horizon" in found.message
        )
        assert f"ROLLBACK PREPARED '{gid}'" in found.fix
    finally:
        execute(url, sql.SQL("ROLLBACK PREPARED {}").format(sql.Literal(gid)))


def test_an_inactive_logical_slot_is_a_warning_naming_it_and_how_to_drop_it(
    replication_app: App,
) -> None:
    url = replication_app.database.url
    slot = f"doctor_{uuid.uuid4().hex[:8]}"
    execute(url, "SELECT pg_create_logical_replication_slot(%s, 'pgoutput')", [slot])
    try:
        found = finding(replication_app, "xmin horizon")

        # an inactive slot warns at once: nothing will ever advance it
        assert found.status == "warn"
        assert f"replication slot '{slot}' (logical, inactive)" in found.message
        assert "holds the system catalogs' xmin horizon (catalog_xmin)" in found.message
        assert found.fix.endswith(f"SELECT pg_drop_replication_slot('{slot}')")
    finally:
        execute(url, "SELECT pg_drop_replication_slot(%s)", [slot])


@pytest.mark.slow
def test_a_stopped_standbys_slot_holds_the_xmin_horizon_of_every_table(
    replication: LocalCluster, replication_app: App
) -> None:
    url = replication_app.database.url
    slot = f"standby_{uuid.uuid4().hex[:8]}"
    try:
        # given: a hot standby whose feedback set its slot's xmin, then stopped
        with hot_standby(replication, slot):
            wait_until(
                lambda: execute(
                    url, "SELECT xmin FROM pg_replication_slots WHERE slot_name = %s", [slot]
                )[0][0],
                timeout=20,
                message="the standby's feedback never set the slot's xmin",
            )
        for _ in range(3):  # the primary moves on: the slot falls behind
            execute(url, "SELECT txid_current()")

        # when
        found = finding(replication_app, "xmin horizon", Thresholds(horizon_fail_xids=3))

        # then: the slot, not a session, is what holds every table's dead rows
        assert found.status == "fail"
        assert (
            f"replication slot '{slot}' (physical, inactive) holds the xmin horizon"
            in found.message
        )
        assert found.fix.endswith(f"SELECT pg_drop_replication_slot('{slot}')")
    finally:
        execute(
            url,
            "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
            "WHERE slot_name = %s",
            [slot],
        )


# --- connections ------------------------------------------------------------------------


def test_connections_count_a_live_workers_connections_against_its_budget(
    app: App, database_url: str, schema: str
) -> None:
    # given: a live worker's row and three connections named as its parts name theirs
    worker_id = f"doctor-host:1:{uuid.uuid4().hex[:6]}"
    execute(
        database_url,
        sql.SQL(
            "INSERT INTO {} (id, host, pid, concurrency, version, rescue_after) "
            "VALUES (%s, 'doctor-host', 1, 4, 'test', 60)"
        ).format(table(schema, "workers")),
        [worker_id],
    )
    named = f"pgjobs-worker {worker_id}"
    conns = [psycopg.connect(database_url, application_name=named) for _ in range(3)]
    try:
        found = finding(app, "connections")
        squeezed = finding(app, "connections", Thresholds(connections_warn=0.0))
    finally:
        for conn in conns:
            conn.close()

    assert found.status == "ok"
    assert "1 live worker (4 threads) hold 3 (counted by their application_name)" in found.message
    assert "may open up to 8 in a drain" in found.message
    assert squeezed.status == "warn"
    assert "PgBouncer" in squeezed.fix


# --- tables and indexes -----------------------------------------------------------------


def test_dead_rows_past_the_thresholds_are_a_warning_naming_the_table(
    app: App, database_url: str, schema: str
) -> None:
    # given: 2,000 deleted jobs that no autovacuum removes meanwhile
    execute(
        database_url,
        sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(table(schema)),
    )
    insert = "INSERT INTO {} (task) SELECT 'dead' FROM generate_series(1, 2000)"
    execute(database_url, sql.SQL(insert).format(table(schema)))
    execute(database_url, sql.SQL("DELETE FROM {}").format(table(schema)))
    low = Thresholds(dead_rows_warn=1_000)

    # when: the statistics have caught up
    found = wait_until(
        lambda: (item := finding(app, "vacuum", low)).status == "warn" and item,
        timeout=15,
        message=lambda: f"no warning: {finding(app, 'vacuum', low)}",
    )

    # then
    assert "jobs_live: 2,000 dead rows (100% of its rows)" in found.message
    assert "autovacuum starts at" in found.message
    assert found.fix.startswith(f"VACUUM (ANALYZE) {schema}.jobs_live")
    assert finding(app, "vacuum").status == "ok"  # under the default 10,000


def bloat_jobs(url: str, schema: str, count: int) -> None:
    """Insert `count` finished jobs, delete the first nine tenths, VACUUM ANALYZE: the
    table and its primary key keep their pages, nine tenths empty."""
    jobs = table(schema)
    execute(
        url,
        sql.SQL(
            "INSERT INTO {} (task, state, finished_at, payload) SELECT 'bloat', 'completed', "
            "now(), jsonb_build_object('pad', repeat('x', 200)) FROM generate_series(1, %s)"
        ).format(jobs),
        [count],
    )
    execute(url, sql.SQL("VACUUM ANALYZE {}").format(jobs))
    execute(
        url,
        sql.SQL("DELETE FROM {0} WHERE id < (SELECT min(id) + %s FROM {0})").format(jobs),
        [count * 9 // 10],
    )
    execute(url, sql.SQL("VACUUM ANALYZE {}").format(jobs))


SMALL_BLOAT = Thresholds(bloat_bytes_warn=256 * 1024)


def test_bloat_of_a_table_and_its_index_is_estimated_from_the_statistics(
    app: App, database_url: str, schema: str
) -> None:
    # given: a table whose rows were mostly deleted and vacuumed
    bloat_jobs(database_url, schema, 30_000)

    # when
    found = finding(app, "bloat", SMALL_BLOAT)

    # then
    assert found.status == "warn"
    assert "table jobs_live: about " in found.message
    assert "index jobs_pkey on jobs_live: about " in found.message
    assert found.message.endswith("estimated from the statistics")
    assert finding(app, "bloat").status == "ok"  # far under the default 64 MB


def test_a_freshly_filled_table_is_not_bloated(app: App, database_url: str, schema: str) -> None:
    jobs = table(schema)
    insert = (
        "INSERT INTO {} (task, payload) SELECT 'full', jsonb_build_object('pad', repeat('x', 200)) "
        "FROM generate_series(1, 30000)"
    )
    execute(database_url, sql.SQL(insert).format(jobs))
    execute(database_url, sql.SQL("VACUUM ANALYZE {}").format(jobs))

    found = finding(app, "bloat", SMALL_BLOAT)

    assert found.status == "ok", found.message


def test_bloat_is_measured_with_pgstattuple_when_this_role_may_run_it(
    replication_app: App,
) -> None:
    if contrib_bindir() is None:
        reason = "no PostgreSQL on this machine ships pgstattuple (Debian: postgresql-contrib)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    url, schema = replication_app.database.url, replication_app.schema
    execute(url, "CREATE EXTENSION IF NOT EXISTS pgstattuple")
    try:
        bloat_jobs(url, schema, 30_000)

        found = finding(replication_app, "bloat", SMALL_BLOAT)

        assert found.status == "warn"
        assert "table jobs_live: about " in found.message
        assert "tables measured with pgstattuple_approx" in found.message
        # a caller that checks often may keep to the statistics' estimate
        with psycopg.connect(url, autocommit=True) as conn:
            quick = run_checks(replication_app, conn, SMALL_BLOAT, measure=False)
        assert next(f for f in quick if f.name == "bloat").message.endswith(
            "estimated from the statistics"
        )
    finally:
        execute(url, "DROP EXTENSION pgstattuple")


def create_failed_index(url: str, schema: str) -> str:
    """A unique index over duplicate values, left invalid by its failed concurrent build."""
    jobs = table(schema)
    execute(url, sql.SQL("INSERT INTO {} (task) VALUES ('twin'), ('twin')").format(jobs))
    with pytest.raises(psycopg.errors.UniqueViolation):
        execute(
            url, sql.SQL("CREATE UNIQUE INDEX CONCURRENTLY jobs_twin_idx ON {} (task)").format(jobs)
        )
    return "jobs_twin_idx"


def index_validity(url: str, schema: str) -> dict[str, bool]:
    rows = execute(
        url,
        "SELECT c.relname, i.indisvalid FROM pg_index AS i "
        "JOIN pg_class AS c ON c.oid = i.indexrelid "
        "JOIN pg_namespace AS n ON n.oid = c.relnamespace WHERE n.nspname = %s",
        [schema],
    )
    return dict(rows)


def test_an_invalid_index_from_a_failed_concurrent_build_fails_the_report(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    index = create_failed_index(database_url, schema)

    code, found, _ = doctor_json(capsys, database_url, schema)

    assert code == 1
    assert found["invalid indexes"]["status"] == "fail"
    assert found["invalid indexes"]["message"].startswith(
        f"1 invalid index: {index} on jobs_live ("
    )
    assert f"REINDEX INDEX CONCURRENTLY {schema}.{index}" in found["invalid indexes"]["fix"]


def test_fix_rebuilds_an_invalid_index_concurrently(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    # given: an invalid index whose duplicates are gone
    index = create_failed_index(database_url, schema)
    execute(database_url, sql.SQL("DELETE FROM {} WHERE task = 'twin'").format(table(schema)))

    # when
    result = run_cli(capsys, database_url, schema, "doctor", "--fix")

    # then: it says what it did, the index is valid, and the report after it is clean
    assert (
        f"fixed: REINDEX INDEX CONCURRENTLY {schema}.{index}: rebuilt {schema}.{index}: valid"
        in result.out
    )
    assert index_validity(database_url, schema)[index] is True
    assert result.code == 0, result.out


def test_fix_that_fails_says_why_and_leaves_no_copy_behind(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    # given: an invalid unique index over values still duplicated
    index = create_failed_index(database_url, schema)

    # when
    code, found, err = doctor_json(capsys, database_url, schema, "--fix")

    # then: the reason on stderr (stdout stays JSON), exit 1, the copy REINDEX made dropped
    assert (
        f"not fixed: REINDEX INDEX CONCURRENTLY {schema}.{index}: could not create unique index"
        in err
    )
    assert f"Key (task)=(twin) is duplicated; dropped the copy it left, {index}_ccnew" in err
    assert code == 1
    assert found["invalid indexes"]["status"] == "fail"
    validity = index_validity(database_url, schema)
    assert validity[index] is False
    assert not [name for name in validity if "_ccnew" in name]


def test_fix_does_not_start_a_rebuild_that_an_idle_transaction_would_stall(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    # given: a rebuildable invalid index, and a session idle in a transaction for a while
    # (a concurrent rebuild waits for it, and would give up midway, leaving a copy)
    index = create_failed_index(database_url, schema)
    execute(database_url, sql.SQL("DELETE FROM {} WHERE task = 'twin'").format(table(schema)))
    with psycopg.connect(database_url) as idle:
        idle.execute("SELECT 1")
        pid = idle.info.backend_pid
        wait_until(
            lambda: execute(
                database_url,
                "SELECT state_change < now() - interval '1 second' FROM pg_stat_activity "
                "WHERE pid = %s",
                [pid],
            )[0][0]
        )

        # when
        result = run_cli(capsys, database_url, schema, "doctor", "--fix")

    # then: refused, naming the session; nothing changed, nothing left behind
    assert (
        f"not fixed: REINDEX INDEX CONCURRENTLY {schema}.{index}: not started: it would wait "
        f"for the open transaction of pid {pid}" in result.out
    )
    validity = index_validity(database_url, schema)
    assert validity.pop(index) is False
    assert all(validity.values()) and not [name for name in validity if "_cc" in name]
    assert result.code == 1


def reloptions(url: str, schema: str, name: str) -> list[str]:
    rows = execute(
        url,
        "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE oid = to_regclass(%s)",
        [table(schema, name).as_string()],
    )
    return sorted(rows[0][0])


def test_fix_restores_the_autovacuum_settings_of_pgjobs_tables(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    # given: the jobs table's eager autovacuum reset, and autovacuum off for workers
    expected_jobs = reloptions(database_url, schema, "jobs_live")
    execute(
        database_url,
        sql.SQL("ALTER TABLE {} RESET (autovacuum_vacuum_scale_factor)").format(table(schema)),
    )
    execute(
        database_url,
        sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = false)").format(table(schema, "workers")),
    )
    _, before, _ = doctor_json(capsys, database_url, schema)
    assert before["autovacuum settings"]["status"] == "warn"
    assert (
        "jobs_live: autovacuum_vacuum_scale_factor unset "
        "(pgjobs sets autovacuum_vacuum_scale_factor = 0.02)"
        in before["autovacuum settings"]["message"]
    )
    assert "workers: autovacuum_enabled off" in before["autovacuum settings"]["message"]

    # when
    result = run_cli(capsys, database_url, schema, "doctor", "--fix")

    # then
    assert (
        f"fixed: ALTER TABLE {schema}.jobs_live SET (autovacuum_vacuum_scale_factor = 0.02)"
        in result.out
    )
    assert f"fixed: ALTER TABLE {schema}.workers RESET (autovacuum_enabled)" in result.out
    assert reloptions(database_url, schema, "jobs_live") == expected_jobs
    assert reloptions(database_url, schema, "workers") == []
    assert result.code == 0


def test_fix_names_and_alters_a_schema_whose_name_needs_quotes(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    name = f'Doctor\'s "odd" {uuid.uuid4().hex[:6]}'
    upgrade(database_url, name)
    try:
        workers = table(name, "workers")
        execute(
            database_url, sql.SQL("ALTER TABLE {} SET (autovacuum_enabled = off)").format(workers)
        )

        result = run_cli(capsys, database_url, name, "doctor", "--fix")

        quoted_name = '"' + name.replace('"', '""') + '"'
        assert f"fixed: ALTER TABLE {quoted_name}.workers RESET (autovacuum_enabled)" in result.out
        assert reloptions(database_url, name, "workers") == []
    finally:
        execute(database_url, sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def test_fix_with_nothing_to_fix_says_so(
    capsys: pytest.CaptureFixture[str], database_url: str, schema: str
) -> None:
    result = run_cli(capsys, database_url, schema, "doctor", "--fix")

    assert result.out.splitlines()[0] == "fix: nothing to fix"
    assert result.code == 0


# --- the queue --------------------------------------------------------------------------


def test_a_job_waiting_past_ten_minutes_fails_the_report_naming_it_and_its_queue(
    capsys: pytest.CaptureFixture[str],
    app: App,
    observer: psycopg.Connection[Any],
    schema: str,
    database_url: str,
) -> None:
    job_id = make_job(app, observer, task="late", queue="reports")
    execute(
        database_url,
        sql.SQL("UPDATE {} SET run_at = now() - interval '11 minutes'").format(table(schema)),
    )

    code, found, _ = doctor_json(capsys, database_url, schema)

    lag = found["queue lag"]
    assert code == 1
    assert lag["status"] == "fail"
    assert f"the oldest due job, {job_id} (late) in queue reports, has waited 11m" in lag["message"]
    assert "no live worker serves queue reports" in lag["message"]
    assert lag["fix"] == "start a worker for it: pgjobs work --app MODULE:APP --queue reports"


def test_a_paused_queue_is_not_judged_by_its_lag(
    app: App, observer: psycopg.Connection[Any], schema: str, database_url: str
) -> None:
    make_job(app, observer, task="held", queue="held")
    execute(
        database_url,
        sql.SQL("UPDATE {} SET run_at = now() - interval '1 hour'").format(table(schema)),
    )
    execute(
        database_url,
        sql.SQL("INSERT INTO {} (name, paused) VALUES ('held', true)").format(
            table(schema, "queues")
        ),
    )

    found = finding(app, "queue lag")

    assert found.status == "ok"
    assert "paused, not judged: held (waited 1h" in found.message


@pytest.mark.slow
def test_a_dead_workers_running_job_fails_the_report_once_its_heartbeat_is_stale(
    capsys: pytest.CaptureFixture[str],
    app: App,
    observer: psycopg.Connection[Any],
    database_url: str,
    schema: str,
    start_worker: StartWorker,
) -> None:
    # given: a worker running a long job, killed without a chance to say so
    worker = start_worker("--rescue-after", "2")
    job_id = app.enqueue(None, "sleep", {"seconds": 60})
    wait_for_job(observer, schema, job_id, "running", worker=worker)
    worker_id = worker.worker_id()
    worker.send(signal.SIGKILL)
    worker.wait_exit()

    # when: its heartbeat is older than its rescue_after
    def failing() -> Findings | None:
        code, found, _ = doctor_json(capsys, database_url, schema)
        return found if code == 1 and found["heartbeats"]["status"] == "fail" else None

    found = wait_until(failing, timeout=20, interval=0.5)

    # then
    message = found["heartbeats"]["message"]
    assert f"job {job_id} (sleep) of {worker_id}, silent " in message
    assert "(rescue_after 2s)" in message
    assert "no live worker, so no leader rescues them" in message


def test_a_stale_heartbeat_under_a_live_leader_is_a_warning(
    app: App, observer: psycopg.Connection[Any], database_url: str, schema: str
) -> None:
    # given: a live worker's row, and a job of a lost worker silent for 90 s (its
    # worker's row is gone: the default rescue_after of 60 s applies)
    execute(
        database_url,
        sql.SQL(
            "INSERT INTO {} (id, host, pid, concurrency, version, rescue_after) "
            "VALUES ('alive:1:a', 'alive', 1, 1, 'test', 60)"
        ).format(table(schema, "workers")),
    )
    job_id = make_job(
        app, observer, task="orphan", state="running", attempts=1, worker_id="gone:2:b"
    )
    execute(
        database_url,
        sql.SQL("UPDATE {} SET heartbeat_at = now() - interval '90 seconds'").format(table(schema)),
    )

    found = finding(app, "heartbeats")

    assert found.status == "warn"
    assert f"job {job_id} (orphan) of gone:2:b, silent 1m 30s (rescue_after 60s)" in found.message
    assert "the maintenance leader rescues them at its next pass" in found.message


def test_a_disabled_wake_up_trigger_is_a_warning_with_the_statement_that_enables_it(
    app: App, database_url: str, schema: str
) -> None:
    execute(
        database_url,
        sql.SQL("ALTER TABLE {} DISABLE TRIGGER jobs_notify_available").format(table(schema)),
    )

    found = finding(app, "notifications")

    assert found.status == "warn"
    assert found.message.startswith("the wake-up trigger is disabled")
    assert found.fix == f"ALTER TABLE {schema}.jobs_live ENABLE TRIGGER jobs_notify_available"


@pytest.mark.slow
def test_a_worker_listening_through_a_transaction_pooler_has_no_listening_session(
    capsys: pytest.CaptureFixture[str], pgbouncer_url: str, database_url: str, schema: str
) -> None:
    # given: a worker whose LISTEN goes through the pooler (its own check warns too)
    with WorkerProcess(pgbouncer_url, schema) as worker:
        worker.start()

        # when: it has registered, and the pooler has lent its LISTEN's connection on
        def listeners_counted() -> dict[str, str] | None:
            item = doctor_json(capsys, database_url, schema)[1]["notifications"]
            return item if "1 live worker, 0 sessions LISTENing" in item["message"] else None

        item = wait_until(
            listeners_counted, timeout=30, interval=0.5, message=lambda: worker.describe()
        )

    # then
    assert item["status"] == "warn"
    assert "transaction-mode pooler" in item["message"]
    assert "--listen-database-url" in item["fix"]


# --- migrations, bad input --------------------------------------------------------------


def test_a_pending_migration_fails_the_report_and_the_other_checks_still_run(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    name = f"old_{uuid.uuid4().hex[:12]}"
    known = package_revisions()
    upgrade(database_url, name, known[-3])
    try:
        code, found, _ = doctor_json(capsys, database_url, name)
    finally:
        execute(database_url, sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))

    assert code == 1
    assert found["migrations"] == {
        "name": "migrations",
        "status": "fail",
        "message": f"schema {name!r} is at revision {known[-3]}; "
        f"2 migrations pending: {known[-2]}, {known[-1]}",
        "fix": f"pgjobs migrate --schema {name}",
    }
    others = {
        item: f["status"]
        for item, f in found.items()
        if item not in ("migrations", "notifications")
    }
    assert others == dict.fromkeys(others, "ok")


def test_an_unmigrated_schema_fails_and_says_what_was_not_checked(
    capsys: pytest.CaptureFixture[str], database_url: str
) -> None:
    code, found, _ = doctor_json(capsys, database_url, "never_migrated")

    assert code == 1
    assert found["migrations"]["status"] == "fail"
    assert (
        found["migrations"]["message"]
        == "schema 'never_migrated' is not migrated: it has no jobs table"
    )
    assert found["queue lag"] == {
        "name": "queue lag",
        "status": "warn",
        "message": "not checked: schema 'never_migrated' is not migrated",
        "fix": "pgjobs migrate --schema never_migrated",
    }
    assert found["server version"]["status"] == "ok"
    assert found["xmin horizon"]["status"] in ("ok", "warn")
    assert not found["connections"]["message"].startswith("could not check")


def test_an_unreachable_database_is_one_error_line() -> None:
    result = pgjobs("doctor", "--database-url", UNREACHABLE_URL)

    assert the_error_line(result).startswith("pgjobs: error: cannot connect to PostgreSQL")


def test_a_server_older_than_14_fails_and_a_newer_than_tested_one_warns() -> None:
    # No PostgreSQL 13 runs here: the verdict on the version number is checked alone.
    assert version_verdict(130011, "13.11").status == "fail"
    assert "pgjobs supports PostgreSQL 14 to 18" in version_verdict(130011, "13.11").message
    assert version_verdict(140000, "14.0").status == "ok"
    assert version_verdict(180004, "18.4").status == "ok"
    assert version_verdict(190000, "19.0").status == "warn"


def test_a_least_privilege_role_sees_what_it_may_and_says_what_it_cannot(
    capsys: pytest.CaptureFixture[str],
    migrated_by_owner: Roles,
    database_url: str,
) -> None:
    roles_ = migrated_by_owner
    url, schema = roles_.urls["worker"], roles_.schema
    execute(
        roles_.urls["owner"],
        sql.SQL("ALTER TABLE {} RESET (autovacuum_vacuum_scale_factor)").format(table(schema)),
    )
    with psycopg.connect(database_url) as other:
        # given: another role's session holding an xid in an open transaction
        other.execute("SELECT txid_current()")
        pid = other.info.backend_pid

        # when
        code, found, err = doctor_json(capsys, url, schema, "--fix")

        # then: each check says what this role could not see or do
        assert found["migrations"]["status"] == "warn"
        assert (
            found["migrations"]["fix"]
            == f"GRANT SELECT ON {schema}.alembic_version TO {roles_.worker}"
        )
        horizon = found["xmin horizon"]["message"]
        assert f"pid {pid} (user " in horizon and "state hidden" in horizon
        assert "judged by transaction age alone" in horizon
        assert found["idle in transaction"]["status"] == "warn"
        assert (
            "of other roles hide their state from this role"
            in found["idle in transaction"]["message"]
        )
        assert found["idle in transaction"]["fix"].startswith(
            f"GRANT pg_read_all_stats TO {roles_.worker}"
        )
        assert "counted without seeing the type of" in found["connections"]["message"]
        assert f"not fixed: ALTER TABLE {schema}.jobs_live SET" in err and "must be owner" in err
        assert code == 1

        # and with pg_read_all_stats it sees every session
        execute(
            database_url,
            sql.SQL("GRANT pg_read_all_stats TO {}").format(sql.Identifier(roles_.worker)),
        )
        _, found, _ = doctor_json(capsys, url, schema)
        assert found["idle in transaction"]["status"] == "ok"
        assert "state hidden" not in found["xmin horizon"]["message"]
