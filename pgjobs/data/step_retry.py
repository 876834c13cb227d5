"""The statements that retry workflow steps (data/admin.py runs them; job_checks.py's
`plan_retry` decides what they do): a retried step waits again for its unfinished
dependencies, and the blocked steps that depend on it wait for it again."""

from __future__ import annotations

# Retrying workflow steps (admin.py decides, job_checks.py's `plan_retry`). The steps
# among the locked jobs, with what decides their new state:
STEPS_TO_RETRY = """
SELECT id, workflow_id, step, run_if, depends_on FROM {jobs}
WHERE id = ANY(%(ids)s::bigint[]) AND workflow_id IS NOT NULL
ORDER BY id
"""
# Their dependencies, the unfinished ones locked (in id order, after the retried jobs)
# so that none finishes unseen before the retry commits: one that finishes after waits
# for the retry, and its settle_steps then finds the retried step blocked and counts it
# off. Finished ones are read from wherever they are. A dependency that finished while
# this waited for its lock has left jobs_live and is not yet in this statement's view of
# the history: the caller asks again for the ids that did not come back.
LOCK_DEPENDENCIES = """
SELECT * FROM (
    SELECT id, step, state FROM {live}
    WHERE id = ANY(%(ids)s::bigint[])
    ORDER BY id
    FOR UPDATE
) AS unfinished
UNION ALL
SELECT id, step, state FROM {history} WHERE id = ANY(%(ids)s::bigint[])
"""
# A retried step is unfinished again: each blocked step that depends on it (found by
# `depends_on`, one scan of each workflow's steps) waits for it once more. Those steps
# are locked in id order, as settle_steps locks them; one released or cancelled
# meanwhile is left alone. The retried steps themselves are excluded: RETRY_JOBS counted
# their dependencies. Returns the (parent, child) edges counted, for LINK_DEPENDENTS.
COUNT_RETRIED_DEPENDENCIES = """
WITH edges AS (
    SELECT c.id AS child, p.id AS parent
    FROM {live} AS c CROSS JOIN LATERAL unnest(c.depends_on) AS p(id)
    WHERE c.workflow_id = ANY(%(workflows)s::bigint[]) AND c.state = 'blocked'
      AND p.id = ANY(%(ids)s::bigint[]) AND c.id <> ALL(%(ids)s::bigint[])
), locked AS (
    SELECT id FROM {live}
    WHERE id IN (SELECT child FROM edges) AND state = 'blocked'
    ORDER BY id
    FOR UPDATE
), counted AS (
    UPDATE {live} AS j
    SET waiting_for = j.waiting_for + e.n
    FROM (SELECT child, count(*)::int AS n FROM edges GROUP BY child) AS e
    WHERE j.id = e.child AND j.id IN (SELECT id FROM locked)
    RETURNING j.id
)
SELECT parent, child FROM edges WHERE child IN (SELECT id FROM counted)
"""
# The unfinished jobs a step waits for must list it in `dependents`, or finishing them
# would never count it off. A step added at run time after a dependency had finished is
# not listed there; retrying that dependency, or the step, lists it.
LINK_DEPENDENTS = """
WITH wanted AS (
    SELECT e.parent, array_agg(e.child ORDER BY e.child) AS children
    FROM unnest(%(parents)s::bigint[], %(children)s::bigint[]) AS e(parent, child)
    JOIN {live} AS p ON p.id = e.parent
    WHERE e.child <> ALL(coalesce(p.dependents, '{{}}'))
    GROUP BY e.parent
)
UPDATE {live} AS j
SET dependents = coalesce(j.dependents, '{{}}') || w.children
FROM wanted AS w
WHERE j.id = w.parent
"""
