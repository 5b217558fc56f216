"""The adapters table: rows arrive a page at a time as the user scrolls towards the end."""

from __future__ import annotations

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable
from textual.widgets.data_table import RowDoesNotExist

from .. import data

STATUS_STYLE = {"ready": "green", "failed": "red", "deleted": "dim"}
COLUMNS = (("ref", "Ref"), ("base", "Base"), ("stage", "Stage"), ("status", "Status"),
           ("created", "Created (UTC)"), ("metric", "Loss"))
# Ask for the next page while this many loaded rows are still below the cursor or viewport.
PREFETCH_MARGIN = 40


class AdapterTable(DataTable):
    """A DataTable of :class:`data.AdapterRow` that asks for more rows near its end."""

    class NeedMore(Message):
        """The user is near the last loaded row; the screen should append the next page."""

    class NeedAll(Message):
        """The user jumped to the end (ctrl+end); the screen should load every remaining row."""

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.exhausted = False
        self._asked = False
        self._loading = False

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def reset(self) -> None:
        self.clear()
        self.exhausted = False
        self._asked = False

    def load(self, rows: list[data.AdapterRow], exhausted: bool) -> None:
        """Append a page, keyed by adapter id."""
        self._loading = True  # cursor watchers fire while rows are added; ignore them until done
        for r in rows:
            self.add_row(Text(r.ref, style="bold"), r.base, r.stage,
                         Text(r.status, style=STATUS_STYLE.get(r.status, "")),
                         data.short_time(r.created_at), _metric_cell(r), key=str(r.id))
        self.exhausted = exhausted
        self._asked = False
        self._loading = False
        self._check_near_end()

    def action_scroll_bottom(self) -> None:
        if not self.exhausted:
            self.post_message(self.NeedAll())  # the screen loads the rest, then moves here
            return
        super().action_scroll_bottom()

    def adapter_id_at(self, row_index: int) -> int | None:
        if not 0 <= row_index < self.row_count:
            return None
        key = self.coordinate_to_cell_key((row_index, 0)).row_key
        return int(key.value) if key.value is not None else None

    def row_index_of(self, adapter_id: int) -> int | None:
        try:
            return self.get_row_index(str(adapter_id))
        except RowDoesNotExist:  # not loaded yet
            return None

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        self._check_near_end()

    def watch_cursor_coordinate(self, old_coordinate, new_coordinate) -> None:
        super().watch_cursor_coordinate(old_coordinate, new_coordinate)
        self._check_near_end()

    def _check_near_end(self) -> None:
        if self.exhausted or self._asked or self._loading or not self.row_count or not self.size.height:
            return
        last_visible = int(self.scroll_y) + self.size.height
        if max(self.cursor_row, last_visible) >= self.row_count - PREFETCH_MARGIN:
            self._asked = True
            self.post_message(self.NeedMore())


def _metric_cell(row: data.AdapterRow) -> Text:
    if row.metric is None:
        return Text("–", style="dim", justify="right")
    return Text(f"{row.metric:.4f}", justify="right")
