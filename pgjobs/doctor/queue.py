"""Checks of the queue itself: how long due jobs wait, running jobs whose worker went
silent, and whether notifications reach the workers."""

from __future__ import annotations

from pgjobs.data.doctor import StaleJob
from pgjobs.doctor.findings import (
    Context,
    Finding,
    Status,
    age,
    ident,
    judge,
    listed,
    plural,
)
from pgjobs.worker.settings import WorkerSettings

# The trigger's `tgenabled` values under which it does not fire in a normal session.
TRIGGER_OFF = {"D": "disabled", "R": "set to fire only on a replica"}


def queue_lag(ctx: Context) -> Finding:
    """The oldest due job of each active queue and how long it has waited (the queue's
    lag: what a new job waits on top of its own turn)."""
    name, t = "queue lag", ctx.thresholds
    queues = ctx.statements.oldest_waiting(ctx.conn)
    paused = [queue for queue in queues if queue.paused]
    paused_note = (
        "; paused, not judged: " + ", ".join(f"{q.queue} (waited {age(q.waited)})" for q in paused)
        if paused
        else ""
    )
    active = [queue for queue in queues if not queue.paused]
    if not active:
        return Finding(name, "ok", "no due job is waiting in an active queue" + paused_note)
    oldest = active[0]  # the longest waiting first
    status = judge(
        oldest.waited.total_seconds(), t.lag_warn.total_seconds(), t.lag_fail.total_seconds()
    )
    partial = " (among the first 1,000 queue and priority groups)" if oldest.partial else ""
    unserved = "" if oldest.served else f"; no live worker serves queue {oldest.queue}"
    message = (
        f"the oldest due job, {oldest.id} ({oldest.task}) in queue {oldest.queue}, has waited "
        f"{age(oldest.waited)}{partial}{unserved}{paused_note}"
    )
    if status == "ok" and oldest.served:
        return Finding(name, "ok", message)
    if not oldest.served:
        status = "fail" if status == "fail" else "warn"
        fix = f"start a worker for it: pgjobs work --app MODULE:APP --queue {oldest.queue}"
    else:
        fix = (
            f"add workers or --concurrency for {oldest.queue}, or check its limits "
            "(pgjobs queues, pgjobs limits)"
        )
    return Finding(name, status, message, fix)


def heartbeats(ctx: Context) -> Finding:
    """Running jobs whose heartbeat is older than their worker's rescue_after: their
    worker died, and they wait for the maintenance leader to rescue them."""
    name = "heartbeats"
    stale, total = ctx.statements.stale_running(ctx.conn, WorkerSettings.rescue_after)
    if not stale:
        return Finding(
            name, "ok", "no running job's heartbeat is older than its worker's rescue_after"
        )
    fleet, problem = ctx.fleet()
    overdue = [job for job in stale if _overdue(job)]
    jobs = listed([_stale(job) for job in stale], total)
    message = f"{plural(total, 'running job')} with no fresh heartbeat: {jobs}"
    status: Status
    if fleet is not None and fleet.live_workers == 0:
        status = "fail"
        message += "; no live worker, so no leader rescues them"
        fix = "start a worker: its leader rescues them (pgjobs work --app MODULE:APP)"
    elif overdue:
        status = "fail"
        message += f"; {plural(len(overdue), 'job')} unrescued past twice the rescue_after"
        fix = "see the maintenance leader's log (pgjobs workers shows which worker leads)"
    else:
        status = "warn"
        message += "; the maintenance leader rescues them at its next pass"
        if fleet is None:
            message += f" (live workers not checked: {problem})"
        fix = "nothing, unless it lasts: then see the maintenance leader's log (pgjobs workers)"
    return Finding(name, status, message, fix)


def _overdue(job: StaleJob) -> bool:
    return job.silent_for is None or job.silent_for.total_seconds() > 2 * job.rescue_after


def _stale(job: StaleJob) -> str:
    silent = f"silent {age(job.silent_for)}" if job.silent_for is not None else "never beat"
    worker = job.worker_id or "no worker"
    return f"job {job.id} ({job.task}) of {worker}, {silent} (rescue_after {job.rescue_after:g}s)"


def notifications(ctx: Context) -> Finding:
    """The wake-up trigger fires, the server's notification queue has room, live workers
    exist and each has a session LISTENing on the schema's channel (one behind a
    transaction-mode pooler has none: its LISTEN went to a pooled connection)."""
    name, t = "notifications", ctx.thresholds
    trigger, usage = ctx.statements.notifications(ctx.conn)
    if trigger is None:
        return Finding(
            name,
            "fail",
            "the wake-up trigger jobs_notify_available is missing from "
            + ident(ctx.schema, "jobs_live"),
            "restore it from the migration (pgjobs migrate --sql prints its definition)",
        )
    if trigger in TRIGGER_OFF:
        return Finding(
            name,
            "warn",
            f"the wake-up trigger is {TRIGGER_OFF[trigger]}: workers find jobs only when they poll",
            f"ALTER TABLE {ident(ctx.schema, 'jobs_live')} ENABLE TRIGGER jobs_notify_available",
        )
    status = judge(usage, t.notify_queue_warn, t.notify_queue_fail)
    if status != "ok":
        return Finding(
            name,
            status,
            f"the server's notification queue is {usage:.0%} full: at 100% every NOTIFY, "
            "and so every enqueue's commit, fails",
            "a session LISTENs and does not read, or a listener's transaction stays open: find "
            "it in pg_stat_activity (a LISTEN query, or idle in transaction) and end it",
        )
    fleet, problem = ctx.fleet()
    trigger_ok = f"the wake-up trigger fires, the notification queue is {usage:.0%} full"
    if fleet is None:
        return Finding(name, "warn", f"{trigger_ok}; listeners not checked: {problem}")
    if fleet.live_workers == 0:
        last = (
            f"the last heartbeat {age(fleet.since_last_beat)} ago"
            if fleet.since_last_beat is not None
            else "none ever registered"
        )
        return Finding(
            name,
            "warn",
            f"{trigger_ok}; no live worker listens ({last})",
            "start a worker: pgjobs work --app MODULE:APP",
        )
    counted = (
        f"{plural(fleet.live_workers, 'live worker')}, "
        f"{plural(fleet.listeners, 'session')} LISTENing on the schema's channel"
    )
    if fleet.listeners >= fleet.live_workers:
        return Finding(name, "ok", f"{trigger_ok}; {counted}")
    if not ctx.may_read_all_stats():
        hidden = ctx.statements.connections(ctx.conn).hidden
        if hidden:
            return Finding(
                name,
                "warn",
                f"{trigger_ok}; {counted}, and {plural(hidden, 'session')} of other roles hide "
                "their query from this role",
                ctx.grant_read_all_stats(),
            )
    return Finding(
        name,
        "warn",
        f"{trigger_ok}; {counted}: notifications do not reach the others, likely LISTEN "
        "through a transaction-mode pooler (PgBouncer); they poll instead",
        "give the workers' listener a direct or session-pooled URL: --listen-database-url "
        "(PGJOBS_LISTEN_DATABASE_URL), see docs/pgbouncer.md",
    )
