"""The runs view: live status, progress and log tail of every run; cancel or resume the selected one.

It never reads the registry itself: the app polls in a worker thread and hands each
:class:`~adaptr.tui.backend.RunsSnapshot` to :meth:`RunsScreen.apply`.
"""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, Log, ProgressBar, Static
from textual.widgets.data_table import RowDoesNotExist

from ...entities import ACTIVE_STATUSES
from .. import data
from ..backend import RunsSnapshot
from ..widgets.footer import KeyFooter
from ..widgets.detail import kv_table

STATUS_STYLE = {"queued": "yellow", "running": "bold cyan", "succeeded": "green", "failed": "bold red",
                "interrupted": "magenta", "cancelled": "dim"}
COLUMNS = (("id", "Run"), ("stage", "Stage"), ("status", "Status"), ("progress", "Progress"),
           ("output", "Output"), ("created", "Created (UTC)"), ("where", "Executor"))


def run_cells(run: dict) -> tuple:
    total = run.get("progress_total")
    step = run.get("progress_step") or 0
    progress = f"{step}/{total}" if total else (str(step) if step else "")
    where = run.get("executor") or "local"
    if run.get("gpus"):
        where += f" gpu {run['gpus']}"
    return (run["id"], run["stage"], Text(run["status"], style=STATUS_STYLE.get(run["status"], "")),
            Text(progress, justify="right"), run.get("output_ref") or "",
            data.short_time(run["created_at"]), where)


class RunsScreen(Screen):
    BINDINGS = [
        Binding("c", "app.cancel_run", "Cancel run"),
        Binding("r", "app.resume_run", "Resume run"),
        Binding("o", "open_output", "Open output"),
        Binding("n", "app.launch", "Launch"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: dict[str, dict] = {}
        self._order: list[str] = []
        self._cells: dict[str, tuple] = {}
        self._tail: list[str] | None = None
        self.selected_id: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="runs-main"):
            yield DataTable(id="runs", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="run-bottom"):
                with Vertical(id="run-info-box"):
                    yield ProgressBar(id="run-progress", show_eta=False)
                    yield VerticalScroll(Static(id="run-info"))
                with Vertical(id="log-box"):
                    yield Static("Log", classes="box-title", id="log-title")
                    yield Log(id="run-log", max_lines=2000)
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        table.focus()
        if self.app.runs_snapshot is not None:
            self.apply(self.app.runs_snapshot)
        else:
            self.query_one("#run-info", Static).update(Text("loading runs…", style="dim"))

    def on_screen_resume(self) -> None:
        self.app.poll_runs_now()

    # -- applying a poll -------------------------------------------------------------------

    def apply(self, snapshot: RunsSnapshot) -> None:
        self.runs = {run["id"]: run for run in snapshot.runs}
        order = [run["id"] for run in snapshot.runs]
        table = self.query_one("#runs", DataTable)
        if order != self._order:
            self._rebuild(table, snapshot.runs)
        else:
            self._update_changed(table, snapshot.runs)
        if not snapshot.runs:
            for info in self.query("#run-info"):  # absent while the screen is still being composed
                info.update(Text("no runs yet: press n to launch one", style="dim"))
        if self.selected_id in self.runs:
            self._show(self.runs[self.selected_id])
            if snapshot.tail_run_id == self.selected_id:
                self._show_tail(snapshot.tail)

    def _rebuild(self, table: DataTable, runs: list[dict]) -> None:
        keep = self.selected_id
        table.clear()
        self._cells = {}
        for run in runs:
            cells = run_cells(run)
            self._cells[run["id"]] = cells
            table.add_row(*cells, key=run["id"])
        self._order = [run["id"] for run in runs]
        if keep in self._cells:
            self.select_run(keep)
        elif runs:
            self._select(runs[0]["id"])

    def _update_changed(self, table: DataTable, runs: list[dict]) -> None:
        for run in runs:
            cells = run_cells(run)
            old = self._cells.get(run["id"])
            if old == cells:
                continue
            for (key, _), value, before in zip(COLUMNS, cells, old or ()):
                if value != before:
                    table.update_cell(run["id"], key, value)
            self._cells[run["id"]] = cells

    def select_run(self, run_id: str) -> bool:
        if not self.is_mounted:
            self.selected_id = run_id  # selected when the first poll arrives
            return False
        table = self.query_one("#runs", DataTable)
        try:
            table.move_cursor(row=table.get_row_index(run_id))
        except RowDoesNotExist:
            return False
        self._select(run_id)
        return True

    @on(DataTable.RowHighlighted, "#runs")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None and event.row_key.value != self.selected_id:
            self._select(event.row_key.value)

    def _select(self, run_id: str) -> None:
        self.selected_id = run_id
        self._tail = None
        self.query_one("#run-log", Log).clear()
        self.query_one("#log-title", Static).update(f"Log of {run_id}")
        if run_id in self.runs:
            self._show(self.runs[run_id])
        if self.app.tail_run_id != run_id:
            self.app.tail_run_id = run_id
            self.app.poll_runs_now()

    def _show(self, run: dict) -> None:
        bar = self.query_one("#run-progress", ProgressBar)
        total = run.get("progress_total")
        if total:
            bar.update(total=total, progress=run.get("progress_step") or 0)
        elif run["status"] in ACTIVE_STATUSES:
            bar.update(total=None)
        else:
            bar.update(total=1, progress=1 if run["status"] == "succeeded" else 0)
        self.query_one("#run-info", Static).update(kv_table(_info_rows(run)))

    def _show_tail(self, lines: list[str]) -> None:
        if lines == self._tail:
            return
        log = self.query_one("#run-log", Log)
        old = self._tail or []
        # The tail is a sliding window: append what is new when the old window is its prefix.
        if old and lines[:len(old)] == old:
            log.write_lines(lines[len(old):])
        else:
            log.clear()
            log.write_lines(lines)
        self._tail = list(lines)

    @property
    def selected_run(self) -> dict | None:
        return self.runs.get(self.selected_id) if self.selected_id else None

    def action_open_output(self) -> None:
        run = self.selected_run
        if run and run.get("output_ref"):
            if run.get("output_kind") == "base":
                self.app.show_base(run["output_ref"])
            else:
                self.app.show_adapter(run["output_ref"])
        else:
            self.app.notify("this run has not published a version", severity="warning")


def _info_rows(run: dict) -> list[tuple[str, object]]:
    request = run.get("request") or {}
    rows: list[tuple[str, object]] = [
        ("run", Text(run["id"], style="bold")),
        ("status", Text(run["status"], style=STATUS_STYLE.get(run["status"], ""))),
        ("stage", run["stage"]),
        ("from", request.get("parent") or request.get("base")),
        ("mode", request.get("mode") if request.get("parent") else None),
        ("data", request.get("data")),
        ("output", run.get("output_ref")),
        ("progress", f"{run.get('progress_step') or 0} / {run.get('progress_total') or '?'}"),
        ("executor", run.get("executor")),
        ("gpus", run.get("gpus")),
        ("pid", run.get("pid")),
        ("created", data.short_time(run.get("created_at"))),
        ("started", data.short_time(run.get("started_at"))),
        ("ended", data.short_time(run.get("ended_at"))),
    ]
    if run.get("resumed_from_run"):
        rows.append(("resumed from", f"{run['resumed_from_run']} @ step {run.get('resumed_from_step')}"))
    if run.get("error"):
        rows.append(("error", Text(run["error"], style="red")))
    return [(k, v) for k, v in rows if v not in (None, "")]
