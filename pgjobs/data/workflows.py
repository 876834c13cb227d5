"""Workflows' statements: a graph of steps inserted at once, steps added by a running
step, the results a step reads, and the graph as `pgjobs workflow` shows it.

The step graph lives on the steps' own rows (migration 0009): `depends_on`,
`dependents`, `waiting_for`, `run_if`. Finishing a step settles its dependents in the
finishing statement (data/outcome_sql.py's SETTLED_STEPS, migration 0009's settle_steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from pgjobs.data.sql import SchemaSQL
from pgjobs.data.steps import Plan, Statement
from pgjobs.errors import InvalidWorkflowError, JobStateError
from pgjobs.types import JobRow

# Every step of a new workflow in one statement, in the caller's transaction. Ids are
# drawn first (reserve_job_ids: ascending, in step order) so that each row can carry
# the ids of its dependencies and dependents; `edges` are (parent, child) pairs of step
# positions (from 1). A step with dependencies starts `blocked`, counting them in
# `waiting_for`; the others are `available` and wake the workers through the insert
# trigger, as any job does.
ENQUEUE_WORKFLOW = """
WITH workflow AS (
    INSERT INTO {workflows} (name) VALUES (%(name)s) RETURNING id
), new AS (
    SELECT {reserve_job_ids}(%(count)s) AS ids
), edges AS (
    SELECT e.parent, e.child, new.ids[e.parent] AS parent_id, new.ids[e.child] AS child_id
    FROM unnest(%(parents)s::int[], %(children)s::int[]) AS e(parent, child), new
), waits AS (
    SELECT child, array_agg(parent_id ORDER BY parent) AS depends_on
    FROM edges GROUP BY child
), feeds AS (
    SELECT parent, array_agg(child_id ORDER BY child) AS dependents
    FROM edges GROUP BY parent
)
INSERT INTO {live} (id, queue, task, payload, priority, run_at, max_attempts, workflow_id,
                    step, run_if, state, depends_on, dependents, waiting_for, meta)
SELECT new.ids[s.n], s.queue, s.task, s.payload::jsonb, s.priority,
       coalesce(s.run_at, now() + make_interval(secs => s.delay)), s.max_attempts,
       (SELECT id FROM workflow), s.step, s.run_if,
       CASE WHEN waits.depends_on IS NULL THEN 'available' ELSE 'blocked' END,
       waits.depends_on, feeds.dependents, coalesce(cardinality(waits.depends_on), 0),
       s.meta::jsonb
FROM unnest(
    %(queues)s::text[], %(tasks)s::text[], %(payloads)s::text[], %(priorities)s::int[],
    %(run_ats)s::timestamptz[], %(delays)s::float8[], %(max_attempts)s::int[],
    %(steps)s::text[], %(run_ifs)s::text[], %(metas)s::text[]
) WITH ORDINALITY AS s(queue, task, payload, priority, run_at, delay, max_attempts, step,
                       run_if, meta, n)
CROSS JOIN new
LEFT JOIN waits ON waits.child = s.n
LEFT JOIN feeds ON feeds.parent = s.n
ORDER BY s.n
RETURNING id, workflow_id
"""

# A running step adds a step: its dependencies are locked first (in id order), so that
# none finishes unseen in between: one still unfinished gets the new step in its
# `dependents` and counts in its `waiting_for`; one that failed or was cancelled cancels
# it at once (unless it runs if they merely finished), as settle_steps would have.
# The adding step's own row is locked with them and must still be running this attempt:
# a step cancelled (or rescued) while it runs adds nothing more to its workflow.
# Finished dependencies are in the history, where nothing changes them but a retry
# (which locks the adding step's row first): they are read, not locked. One that
# finished while this waited for its lock is in neither part of this statement's
# answer; the caller asks once more before calling a dependency unknown.
LOCK_STEPS = """
SELECT * FROM (
    SELECT id, step, state, attempts FROM {live}
    WHERE workflow_id = %(workflow_id)s
      AND (step = ANY(%(names)s::text[]) OR id = ANY(%(ids)s::bigint[]) OR id = %(adder)s)
    ORDER BY id
    FOR UPDATE
) AS unfinished
UNION ALL
SELECT id, step, state, attempts FROM {history}
WHERE workflow_id = %(workflow_id)s
  AND (step = ANY(%(names)s::text[]) OR id = ANY(%(ids)s::bigint[]) OR id = %(adder)s)
"""
FIND_STEP = "SELECT id FROM {jobs} WHERE workflow_id = %(workflow_id)s AND step = %(step)s"
ADD_STEP = """
WITH parents AS (
    SELECT id, step, state FROM {jobs} WHERE id = ANY(%(after)s::bigint[])
), summary AS (
    SELECT count(*) FILTER (WHERE state NOT IN ('completed', 'failed', 'cancelled'))::int
               AS waiting,
           min(format('dependency %%s (job %%s) %%s', step, id, state))
               FILTER (WHERE state IN ('failed', 'cancelled')) AS broken_by,
           coalesce(array_agg(id ORDER BY id), '{{}}') AS depends_on
    FROM parents
), decided AS (
    SELECT summary.*,
           CASE WHEN broken_by IS NOT NULL AND %(run_if)s = 'completed' THEN 'cancelled'
                WHEN waiting > 0 THEN 'blocked' ELSE 'available' END AS state
    FROM summary
), inserted AS (
    INSERT INTO {live} (queue, task, payload, priority, run_at, max_attempts, workflow_id,
                        step, run_if, state, depends_on, waiting_for, finished_at, errors,
                        meta)
    SELECT %(queue)s, %(task)s, %(payload)s::jsonb, %(priority)s,
           coalesce(%(run_at)s::timestamptz, now() + make_interval(secs => %(delay)s)),
           %(max_attempts)s, %(workflow_id)s, %(step)s, %(run_if)s, d.state,
           d.depends_on, d.waiting,
           CASE WHEN d.state = 'cancelled' THEN now() END,
           CASE WHEN d.state = 'cancelled' THEN jsonb_build_array(jsonb_build_object(
               'attempt', 0, 'at', now(), 'worker', NULL,
               'error', 'cancelled: ' || d.broken_by, 'traceback', NULL))
                ELSE '[]'::jsonb END,
           %(meta)s::jsonb
    FROM decided AS d
    RETURNING id, state
), linked AS (
    UPDATE {live} AS j
    SET dependents = coalesce(j.dependents, '{{}}') || ARRAY(SELECT id FROM inserted)
    FROM parents
    WHERE j.id = parents.id AND parents.state NOT IN ('completed', 'failed', 'cancelled')
      AND (SELECT state FROM inserted) = 'blocked'
)
SELECT id FROM inserted
"""

# A step's dependencies' results, by step name.
DEPENDENCY_RESULTS = """
SELECT d.step, d.result FROM {jobs} AS j
JOIN {jobs} AS d ON d.id = ANY(j.depends_on)
WHERE j.id = %(job_id)s
"""
STEP_NAME = "SELECT step FROM {jobs} WHERE id = %(job_id)s"

# The graph of one workflow, steps in id order (the order they were added).
WORKFLOW_STEPS = """
SELECT w.name, j.id, j.step, j.task, j.state, j.run_if, j.depends_on, j.attempts,
       j.created_at, j.started_at, j.finished_at, j.errors -> -1 ->> 'error' AS last_error
FROM {workflows} AS w
LEFT JOIN {jobs} AS j ON j.workflow_id = w.id
WHERE w.id = %(workflow_id)s
ORDER BY j.id
"""


class StepRow(NamedTuple):
    """One step of a new workflow: its job, name, `run_if` and dependencies (positions
    of earlier steps, from 1)."""

    job: JobRow
    name: str
    run_if: str
    after: tuple[int, ...]


def insert_workflow(
    sql: SchemaSQL, name: str, steps: Sequence[StepRow]
) -> Plan[tuple[int, list[int]]]:
    """Insert a workflow and every step in one statement; (workflow id, step ids in order)."""
    edges = [(parent, child) for child, step in enumerate(steps, 1) for parent in step.after]
    params = {
        "name": name,
        "count": len(steps),
        "parents": [parent for parent, _ in edges],
        "children": [child for _, child in edges],
        "queues": [s.job.queue for s in steps],
        "tasks": [s.job.task for s in steps],
        "payloads": [s.job.payload_json for s in steps],
        "priorities": [s.job.priority for s in steps],
        "run_ats": [s.job.run_at for s in steps],
        "delays": [s.job.delay_seconds for s in steps],
        "max_attempts": [s.job.max_attempts for s in steps],
        "steps": [s.name for s in steps],
        "run_ifs": [s.run_if for s in steps],
        "metas": [s.job.meta_json for s in steps],
    }
    inserted = yield Statement(sql.render(ENQUEUE_WORKFLOW), params)
    return inserted[0][1], sorted(row[0] for row in inserted)


class AddedStep(NamedTuple):
    """The job id of a step added at run time, and whether this call added it."""

    id: int
    new: bool


def add_step(
    sql: SchemaSQL,
    workflow_id: int,
    step: StepRow,
    after_names: Sequence[str],
    after_ids: Sequence[int],
    adder: tuple[int, int],
) -> Plan[AddedStep]:
    """Add `step` to a running workflow after the named (or numbered) steps; its id.
    `adder` is the (job id, attempt) of the running step that adds it.

    Idempotent by name: a step of that name already in the workflow is returned as is
    (a retried attempt adding its steps again). A JobStateError when the adding
    attempt is no longer running (its step was cancelled or rescued).
    """
    params: dict[str, Any] = {"workflow_id": workflow_id, "step": step.name}
    existing = yield Statement(sql.render(FIND_STEP), params)
    if existing:
        return AddedStep(int(existing[0][0]), new=False)
    adder_id, attempt = adder
    lock = Statement(
        sql.render(LOCK_STEPS),
        {
            "workflow_id": workflow_id,
            "names": list(after_names),
            "ids": list(after_ids),
            "adder": adder_id,
        },
    )
    locked = yield lock
    if len(locked) < len(set(after_names)) + len(set(after_ids)) + 1:
        locked = yield lock
    if not any(row[0] == adder_id and row[2:] == ("running", attempt) for row in locked):
        raise JobStateError(
            {
                adder_id: f"step {step.name!r} was not added: job {adder_id} is no longer "
                f"running its attempt {attempt} (cancelled, or rescued)"
            }
        )
    wanted = [row for row in locked if row[1] in after_names or row[0] in after_ids]
    found_names = {row[1] for row in wanted}
    found_ids = {row[0] for row in wanted}
    unknown = [repr(n) for n in after_names if n not in found_names]
    unknown += [f"job {i}" for i in after_ids if i not in found_ids]
    if unknown:
        raise InvalidWorkflowError(
            f"step {step.name!r} waits for {', '.join(unknown)}, not a step of workflow "
            f"{workflow_id}"
        )
    job = step.job
    params |= {
        "after": sorted(found_ids),
        "run_if": step.run_if,
        "queue": job.queue,
        "task": job.task,
        "payload": job.payload_json,
        "priority": job.priority,
        "run_at": job.run_at,
        "delay": job.delay_seconds,
        "max_attempts": job.max_attempts,
        "meta": job.meta_json,
    }
    [(job_id,)] = yield Statement(sql.render(ADD_STEP), params)
    return AddedStep(int(job_id), new=True)


def dependency_results(sql: SchemaSQL, job_id: int) -> Plan[dict[str, Any]]:
    """{step name: stored result} of the dependencies of step `job_id`."""
    rows = yield Statement(sql.render(DEPENDENCY_RESULTS), {"job_id": job_id})
    return {step: result for step, result in rows}


def step_name(sql: SchemaSQL, job_id: int) -> Plan[str]:
    """The step name of job `job_id`."""
    [(name,)] = yield Statement(sql.render(STEP_NAME), {"job_id": job_id})
    return str(name)


def workflow_steps(sql: SchemaSQL, workflow_id: int) -> Plan[list[dict[str, Any]]]:
    """The workflow's name and steps, one dict per step (no step: one row of NULLs but
    the name; an unknown workflow: no row)."""
    rows = yield Statement(sql.render(WORKFLOW_STEPS), {"workflow_id": workflow_id}, named=True)
    steps: list[dict[str, Any]] = rows.dicts()
    return steps


# --- inspecting workflows (`pgjobs workflow ID`, `pgjobs show ID`) ------------------------

# A workflow and every step, in the order the steps were added: the workflows row by its
# key, the steps by the partial jobs_workflow_step_idx.
WORKFLOW_GRAPH = """
SELECT w.name, w.created_at, j.id, j.step, j.task, j.queue, j.state, j.run_if,
       j.depends_on, j.waiting_for, j.attempts, j.max_attempts, j.started_at,
       j.finished_at, j.errors -> -1 ->> 'error' AS last_error, j.result
FROM {workflows} AS w
LEFT JOIN {jobs} AS j ON j.workflow_id = w.id
WHERE w.id = %(workflow_id)s
ORDER BY j.id
"""
# Steps by id: a step's dependencies as `pgjobs show` names them.
STEPS_BY_ID = "SELECT id, step, state FROM {jobs} WHERE id = ANY(%(ids)s::bigint[]) ORDER BY id"


class GraphStep(NamedTuple):
    """One step as `pgjobs workflow` shows it. `after` names its dependencies (one that
    retention deleted: "job ID"); `waiting_for` counts those not finished yet."""

    id: int
    step: str
    task: str
    queue: str
    state: str
    run_if: str
    depends_on: list[int]
    after: list[str]
    waiting_for: int
    attempts: int
    max_attempts: int
    started_at: Any
    finished_at: Any
    last_error: str | None
    result: Any


class WorkflowGraph(NamedTuple):
    """A workflow: its id, name, when it was enqueued, and its steps in the order they
    were added."""

    id: int
    name: str
    created_at: Any
    steps: list[GraphStep]

    def counts(self) -> dict[str, int]:
        """Steps by state, in the order the states first appear among the steps."""
        counts: dict[str, int] = {}
        for step in self.steps:
            counts[step.state] = counts.get(step.state, 0) + 1
        return counts

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape of `pgjobs workflow --json`."""
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "counts": self.counts(),
            "steps": [step._asdict() for step in self.steps],
        }


def workflow_graph(sql: SchemaSQL, workflow_id: int) -> Plan[WorkflowGraph | None]:
    """A workflow with every step, or None when there is no such workflow."""
    rows = yield Statement(sql.render(WORKFLOW_GRAPH), {"workflow_id": workflow_id})
    if not rows:
        return None
    names = {row[2]: row[3] for row in rows if row[2] is not None}
    steps = [
        GraphStep(
            id=job_id,
            step=step,
            task=task,
            queue=queue,
            state=state,
            run_if=run_if,
            depends_on=list(depends_on or ()),
            after=[names.get(d, f"job {d}") for d in depends_on or ()],
            waiting_for=waiting_for or 0,
            attempts=attempts,
            max_attempts=max_attempts,
            started_at=started_at,
            finished_at=finished_at,
            last_error=last_error,
            result=result,
        )
        for (
            _,
            _,
            job_id,
            step,
            task,
            queue,
            state,
            run_if,
            depends_on,
            waiting_for,
            attempts,
            max_attempts,
            started_at,
            finished_at,
            last_error,
            result,
        ) in rows
        if job_id is not None
    ]
    return WorkflowGraph(workflow_id, rows[0][0], rows[0][1], steps)


def steps_by_id(sql: SchemaSQL, ids: Sequence[int]) -> Plan[dict[int, tuple[str, str]]]:
    """{id: (step name, state)} of the steps among `ids` that still exist."""
    rows = yield Statement(sql.render(STEPS_BY_ID), {"ids": list(ids)})
    return {job_id: (step, state) for job_id, step, state in rows}
