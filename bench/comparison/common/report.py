"""The report: the results table with its ratios, every drain setting's figures, the
settings used, and the `--json` document."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ..drivers import VARIANTS, WORKER_ARGS
from ..drivers.base import PROCESSES
from .counts import Counts
from .run import Result, Settings
from .tables import Target


def ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return ""
    return f"{value / reference:.2f}x"


def best_peer(group: list[Result], peers: set[str]) -> float | None:
    values = [r.value for r in group if r.system in peers and r.value is not None]
    if not values:
        return None
    return max(values) if group[0].higher_is_better else min(values)


def figure(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if value < 10 else f"{value:.1f}"


def new_table(title: str, caption: str, columns: tuple[tuple[str, str], ...]) -> Table:
    """A table with its title and caption on the left, and these (name, justify) columns."""
    table = Table(title=title, title_justify="left", caption=caption, caption_justify="left")
    for column, justify in columns:
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    return table


def results_table(results: list[Result], peers: set[str], title: str) -> Table:
    caption = (
        "vs best peer: the figure / the better of procrastinate's and pgqueuer's; "
        "vs raw SQL: / the baseline's. ↑ higher is better, ↓ lower is better. Drains: each "
        "system's best setting (every setting in the table below)."
    )
    for name, variant in VARIANTS.items():
        options = " ".join(variant.options)
        caption += f" {name}: the {variant.base} worker with {options}, not a peer."
    table = new_table(
        title,
        caption,
        (
            ("scenario", "left"),
            ("metric", "left"),
            ("system", "left"),
            ("figure", "right"),
            ("vs best peer", "right"),
            ("vs raw SQL", "right"),
            ("notes", "left"),
        ),
    )
    groups: dict[tuple[str, str], list[Result]] = {}
    for result in results:
        groups.setdefault((result.scenario, result.metric), []).append(result)
    previous = ""
    for (scenario, metric), group in groups.items():
        reference = best_peer(group, peers)
        raw = next((r.value for r in group if r.system == "raw"), None)
        for n, result in enumerate(group):
            table.add_row(
                scenario if scenario != previous else "",
                metric if n == 0 else "",
                result.system,
                figure(result.value),
                ratio(result.value, reference),
                ratio(result.value, raw),
                result.error or result.note,
                end_section=n == len(group) - 1,
            )
            previous = scenario
    return table


def drain_settings_table(drains: dict[str, dict[str, dict[str, list[float]]]]) -> Table:
    """Every drain setting's figure: the median of its rounds, which are listed too."""
    caption = (
        f"median: of the rounds; vs raw SQL: / the baseline's best setting. {PROCESSES} N: N "
        "worker processes started at once, timed from the first claim of any to the last outcome."
    )
    table = new_table(
        "Drain settings (jobs/s)",
        caption,
        (
            ("scenario", "left"),
            ("system", "left"),
            ("setting", "left"),
            ("median", "right"),
            ("vs raw SQL", "right"),
            ("rounds", "left"),
            ("", "left"),
        ),
    )
    for scenario, systems_rates in drains.items():
        medians = {
            system: {setting: statistics.median(rounds) for setting, rounds in rates.items()}
            for system, rates in systems_rates.items()
        }
        raw = max(medians.get("raw", {}).values(), default=None)
        rows = [(system, setting) for system, rates in medians.items() for setting in rates]
        for n, (system, setting) in enumerate(rows):
            median = medians[system][setting]
            table.add_row(
                scenario if n == 0 else "",
                system if n == 0 or rows[n - 1][0] != system else "",
                setting,
                figure(median),
                ratio(median, raw),
                ", ".join(f"{rate:,.0f}" for rate in systems_rates[system][setting]),
                "best" if median == max(medians[system].values()) else "",
                end_section=n == len(rows) - 1,
            )
    return table


def report(
    console: Console,
    results: list[Result],
    targets: list[Target],
    header: dict[str, str],
    settings: Settings,
    counts: Counts,
    quick: bool,
) -> None:
    peers = {t.system.name for t in targets if t.system.peer}
    console.print(" | ".join(f"{key} {value}" for key, value in header.items()))
    title = f"pgjobs beside its peers ({'--quick' if quick else 'full run'})"
    console.print(results_table(results, peers, title))
    if settings.drains:
        console.print(drain_settings_table(settings.drains))
    console.print("Settings used (worker arguments per scenario; drain: the best of those tried):")
    for system, used in settings.used.items():
        console.print(f"  {system}: " + "; ".join(f"{k}: {v}" for k, v in used.items()))
    console.print(f"Counts: {asdict(counts)}")


def write_json(
    path: Path,
    results: list[Result],
    header: dict[str, str],
    settings: Settings,
    counts: Counts,
) -> None:
    document = {
        "versions": header,
        "counts": asdict(counts),
        "worker_args": WORKER_ARGS,
        "settings": settings.used,
        "drain_settings": settings.drains,
        "results": [asdict(result) for result in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
