"""The README and the docs site, checked without building it (`mkdocs build --strict` does).

The README stays a first read; everything else is a page of `docs/`, listed in the `nav` of
`mkdocs.yml`. The code blocks that tests run or compare are checked where they are used:
`test_readme_quickstart.py`, `test_testing_example.py`, `test_examples_async.py`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import REPO_ROOT
from tests.helpers.readme import code_blocks, doc_section

DOCS = REPO_ROOT / "docs"
README_MAX_LINES = 300


class _MkDocsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading MkDocs' own tags (`!relative`, `!ENV`) as None."""


_MkDocsLoader.add_multi_constructor("!", lambda loader, suffix, node: None)


def nav_pages(nav: Any) -> Iterator[str]:
    """Every page of a MkDocs `nav`: its entries are paths, `{title: path}` or sections."""
    if isinstance(nav, str):
        yield nav
    elif isinstance(nav, list):
        for entry in nav:
            yield from nav_pages(entry)
    elif isinstance(nav, dict):
        for value in nav.values():
            yield from nav_pages(value)


@pytest.fixture(scope="module")
def nav() -> list[str]:
    config = yaml.load((REPO_ROOT / "mkdocs.yml").read_text(), Loader=_MkDocsLoader)
    assert config["docs_dir"] == "docs"
    return list(nav_pages(config["nav"]))


def test_the_readme_is_at_most_300_lines() -> None:
    lines = (REPO_ROOT / "README.md").read_text().count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail to docs/"


def test_every_page_of_the_nav_exists_and_every_page_is_in_it(nav: list[str]) -> None:
    missing = [page for page in nav if not (DOCS / page).is_file()]
    assert missing == [], f"pages in the nav of mkdocs.yml but not in docs/: {missing}"
    assert len(nav) == len(set(nav)), f"a page is twice in the nav: {nav}"
    pages = sorted(str(path.relative_to(DOCS)) for path in DOCS.rglob("*.md"))
    assert sorted(nav) == pages, "every page of docs/ should be in the nav of mkdocs.yml"


def test_the_readmes_links_to_the_docs_lead_to_pages() -> None:
    links = re.findall(r"\]\((docs/[^)#]*)", (REPO_ROOT / "README.md").read_text())
    assert links, "the README links to no docs page"
    broken = [link for link in links if not (REPO_ROOT / link).is_file()]
    assert broken == [], f"the README links to docs pages that do not exist: {broken}"


def test_the_first_page_takes_the_readmes_getting_started_section() -> None:
    readme = (REPO_ROOT / "README.md").read_text()
    marker = "--8<-- [{}:getting-started]"
    start, end = readme.index(marker.format("start")), readme.index(marker.format("end"))
    assert start < readme.index("## Quickstart") < end
    assert '--8<-- "README.md:getting-started"' in (DOCS / "index.md").read_text()


def test_the_docs_grant_what_the_least_privilege_test_applies() -> None:
    from tests.test_least_privilege import GRANTS, PRODUCER_GRANTS  # imports pgjobs

    [shown] = code_blocks(doc_section(Path("docs/guarantees.md"), "Least privilege"), "sql")
    for template, role in ((GRANTS, "pgjobs_worker"), (PRODUCER_GRANTS, "app_producer")):
        for grant in filter(None, template.strip().splitlines()):
            statement = grant.format(schema="pgjobs", role=role)
            assert statement in shown, f"docs/guarantees.md does not show {statement!r}"
