"""Detail panes: one adapter version (overview, config, metrics with its loss curve, evaluations,
files)."""

from __future__ import annotations

import json
from typing import Any, Iterable

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from .. import data
from .evals import EvalsPanel
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
    """The selected adapter version, in five tabs.

    Only the Overview tab is built at start-up; the others are mounted the first time they are
    shown (fewer widgets to style before the first frame), then kept up to date.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.detail: data.AdapterDetail | None = None
        self._empty_message = "no version selected"

    def compose(self) -> ComposeResult:
        with TabbedContent():
            with TabPane("Overview", id="tab-overview"):
                yield VerticalScroll(Static(id="overview"))
            yield TabPane("Config", id="tab-config")
            yield TabPane("Metrics", id="tab-metrics")
            yield TabPane("Evals", id="tab-evals")
            yield TabPane("Files", id="tab-files")

    async def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        pane = event.pane
        if pane.id in _PANE_CONTENT and not pane.children:
            await pane.mount_all(_PANE_CONTENT[pane.id]())
            self._fill(pane.id)

    def clear_detail(self, message: str = "no version selected") -> None:
        self.detail, self._empty_message = None, message
        for pane_id in ("tab-overview", *_PANE_CONTENT):
            self._fill(pane_id)

    def show(self, detail: data.AdapterDetail) -> None:
        self.detail = detail
        for pane_id in ("tab-overview", *_PANE_CONTENT):
            self._fill(pane_id)

    def _fill(self, pane_id: str) -> None:
        """Fill one tab from ``self.detail``, if that tab has been built."""
        pane = self.query_one(f"#{pane_id}", TabPane)
        if not pane.children:
            return
        detail = self.detail
        if pane_id == "tab-overview":
            pane.query_one("#overview", Static).update(
                kv_table(_overview_rows(detail)) if detail else Text(self._empty_message, style="dim"))
        elif pane_id == "tab-config":
            config = (detail.adapter.get("config") or {}) if detail else {}
            pane.query_one("#config", Static).update(
                kv_table(sorted(config.items())) if config else Text("no config recorded", style="dim"))
        elif pane_id == "tab-metrics":
            metrics = (detail.adapter.get("metrics") or {}) if detail else {}
            scalar = [(k, v) for k, v in sorted(metrics.items()) if not isinstance(v, (list, dict))]
            pane.query_one("#metrics", Static).update(
                kv_table(scalar) if scalar else Text("no final metrics recorded", style="dim"))
            pane.query_one(LossPlot).plot(detail.loss if detail else [])
        elif pane_id == "tab-evals":
            pane.query_one(EvalsPanel).show(self.app.registry, detail.adapter["id"] if detail else None)
        elif pane_id == "tab-files":
            _show_files(pane.query_one("#files", DataTable), detail)


def _files_table() -> DataTable:
    table = DataTable(id="files", cursor_type="row", zebra_stripes=True)
    table.add_column("File", key="file")
    table.add_column("Size", key="size")
    return table


_PANE_CONTENT = {
    "tab-config": lambda: [VerticalScroll(Static(id="config"))],
    "tab-metrics": lambda: [VerticalScroll(LossPlot(id="loss-plot"), Static(id="metrics"))],
    "tab-evals": lambda: [EvalsPanel(id="evals")],
    "tab-files": lambda: [_files_table()],
}


def _show_files(files: DataTable, detail: data.AdapterDetail | None) -> None:
    files.clear()
    if detail is None:
        return
    if detail.files_error:
        files.add_row(Text(detail.files_error, style="red"), "")
        return
    total = 0
    for entry in detail.files:
        total += entry.size
        files.add_row(entry.path, Text(data.human_size(entry.size), justify="right"))
    files.add_row(Text(f"{len(detail.files)} files", style="bold"),
                  Text(data.human_size(total), style="bold", justify="right"))


def _overview_rows(detail: data.AdapterDetail) -> list[tuple[str, Any]]:
    adapter = detail.adapter
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
    rows.extend(_record_rows(adapter.record))
    rows.append(("serving", detail.serving or None))
    return [(k, v) for k, v in rows if v is not None or k != "serving"]


def _record_rows(record) -> list[tuple[str, Any]]:
    """How the version was made, from its record (adaptr/records.py: the one schema)."""
    rows: list[tuple[str, Any]] = [("made by", record.trainer or record.producer), ("mode", record.mode)]
    if record.data:
        rows.append(("data", f"{record.data.path} ({record.data.rows} rows, {record.data.format})"))
    if record.merge:
        weights = ", ".join(f"{p} x{w:g}" for p, w in zip(record.merge.parents, record.merge.weights))
        rows.append(("merge", f"{record.merge.method}: {weights}"))
    rows += [("imported from", record.imported_from), ("seed", record.seed),
             ("reference", record.reference_policy), ("quantize", record.quantize)]
    if record.parameters:
        rows.append(("trainable parameters", f"{record.parameters.trainable:,} of {record.parameters.total:,} "
                                             f"({record.parameters.trainable_percent:.2f}%)"))
    if record.speed and record.speed.tokens_per_second:
        rows.append(("tokens/s", f"{record.speed.tokens_per_second:,.0f}"))
    if record.memory:
        peak = record.memory.gpu_peak_allocated_bytes or record.memory.cpu_peak_rss_bytes
        where = "GPU" if record.memory.gpu_peak_allocated_bytes else "CPU RSS"
        rows.append(("peak memory", f"{data.human_size(peak)} ({where})" if peak else None))
    if record.libraries:
        shown = ("torch", "transformers", "peft", "trl")
        rows.append(("libraries", ", ".join(f"{k} {record.libraries[k]}" for k in shown if k in record.libraries)))
    if record.pulled_from:
        rows.append(("pulled from", f"{record.pulled_from.get('repo')} @ {(record.pulled_from.get('commit') or '')[:10]}"))
    return [(k, v) for k, v in rows if v not in (None, "", [])]
