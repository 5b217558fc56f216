"""The adapters view: a filterable table of every version, its details and its lineage."""

from __future__ import annotations

import time

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.timer import Timer
from textual.widgets import DataTable, Header, Input, Static

from ...errors import AdaptrError
from .. import data
from ..widgets.footer import KeyFooter
from ..widgets.adapter_table import AdapterTable
from .. import evaldata
from ..widgets.detail import AdapterDetailPane
from ..widgets.evals import EvalsPanel
from ..widgets.lineage import LineageTree

FILTER_HELP = "filter: words, or base:NAME stage:NAME status:NAME name:NAME"
# Holding a cursor key moves faster than details can be drawn; show them at most this often.
DETAIL_INTERVAL_S = 0.12


class AdaptersScreen(Screen):
    BINDINGS = [
        Binding("slash", "focus_filter", "Filter"),
        Binding("escape", "clear_filter", "Clear filter", show=False),
        Binding("n", "app.launch", "Launch"),
        Binding("p", "app.push", "Push"),
        Binding("m", "app.merge", "Merge"),
        Binding("t", "focus_lineage", "Lineage"),
        Binding("e", "show_evals", "Evals"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.filter = data.AdapterFilter()
        self.selected: dict | None = None
        self.total = 0
        self._last_detail = 0.0
        self._detail_timer: Timer | None = None
        self._filter_timer: Timer | None = None
        self._pending_id: int | None = None
        self._pending_call = None  # a selection asked for before the view was mounted
        self.metric_choice = None  # the metric chosen in the Evals tab, shown in the lineage tree

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="adapters-main"):
            with Horizontal(classes="filter-bar"):
                yield Input(placeholder=FILTER_HELP, id="filter")
                yield Static("", id="adapter-count")
            yield AdapterTable(id="adapters")
            with Horizontal(id="adapter-bottom"):
                yield AdapterDetailPane(id="adapter-detail")
                with Vertical(id="lineage-box"):
                    yield Static("Lineage", classes="box-title")
                    yield LineageTree(id="lineage")
        yield KeyFooter()

    def on_mount(self) -> None:
        self.reload()
        self.query_one(AdapterTable).focus()
        if self._pending_call:
            self._pending_call()

    @property
    def registry(self):
        return self.app.registry

    # -- loading ---------------------------------------------------------------------------

    def reload(self, keep_selection: bool = False) -> None:
        """Read the first page for the current filter (keeping the selected version if asked)."""
        table = self.query_one(AdapterTable)
        keep = self.selected["id"] if keep_selection and self.selected else None
        self.selected = None
        table.reset()
        self.total = data.adapter_count(self.registry, self.filter)
        self._load_next_page()
        if table.row_count == 0:
            self.query_one(AdapterDetailPane).clear_detail(
                "no adapter versions match the filter" if self.filter.exact or self.filter.words
                else "no adapter versions yet: press n to launch a run")
            self.query_one(LineageTree).clear()
        elif keep is not None and self._ensure_loaded(keep):
            table.move_cursor(row=table.row_index_of(keep))
            self._show_detail(keep)
        else:
            self._show_detail(table.adapter_id_at(table.cursor_row))

    def _load_next_page(self) -> None:
        table = self.query_one(AdapterTable)
        rows = data.adapter_page(self.registry, self.filter, offset=table.row_count)
        loaded = table.row_count + len(rows)
        table.load(rows, exhausted=len(rows) < data.PAGE_SIZE or loaded >= self.total)
        self._update_count()

    def _update_count(self) -> None:
        table = self.query_one(AdapterTable)
        label = f"{self.total:,} versions"
        if self.filter.exact or self.filter.words:
            label = f"{self.total:,} match"
        if table.row_count < self.total:
            label += f" ({table.row_count:,} loaded)"
        self.query_one("#adapter-count", Static).update(label)

    def _ensure_loaded(self, adapter_id: int) -> bool:
        """Load pages until ``adapter_id``'s row is in the table; False if the filter hides it."""
        table = self.query_one(AdapterTable)
        if table.row_index_of(adapter_id) is not None:
            return True
        position = data.adapter_position(self.registry, self.filter, adapter_id)
        if position is None:
            return False
        while table.row_count <= position and not table.exhausted:
            self._load_next_page()
        return table.row_index_of(adapter_id) is not None

    @on(AdapterTable.NeedMore)
    def _more(self) -> None:
        if not self.query_one(AdapterTable).exhausted:
            self._load_next_page()

    @on(AdapterTable.NeedAll)
    def _all(self) -> None:
        """Load the remaining rows a few pages at a time, keeping the UI live, then go to the end."""
        table = self.query_one(AdapterTable)
        for _ in range(5):
            if not table.exhausted:
                self._load_next_page()
        if table.exhausted:
            table.action_scroll_bottom()
        else:
            self.call_later(self._all)

    # -- selection and details -------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#adapters")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        adapter_id = self.query_one(AdapterTable).adapter_id_at(event.cursor_row)
        if adapter_id is None:
            return
        self._pending_id = adapter_id
        if self._detail_timer is not None:
            self._detail_timer.stop()
        wait = DETAIL_INTERVAL_S - (time.monotonic() - self._last_detail)
        if wait <= 0:
            self._show_detail(adapter_id)
        else:
            self._detail_timer = self.set_timer(wait, lambda: self._show_detail(self._pending_id))

    def _show_detail(self, adapter_id: int | None) -> None:
        self._last_detail = time.monotonic()
        if adapter_id is None or (self.selected and self.selected["id"] == adapter_id):
            return
        try:
            detail = data.adapter_detail(self.registry, adapter_id)
            ancestors = self.registry.ancestors(adapter_id, bases=True)
            descendants = self.registry.descendants(adapter_id)
        except AdaptrError as exc:
            self.app.show_error(exc)
            return
        self.selected = detail.adapter
        self.query_one(AdapterDetailPane).show(detail)
        self.query_one(LineageTree).show(detail.adapter, ancestors, descendants)
        self._annotate_lineage()

    @on(EvalsPanel.MetricChosen)
    def _metric_chosen(self, event: EvalsPanel.MetricChosen) -> None:
        self.metric_choice = event.choice
        self._annotate_lineage()

    def _annotate_lineage(self) -> None:
        """The chosen metric's value and change from the parent beside each node of the tree."""
        if self.metric_choice is None or self.selected is None:
            return
        tree = self.query_one(LineageTree)
        ids = {self.selected["id"]}
        stack = [tree.root]
        while stack:
            node = stack.pop()
            stack.extend(node.children)
            if node.data is not None and node.data.id is not None:
                ids.add(node.data.id)
        tree.annotate(evaldata.annotations(self.registry, self.metric_choice, ids))

    def select_ref(self, ref: str) -> None:
        """Show version ``ref``: find its row (loading pages, or clearing the filter if needed)."""
        if not self.is_mounted:
            self._pending_call = lambda: self.select_ref(ref)
            return
        try:
            adapter = self.registry.resolve(ref)
        except AdaptrError as exc:
            self.app.show_error(exc)
            return
        if not self._ensure_loaded(adapter["id"]):
            self.set_filter("")
            self._ensure_loaded(adapter["id"])
        table = self.query_one(AdapterTable)
        row = table.row_index_of(adapter["id"])
        if row is not None:
            table.move_cursor(row=row)
        self._show_detail(adapter["id"])

    @on(LineageTree.Jump)
    def _jump(self, event: LineageTree.Jump) -> None:
        if event.node.kind == "base":
            self.app.show_base(event.node.ref)
        else:
            self.select_ref(event.node.ref)
            self.query_one(AdapterTable).focus()

    # -- filter ----------------------------------------------------------------------------

    def set_filter(self, text: str) -> None:
        """Apply filter text now (also used by the Bases view to list a base's adapters)."""
        if not self.is_mounted:
            self._pending_call = lambda: self.set_filter(text)
            return
        filter_input = self.query_one("#filter", Input)
        if filter_input.value != text:
            with filter_input.prevent(Input.Changed):
                filter_input.value = text
        self.filter = data.AdapterFilter.parse(text)
        self.reload()

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self._filter_timer = self.set_timer(0.15, lambda: self.set_filter(event.value))

    @on(Input.Submitted, "#filter")
    def _filter_submitted(self, event: Input.Submitted) -> None:
        if self._filter_timer is not None:
            self._filter_timer.stop()
        self.set_filter(event.value)
        self.query_one(AdapterTable).focus()

    def action_focus_filter(self) -> None:
        self.query_one("#filter", Input).focus()

    def action_clear_filter(self) -> None:
        if self.query_one("#filter", Input).value:
            self.set_filter("")
        self.query_one(AdapterTable).focus()

    def action_focus_lineage(self) -> None:
        self.query_one(LineageTree).focus()

    def action_show_evals(self) -> None:
        """Open the Evals tab: results, their chart along the chain, generations beside the parent's."""
        self.query_one(AdapterDetailPane).query_one("TabbedContent").active = "tab-evals"
