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
from ..drivers.base import PROCESSES, processes_of
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


Medians = dict[str, dict[str, float]]  # system -> setting -> median of its rounds


def drain_medians(settings: Settings, scenario: str) -> tuple[Medians, dict[str, Medians]]:
    """Each setting's median rate, and its median CPU per job by `DrainCpu.per_job` key."""
    rates = {
        system: {setting: statistics.median(rounds) for setting, rounds in by_setting.items()}
        for system, by_setting in settings.drains[scenario].items()
    }
    cpu: dict[str, Medians] = {}
    for system, by_setting in settings.cpu.get(scenario, {}).items():
        for setting, rounds in by_setting.items():
            for key in ("server_us", "client_us"):
                values = [figures[key] for figures in rounds]
                cpu.setdefault(key, {}).setdefault(system, {})[setting] = statistics.median(values)
    return rates, cpu


def best_setting(rates: dict[str, float]) -> str | None:
    return max(rates, key=lambda setting: rates[setting]) if rates else None


def drain_settings_table(settings: Settings) -> Table:
    """Every drain setting's figures: the median of its rounds (which are listed too) of
    its rate and of its CPU per job."""
    caption = (
        f"median: of the rounds; vs raw SQL: / the baseline's best setting's (by jobs/s). "
        f"{PROCESSES} N: N worker processes started at once, timed from the first claim of any "
        "to the last outcome. CPU: µs per job between the same two instants, of the backends "
        "serving the drain (server) and of the worker processes (client)."
    )
    table = new_table(
        "Drain settings (jobs/s, CPU µs/job)",
        caption,
        (
            ("scenario", "left"),
            ("system", "left"),
            ("setting", "left"),
            ("median", "right"),
            ("vs raw SQL", "right"),
            ("server", "right"),
            ("vs raw SQL", "right"),
            ("client", "right"),
            ("vs raw SQL", "right"),
            ("rounds (jobs/s)", "left"),
            ("", "left"),
        ),
    )
    for scenario, systems_rates in settings.drains.items():
        medians, cpu = drain_medians(settings, scenario)
        raw_best = best_setting(medians.get("raw", {}))
        raw = medians["raw"][raw_best] if raw_best else None
        raw_cpu = {key: by.get("raw", {}).get(raw_best or "") for key, by in cpu.items()}
        rows = [(system, setting) for system, rates in medians.items() for setting in rates]
        for n, (system, setting) in enumerate(rows):
            median = medians[system][setting]
            server = cpu.get("server_us", {}).get(system, {}).get(setting)
            client = cpu.get("client_us", {}).get(system, {}).get(setting)
            table.add_row(
                scenario if n == 0 else "",
                system if n == 0 or rows[n - 1][0] != system else "",
                setting,
                figure(median),
                ratio(median, raw),
                figure(server),
                ratio(server, raw_cpu.get("server_us")),
                figure(client),
                ratio(client, raw_cpu.get("client_us")),
                ", ".join(f"{rate:,.0f}" for rate in systems_rates[system][setting]),
                "best" if setting == best_setting(medians[system]) else "",
                end_section=n == len(rows) - 1,
            )
    return table


def drain_figures(
    rates: Medians, cpu: dict[str, Medians], system: str, setting: str | None
) -> list[float | None]:
    """A setting's median jobs/s, server and client CPU per job, and their sum."""
    if setting is None or setting not in rates.get(system, {}):
        return [None] * 4
    server = cpu.get("server_us", {}).get(system, {}).get(setting)
    client = cpu.get("client_us", {}).get(system, {}).get(setting)
    total = None if server is None or client is None else server + client
    return [rates[system][setting], server, client, total]


def cpu_table(settings: Settings) -> Table:
    """Per system, its best setting (by rate) in one worker process and in several: rate
    and CPU per job, each against raw SQL's best setting's."""
    caption = (
        "Each system's best setting by jobs/s among those of one worker process, and among "
        "those of several; vs raw: / raw SQL's best setting's (by jobs/s) figure. server: "
        "the backends serving the drain, client: the worker processes, µs of CPU per job "
        "from the first claim to the last outcome (medians of the rounds)."
    )
    columns = ("jobs/s", "server µs/job", "client µs/job", "total µs/job")
    table = new_table(
        "CPU per job drained",
        caption,
        (
            ("scenario", "left"),
            ("system", "left"),
            ("processes", "right"),
            ("best setting", "left"),
            *((name, "right") for column in columns for name in (column, "vs raw")),
        ),
    )
    for scenario in settings.drains:
        rates, cpu = drain_medians(settings, scenario)
        raw = drain_figures(rates, cpu, "raw", best_setting(rates.get("raw", {})))
        rows: list[tuple[str, str, str | None]] = []
        for system, by_setting in rates.items():
            by_count: dict[str, dict[str, float]] = {}
            for setting, rate in by_setting.items():
                several = processes_of(setting.split())[0] > 1
                by_count.setdefault("2+" if several else "1", {})[setting] = rate
            rows += [(system, count, best_setting(by_count[count])) for count in sorted(by_count)]
        for n, (system, count, best) in enumerate(rows):
            values = drain_figures(rates, cpu, system, best)
            cells = [
                cell
                for value, reference in zip(values, raw, strict=True)
                for cell in (figure(value), ratio(value, reference))
            ]
            table.add_row(
                scenario if n == 0 else "",
                system if n == 0 or rows[n - 1][0] != system else "",
                count,
                best or "",
                *cells,
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
        console.print(drain_settings_table(settings))
        console.print(cpu_table(settings))
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
        "drain_cpu": settings.cpu,
        "results": [asdict(result) for result in results],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
