"""docs/hooks.md's examples, run as written: each module block is saved under the name
its first line gives and imported; the blocks that use them run against the test's
connection. The Sentry recipe reports through the real Sentry SDK, its events captured
by a transport that keeps them in memory."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from pgjobs import App
from pgjobs.testing import Jobs
from tests.helpers import REPO_ROOT
from tests.helpers.readme import code_blocks

BLOCKS = code_blocks((REPO_ROOT / "docs" / "hooks.md").read_text(), "python")
Connection = psycopg.Connection[Any]


@pytest.fixture
def modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, database_url: str, schema: str
) -> Iterator[None]:
    """The page's module blocks (`# name.py` first line) importable, on the test's schema."""
    for block in BLOCKS:
        first = block.splitlines()[0]
        if first.startswith("# ") and first.endswith(".py"):
            (tmp_path / first[2:]).write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PGJOBS_DATABASE_URL", database_url)
    monkeypatch.setenv("PGJOBS_SCHEMA", schema)
    names = ("shop_hooks", "tenants", "sentry_hooks")
    yield
    for name in names:
        module = sys.modules.pop(name, None)
        if module is not None:
            module.app.close()


def block_using(text: str) -> str:
    return next(block for block in BLOCKS if text in block and not block.startswith("# "))


def test_the_first_example_runs_in_a_test(modules: None, test_conn: Connection) -> None:
    exec(block_using("from shop_hooks import"), {"conn": test_conn})
    shop = importlib.import_module("shop_hooks")
    assert len(shop.failures) == 1


def test_tenant_middleware_and_meta_option(modules: None, test_conn: Connection) -> None:
    tenants = importlib.import_module("tenants")
    exec(block_using("from tenants import whose"), {"conn": test_conn})
    tenants.whose_async.options(meta={"tenant": "globex"}).enqueue(test_conn)
    tenants.whose.enqueue(test_conn)
    with Jobs(tenants.app, test_conn) as jobs:
        jobs.run()
        values = sorted((job.task, str(job.result)) for job in jobs.find(state="completed"))
    assert values == [
        ("tenants.whose", "None"),
        ("tenants.whose", "acme"),
        ("tenants.whose_async", "globex"),
    ]


def test_a_generator_enqueue_middleware_as_the_docs_show(app: App, test_conn: Connection) -> None:
    namespace: dict[str, Any] = {}
    exec(block_using("def note_ids"), namespace)
    example: App = namespace["app"]
    example.configure(database_url=app.database.url, schema=app.schema)
    ids = example.enqueue_many(test_conn, [("any.task", {}), ("any.task", {})])
    assert namespace["written"] == [ids]
    with Jobs(example, test_conn) as jobs:
        assert [jobs.get(job_id).meta for job_id in ids] == [{"source": "signup"}] * 2
    example.close()


def test_the_sentry_recipe_reports_a_failed_job(modules: None, test_conn: Connection) -> None:
    import sentry_sdk
    from sentry_sdk.envelope import Envelope
    from sentry_sdk.transport import Transport

    sent: list[dict[str, Any]] = []

    class Captured(Transport):
        def capture_envelope(self, envelope: Envelope) -> None:
            sent.extend(item.payload.json for item in envelope.items if item.payload.json)

    sentry_sdk.init(dsn="https://key@sentry.invalid/1", transport=Captured)
    try:
        recipe = importlib.import_module("sentry_hooks")
        with Jobs(recipe.app, test_conn) as jobs:
            job_id = recipe.import_feed.enqueue(test_conn, url="https://feed.invalid")
            assert jobs.run().counts == {"failed": 1}
        sentry_sdk.flush()
    finally:
        sentry_sdk.init()  # no DSN: the SDK sends nothing from here on

    [event] = [payload for payload in sent if payload.get("exception")]
    [exception] = event["exception"]["values"]
    assert exception["type"] == "ConnectionError"
    assert exception["value"] == "https://feed.invalid did not answer"
    assert event["tags"] == {"pgjobs.task": "sentry_hooks.import_feed", "pgjobs.queue": "default"}
    assert event["contexts"]["pgjobs"] == {
        "job_id": job_id,
        "attempt": 1,
        "args": {"url": "https://feed.invalid"},
    }
