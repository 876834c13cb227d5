"""Checks of what other sessions do to the queue: holding back the xmin horizon (so
VACUUM cannot remove the dead rows every job leaves), and idling in a transaction."""

from __future__ import annotations

from pgjobs.data.doctor import HorizonHolder, IdleSession
from pgjobs.doctor.findings import (
    Context,
    Finding,
    Status,
    Thresholds,
    age,
    ident,
    judge,
    listed,
    plural,
    quoted,
    worst,
)

SLOTS = ("slot", "catalog slot")


def xmin_horizon(ctx: Context) -> Finding:
    """The oldest transaction, prepared transaction or replication slot that keeps
    VACUUM from removing dead rows, judged by how long it has been open or how many
    transactions behind it is."""
    name = "xmin horizon"
    holders = ctx.statements.horizon(ctx.conn)
    hidden = (
        ""
        if ctx.may_read_all_stats()
        else (
            "; other roles' sessions show this role no state, start or query (needs "
            "pg_read_all_stats), so they are judged by transaction age alone"
        )
    )
    if not holders:
        return Finding(name, "ok", "nothing holds the xmin horizon back" + hidden)
    judged = [(holder_status(holder, ctx.thresholds), holder) for holder in holders]
    status = worst([verdict for verdict, _ in judged])
    # The holder to name: the worst, and of those the furthest behind (holders come
    # furthest behind first).
    chosen = next(holder for verdict, holder in judged if verdict == status)
    others = sum(1 for verdict, holder in judged if verdict != "ok" and holder is not chosen)
    also = f"; {plural(others, 'other holder')} past the thresholds" if others else ""
    if status == "ok":
        return Finding(name, "ok", f"oldest holder: {describe(chosen)}: fine{hidden}")
    return Finding(name, status, f"{describe(chosen)}{also}{hidden}", holder_fix(chosen))


def holder_status(holder: HorizonHolder, t: Thresholds) -> Status:
    """By how long it has been open when the role may see that, and by how many
    transactions behind it is; an inactive slot warns at least: nothing advances it."""
    verdicts: list[Status] = []
    if holder.held_for is not None:
        seconds = holder.held_for.total_seconds()
        verdicts.append(
            judge(seconds, t.horizon_warn.total_seconds(), t.horizon_fail.total_seconds())
        )
    if holder.xid_age is not None:
        verdicts.append(judge(holder.xid_age, t.horizon_warn_xids, t.horizon_fail_xids))
    if holder.kind in SLOTS and holder.state == "inactive":
        verdicts.append("warn")
    return worst(verdicts)


def describe(holder: HorizonHolder) -> str:
    """The holder in a phrase: what it is, who, since when, its query."""
    behind = f"{holder.xid_age:,} transactions behind" if holder.xid_age is not None else ""
    if holder.kind == "prepared":
        return (
            f"prepared transaction {quoted(holder.name or '')} (owner {holder.role}) holds "
            f"the xmin horizon: prepared {age(holder.held_for)} ago, {behind}"
        )
    if holder.kind in SLOTS:
        what = (
            "the xmin horizon"
            if holder.kind == "slot"
            else ("the system catalogs' xmin horizon (catalog_xmin)")
        )
        user = f", used by pid {holder.pid}" if holder.pid is not None else ""
        return (
            f"replication slot {quoted(holder.name or '')} ({holder.detail}, {holder.state}"
            f"{user}) holds {what}, {behind}"
        )
    who = (
        f"pid {holder.pid} (user {holder.role or '?'}, application "
        f"{holder.application or '-'}, {holder.state or 'state hidden'})"
    )
    opened = f"transaction open {age(holder.held_for)}, " if holder.held_for is not None else ""
    query = f"; query: {holder.query}" if holder.query else ""
    return f"{who} holds the xmin horizon: {opened}{behind}{query}"


def holder_fix(holder: HorizonHolder) -> str:
    if holder.kind == "prepared":
        gid = quoted(holder.name or "")
        return (
            f"finish it in database {holder.detail}: COMMIT PREPARED {gid} or ROLLBACK "
            f"PREPARED {gid}"
        )
    if holder.kind in SLOTS:
        if holder.state == "inactive":
            return (
                "if its standby or subscriber is gone for good: SELECT "
                f"pg_drop_replication_slot({quoted(holder.name or '')})"
            )
        return (
            "its consumer lags or holds a long query (a standby with hot_standby_feedback): "
            f"see pg_stat_replication for pid {holder.pid}"
        )
    return (
        f"end it: SELECT pg_terminate_backend({holder.pid}); and bound transactions of "
        f"{holder.application or 'its application'} (idle_in_transaction_session_timeout, "
        "statement_timeout)"
    )


def idle_in_transaction(ctx: Context) -> Finding:
    """Sessions of this database idle in a transaction for longer than the threshold:
    they hold their locks and, once they have written, the xmin horizon."""
    name, after = "idle in transaction", ctx.thresholds.idle_in_transaction
    sessions, total = ctx.statements.idle_in_transaction(ctx.conn, after)
    hidden = 0 if ctx.may_read_all_stats() else ctx.statements.connections(ctx.conn).hidden
    unseen = (
        f"; {plural(hidden, 'session')} of other roles hide their state from this role"
        if hidden
        else ""
    )
    if sessions:
        first = sessions[0]
        role = ident(first.role) if first.role else "..."
        return Finding(
            name,
            "warn",
            f"{plural(total, 'session')} idle in transaction for more than {age(after)}: "
            + listed([_idle(session) for session in sessions], total)
            + unseen,
            f"end it: SELECT pg_terminate_backend({first.pid}); and set "
            f"idle_in_transaction_session_timeout (ALTER ROLE {role} SET "
            "idle_in_transaction_session_timeout = '60s')",
        )
    if hidden:
        return Finding(
            name,
            "warn",
            f"no session of role {ctx.facts.role} is idle in transaction for more than "
            f"{age(after)}{unseen}",
            ctx.grant_read_all_stats(),
        )
    return Finding(name, "ok", f"no session is idle in transaction for more than {age(after)}")


def _idle(session: IdleSession) -> str:
    query = f": {session.query}" if session.query else ""
    return (
        f"pid {session.pid} (user {session.role}, application {session.application or '-'}, "
        f"idle {age(session.idle_for)}, open {age(session.open_for)}){query}"
    )
