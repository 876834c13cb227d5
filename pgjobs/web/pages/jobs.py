"""The jobs list: filters, pages by id, and retry / cancel / delete of the jobs ticked,
or of every job that matches the filter (at most `BULK_CAP`). An action is confirmed on
a page that says how many jobs of which states it changes and which it leaves out, and
is done by a second POST that carries their ids and `confirm=1`.

Filters (query parameters): `state` (repeatable), `queue`, `task`, `q` (text in the last
error, and in the arguments unless the dashboard redacts them), `time` (`created` or
`finished`) with `since` / `until`; the cursor is `before` or `after` (a job id). How far
one page looks is said on the page (see data/dashboard_jobs.py).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from functools import partial
from typing import Any
from urllib.parse import urlencode

from starlette.datastructures import FormData, ImmutableMultiDict
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from pgjobs import admin
from pgjobs.app import App
from pgjobs.data.dashboard_jobs import BIGINT_MAX, DashboardJobs, JobSearch
from pgjobs.errors import JobNotFoundError, JobStateError
from pgjobs.job_checks import describe_states
from pgjobs.types import CANCELLABLE_STATES, FINISHED_STATES, RETRYABLE_STATES, STATES
from pgjobs.web.dashboard import BadRequest, Dashboard, action, logged, page, url_of

PAGE_SIZE = 50
BULK_CAP = 10_000  # jobs one action changes at most
SELECT_WINDOWS = 5  # "all matching" looks at the ids of five pages' windows
MAX_FILTER_LENGTH = 200
STATE_NAMES = tuple(state.value for state in STATES)
_ID = re.compile(r"[0-9]{1,19}")


def routes(dashboard: Dashboard) -> list[Route]:
    return [
        Route("/jobs", page(dashboard, show), name="jobs"),
        *(
            Route(
                f"/jobs/{verb}",
                action(dashboard, partial(bulk, verb)),
                methods=["POST"],
                name=f"jobs_{verb}",
            )
            for verb in ACTIONS
        ),
    ]


def parse_id(text: str | None, what: str = "job") -> int:
    """A job's or workflow's id from a URL or form, or a 400 that says what is wrong."""
    text = (text or "").strip()
    if not _ID.fullmatch(text) or not 0 < int(text) <= BIGINT_MAX:
        shown = text if len(text) <= 40 else text[:40] + "..."
        raise BadRequest(f"{shown!r} is not a {what} id: ids go from 1 to {BIGINT_MAX:,}")
    return int(text)


def cursor(values: ImmutableMultiDict[str, Any], name: str) -> int | None:
    """The page cursor `name` (`before`: ids below it, `after`: ids above it), a job id;
    None when absent."""
    text = values.get(name)
    if text is None or text == "":
        return None
    lowest, highest = (1, BIGINT_MAX) if name == "before" else (0, BIGINT_MAX - 1)
    if not isinstance(text, str) or not _ID.fullmatch(text) or not lowest <= int(text) <= highest:
        raise BadRequest(f"the page cursor {name}= must be a number from {lowest} to {highest:,}")
    return int(text)


@dataclass(frozen=True)
class Filters:
    """The jobs list's filters, from a URL's query or a form."""

    states: tuple[str, ...] = ()
    queue: str | None = None
    task: str | None = None
    text: str | None = None
    time: str = "created"
    since: datetime | None = None
    until: datetime | None = None

    @classmethod
    def parse(cls, values: ImmutableMultiDict[str, Any]) -> Filters:
        states = tuple(dict.fromkeys(s for s in values.getlist("state") if s))
        for state in states:
            if state not in STATE_NAMES:
                raise BadRequest(f"unknown state {state!r}; choose from {', '.join(STATE_NAMES)}")
        time = _text(values, "time") or "created"
        if time not in ("created", "finished"):
            raise BadRequest("time= must be 'created' or 'finished'")
        since, until = _moment(values, "since"), _moment(values, "until")
        if since and until and since > until:
            raise BadRequest("the time range ends before it starts (since= is after until=)")
        return cls(
            states,
            _text(values, "queue"),
            _text(values, "task"),
            _text(values, "q"),
            time,
            since,
            until,
        )

    def pairs(self) -> list[tuple[str, str]]:
        """The filters as query (or hidden form) fields."""
        found = [("state", state) for state in self.states]
        found += [
            (k, v) for k, v in (("queue", self.queue), ("task", self.task), ("q", self.text)) if v
        ]
        if self.since or self.until:
            found.append(("time", self.time))
        found += [
            (k, _html_moment(v)) for k, v in (("since", self.since), ("until", self.until)) if v
        ]
        return found

    def search(self, *, in_args: bool) -> JobSearch:
        pattern = None
        if self.text:
            escaped = self.text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern = f"%{escaped}%"
        by_finished = self.time == "finished"
        return JobSearch(
            states=self.states or None,
            queue=self.queue,
            task=self.task,
            pattern=pattern,
            in_args=in_args,
            created_since=None if by_finished else self.since,
            created_until=None if by_finished else self.until,
            finished_since=self.since if by_finished else None,
            finished_until=self.until if by_finished else None,
        )

    def describe(self) -> str:
        """E.g. "state failed, queue email, text 'timeout'"."""
        parts = [f"state {' or '.join(self.states)}"] if self.states else []
        parts += [f"{k} {v}" for k, v in (("queue", self.queue), ("task", self.task)) if v]
        parts += [f"text {self.text!r}"] if self.text else []
        parts += [f"{self.time} since {_html_moment(self.since)}"] if self.since else []
        parts += [f"{self.time} until {_html_moment(self.until)}"] if self.until else []
        return ", ".join(parts) or "no filter"


def _text(values: ImmutableMultiDict[str, Any], name: str) -> str | None:
    value = values.get(name)
    if not isinstance(value, str) or not value.strip():
        return None
    if len(value) > MAX_FILTER_LENGTH or "\x00" in value:
        raise BadRequest(f"{name}= is too long or holds a NUL character")
    return value.strip()


def _moment(values: ImmutableMultiDict[str, Any], name: str) -> datetime | None:
    """A moment of the time range; one without a time zone is UTC."""
    text = _text(values, name)
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        return (
            moment.astimezone(timezone.utc)
            if moment.tzinfo
            else moment.replace(tzinfo=timezone.utc)
        )
    except (ValueError, OverflowError):
        raise BadRequest(f"{name}= must be a date and time like 2026-12-06T10:30") from None


def _html_moment(value: datetime | None) -> str:
    """A moment as a datetime-local field shows it (UTC)."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S") if value else ""


def list_url(request: Request, filters: Filters, **extra: Any) -> str:
    """The jobs list's URL with `filters` and `extra` (a cursor, a notice)."""
    pairs = filters.pairs() + [(k, str(v)) for k, v in extra.items() if v is not None]
    base = url_of(request, "jobs")
    return f"{base}?{urlencode(pairs)}" if pairs else base


def show(dashboard: Dashboard, request: Request) -> Response:
    params = request.query_params
    filters = Filters.parse(params)
    before, after = cursor(params, "before"), cursor(params, "after")
    if before is not None and after is not None:
        raise BadRequest("give before= or after=, not both")
    search = filters.search(in_args=dashboard.redact is None)
    statements = DashboardJobs(dashboard.app.data.sql)
    with dashboard.reading() as conn:
        if after is not None:
            found = statements.newer(conn, search, after, PAGE_SIZE)
        else:
            found = statements.older(conn, search, before, PAGE_SIZE)
    rows = [{**row, "args": _preview(dashboard, row)} for row in found.rows]
    context = {
        "filters": filters,
        "states": STATE_NAMES,
        "rows": rows,
        "page": found,
        "first_page": before is None and after is None,
        "older_url": None
        if found.older is None
        else list_url(request, filters, before=found.older),
        "newer_url": None if found.newer is None else list_url(request, filters, after=found.newer),
        "newest_url": list_url(request, filters),
        "args_searched": dashboard.redact is None,
        "filter_fields": filters.pairs(),
        "since": _html_moment(filters.since),
        "until": _html_moment(filters.until),
        "bulk_cap": BULK_CAP,
    }
    return dashboard.render(request, "jobs.html", context)


def _preview(dashboard: Dashboard, row: dict[str, Any]) -> str:
    shown = dashboard.args_shown(row["task"], row["payload"])
    text = shown if isinstance(shown, str) else json.dumps(shown, default=str, ensure_ascii=False)
    return text if len(text) <= 120 else text[:119] + "…"


# --- retry, cancel, delete -------------------------------------------------------------


@dataclass(frozen=True)
class Verb:
    """One action on jobs: the states it applies to and how it is done."""

    name: str
    states: tuple[str, ...]
    done: str
    run: Callable[[App, list[int]], list[int]]


def delete_jobs(app: App, ids: list[int]) -> list[int]:
    """Delete finished jobs, all or nothing (see DashboardJobs.delete_finished)."""
    with app.database.transaction() as conn:
        return DashboardJobs(app.data.sql).delete_finished(conn, ids)


ACTIONS = {
    "retry": Verb("retry", tuple(map(str, RETRYABLE_STATES)), "retried", admin.retry_jobs),
    "cancel": Verb("cancel", tuple(map(str, CANCELLABLE_STATES)), "cancelled", admin.cancel_jobs),
    "delete": Verb("delete", tuple(map(str, FINISHED_STATES)), "deleted", delete_jobs),
}


def bulk(
    verb_name: str, dashboard: Dashboard, request: Request, form: FormData, who: str
) -> Response:
    """The first POST shows what the action would change; the second (`confirm=1`,
    with the ids the first showed) changes it."""
    verb = ACTIONS[verb_name]
    filters = Filters.parse(form)
    to_job = form.get("back") == "job"
    if form.get("confirm") == "1":
        return _execute(dashboard, request, verb, _ids(form), filters, to_job, who)
    statements = DashboardJobs(dashboard.app.data.sql)
    selection, left_out, busy = None, [], set()
    with dashboard.reading() as conn:
        if form.get("all") != "1":
            ids = _ids(form)
        elif allowed := [s for s in filters.states or STATE_NAMES if s in verb.states]:
            search = replace(filters, states=tuple(allowed)).search(
                in_args=dashboard.redact is None
            )
            selection = statements.matching(conn, search, windows=SELECT_WINDOWS, cap=BULK_CAP)
            ids = [job_id for job_id, _ in selection.jobs]
            if not ids:
                left_out.append(f"No {describe_states(allowed)} job matches the filter.")
        else:
            ids = []
            left_out.append(
                f"The filter asks for {describe_states(filters.states)} jobs: only "
                f"{describe_states(verb.states)} jobs can be {verb.done}."
            )
        found = statements.states_of(conn, ids)
        if verb.name == "delete":
            busy = statements.unfinished_workflows(conn, [w for _, w in found.values() if w])
    eligible = [
        i for i in ids if i in found and found[i][0] in verb.states and found[i][1] not in busy
    ]
    to_job = to_job and len(ids) == 1
    context = {
        "verb": verb.name,
        "done": verb.done,
        "action_url": url_of(request, f"jobs_{verb.name}"),
        "ids": ",".join(map(str, eligible)),
        "count": len(eligible),
        "title": _title(verb, [found[i][0] for i in eligible]),
        "left_out": left_out + _left_out(verb, ids, found, busy),
        "selection": selection,
        "filters": filters,
        "filter_fields": filters.pairs(),
        "back": "job" if to_job else "",
        "back_url": url_of(request, "job", job_id=ids[0]) if to_job else list_url(request, filters),
        "cap": BULK_CAP,
    }
    return dashboard.render(request, "confirm.html", context)


def _ids(form: FormData) -> list[int]:
    """The ids of a form: ticked boxes and/or one comma-separated field."""
    ids: list[int] = []
    for value in form.getlist("ids"):
        if isinstance(value, str):
            ids.extend(parse_id(part) for part in value.split(",") if part.strip())
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise BadRequest("no job was selected: tick the jobs to change, or 'all matching'")
    if len(ids) > BULK_CAP:
        raise BadRequest(f"at most {BULK_CAP:,} jobs at a time")
    return ids


def _execute(
    dashboard: Dashboard,
    request: Request,
    verb: Verb,
    ids: list[int],
    filters: Filters,
    to_job: bool,
    who: str,
) -> Response:
    try:
        done = verb.run(dashboard.app, ids)
    except JobNotFoundError as error:
        raise BadRequest(f"Nothing was changed: {error}", 404) from None
    except JobStateError as error:
        problems = list(error.problems.values())
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise BadRequest(f"Nothing was changed: {'; '.join(problems[:3])}{more}", 409) from None
    logged(f"{verb.name} jobs", who, count=len(done), ids=done[:100])
    notice = f"{_jobs(len(done))} {verb.done}"
    if to_job and len(ids) == 1 and verb.name != "delete":
        target = url_of(request, "job", job_id=ids[0])
        return RedirectResponse(f"{target}?{urlencode({'notice': notice})}", status_code=303)
    return RedirectResponse(list_url(request, filters, notice=notice), status_code=303)


def _jobs(count: int) -> str:
    return f"{count:,} job" if count == 1 else f"{count:,} jobs"


def _by_state(states: list[str]) -> str:
    """E.g. "9 failed and 3 cancelled jobs", "1 failed job"."""
    counts = {s: states.count(s) for s in STATE_NAMES if s in states}
    noun = "job" if len(states) == 1 else "jobs"
    parts = [f"{n:,} {state}" for state, n in counts.items()]
    text = " and ".join([", ".join(parts[:-1]), parts[-1]] if len(parts) > 1 else parts)
    return f"{text} {noun}"


def _title(verb: Verb, states: list[str]) -> str:
    if not states:
        return f"Nothing to {verb.name}"
    return f"{verb.name.capitalize()} {_by_state(states)}?"


def _left_out(
    verb: Verb, ids: list[int], found: dict[int, tuple[str, int | None]], busy: set[int]
) -> list[str]:
    """Sentences about the selected jobs the action leaves as they are, and why."""
    lines = []
    missing = [i for i in ids if i not in found]
    if missing:
        lines.append(f"Left out: {_jobs(len(missing))} that no longer exist.")
    wrong = [found[i][0] for i in ids if i in found and found[i][0] not in verb.states]
    if wrong:
        allowed = describe_states(verb.states)
        lines.append(f"Left out: {_by_state(wrong)} (only {allowed} jobs can be {verb.done}).")
    steps = [i for i in ids if i in found and found[i][0] in verb.states and found[i][1] in busy]
    if steps:
        lines.append(
            f"Left out: {_jobs(len(steps))} that are steps of workflows with unfinished "
            "steps, which may read their results (cancel the workflow or let it finish first)."
        )
    return lines
