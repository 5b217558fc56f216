"""Detail panes: one adapter version (overview, config, metrics with its loss curve, files)."""

from __future__ import annotations

import json
from typing import Any, Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from .. import data
from .loss_plot import LossPlot


def kv_table(rows: Iterable[tuple[str, Any]]) -> Table:
    """A borderless two-column table of labels and values."""
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold cyan", no_wrap=True)
    table.add_column(overflow="fold")
    for key, value in rows:
        table.add_row(key, value if isinstance(value, Text) else Text(_plain(value)))
    return table


def _plain(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True, default=str)
    return str(value)


def parents_text(parents: list[dict]) -> Text:
    text = Text()
    for i, parent in enumerate(parents):
        if i:
            text.append(", ")
        text.append(parent["ref"], style="bold")
        text.append(f" ({parent['relation']})", style="dim")
    return text or Text("none", style="dim")


class AdapterDetailPane(Vertical):
    """The selected adapter version, in four tabs."""

    def compose(self) -> ComposeResult:
        with TabbedContent():
            with TabPane("Overview", id="tab-overview"):
                yield VerticalScroll(Static(id="overview"))
            with TabPane("Config", id="tab-config"):
                yield VerticalScroll(Static(id="config"))
            with TabPane("Metrics", id="tab-metrics"):
                yield VerticalScroll(LossPlot(id="loss-plot"), Static(id="metrics"))
            with TabPane("Files", id="tab-files"):
                yield DataTable(id="files", cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        files = self.query_one("#files", DataTable)
        files.add_column("File", key="file")
        files.add_column("Size", key="size")

    def clear_detail(self, message: str = "no version selected") -> None:
        self.query_one("#overview", Static).update(Text(message, style="dim"))
        self.query_one("#config", Static).update("")
        self.query_one("#metrics", Static).update("")
        self.query_one(LossPlot).plot([])
        self.query_one("#files", DataTable).clear()

    def show(self, detail: data.AdapterDetail) -> None:
        adapter = detail.adapter
        self.query_one("#overview", Static).update(kv_table(_overview_rows(adapter, detail)))
        config = adapter.get("config") or {}
        self.query_one("#config", Static).update(
            kv_table(sorted(config.items())) if config else Text("no config recorded", style="dim"))
        metrics = adapter.get("metrics") or {}
        scalar = [(k, v) for k, v in sorted(metrics.items()) if not isinstance(v, (list, dict))]
        self.query_one("#metrics", Static).update(
            kv_table(scalar) if scalar else Text("no final metrics recorded", style="dim"))
        self.query_one(LossPlot).plot(detail.loss)
        self._show_files(detail)

    def _show_files(self, detail: data.AdapterDetail) -> None:
        files = self.query_one("#files", DataTable)
        files.clear()
        if detail.files_error:
            files.add_row(Text(detail.files_error, style="red"), "")
            return
        total = 0
        for entry in detail.files:
            total += entry.size
            files.add_row(entry.path, Text(data.human_size(entry.size), justify="right"))
        files.add_row(Text(f"{len(detail.files)} files", style="bold"),
                      Text(data.human_size(total), style="bold", justify="right"))


def _overview_rows(adapter: dict, detail: data.AdapterDetail) -> list[tuple[str, Any]]:
    record = adapter.get("record") or {}
    name, value = data.key_metric(adapter.get("metrics") or {})
    rows: list[tuple[str, Any]] = [
        ("ref", Text(adapter["ref"], style="bold")),
        ("base", adapter["base"]),
        ("stage", adapter["stage"]),
        ("status", adapter["status"]),
        ("created", data.short_time(adapter["created_at"]) + " UTC"),
        ("parents", parents_text(adapter.get("parents") or [])),
        ("aliases", ", ".join(adapter.get("aliases") or []) or None),
        (name or "loss", f"{value:.4f}" if value is not None else None),
        ("run", adapter.get("run_id")),
        ("sha256", (adapter.get("sha256") or "")[:16]),
        ("path", detail.relative_path),
    ]
    if adapter.get("hub_repo"):
        rows.append(("hub", f"{adapter['hub_repo']} @ {(adapter.get('hub_commit') or '')[:10]}"))
    for key in ("dataset", "seed", "trainable_parameters", "total_parameters", "tokens_per_second",
                "peak_memory_allocated", "library_versions"):
        if key in record:
            rows.append((key.replace("_", " "), record[key]))
    shown = {"dataset", "seed", "trainable_parameters", "total_parameters", "tokens_per_second",
             "peak_memory_allocated", "library_versions", "loss_curve"}
    rows.extend((k.replace("_", " "), v) for k, v in sorted(record.items()) if k not in shown)
    return rows
