"""The bases view: every base model, what is recorded about it, and its lineage."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import Screen
from textual.widgets import DataTable, Header, Static
from textual.widgets.data_table import RowDoesNotExist

from ...bases import human_count
from ...errors import AdaptrError
from .. import data
from ..widgets.footer import KeyFooter
from ..widgets.detail import kv_table, parents_text
from ..widgets.lineage import LineageTree

COLUMNS = (("name", "Name"), ("kind", "Kind"), ("source", "Source"), ("architecture", "Architecture"),
           ("params", "Params"), ("dtype", "Dtype"), ("adapters", "Adapters"), ("created", "Created (UTC)"))


class BasesScreen(Screen):
    BINDINGS = [
        Binding("enter", "show_adapters", "Its adapters"),
        Binding("n", "app.launch", "Launch"),
        Binding("t", "focus_lineage", "Lineage"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.bases: list[dict] = []
        self.selected: dict | None = None
        self._pending: str | None = None  # a base asked for before the view was mounted

    def compose(self) -> ComposeResult:
        yield Header()
        with Vertical(id="bases-main"):
            yield DataTable(id="bases", cursor_type="row", zebra_stripes=True)
            with Horizontal(id="base-bottom"):
                yield VerticalScroll(Static(id="base-info"), id="base-info-box")
                with Vertical(id="lineage-box"):
                    yield Static("Lineage", classes="box-title")
                    yield LineageTree(id="base-lineage")
        yield KeyFooter()

    def on_mount(self) -> None:
        table = self.query_one("#bases", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        self.reload()
        table.focus()
        if self._pending:
            self.select_base(self._pending)

    def reload(self) -> None:
        registry = self.app.registry
        self.bases = registry.bases()
        counts = data.base_adapter_counts(registry)
        table = self.query_one("#bases", DataTable)
        keep = self.selected["name"] if self.selected else None
        table.clear()
        for base in self.bases:
            table.add_row(Text(base["name"], style="bold"), base["source_kind"], _source(base),
                          base.get("architecture") or "", human_count(base.get("num_parameters")),
                          base.get("dtype") or "", Text(str(counts.get(base["id"], 0)), justify="right"),
                          data.short_time(base["created_at"]), key=base["name"])
        if not self.bases:
            self.query_one("#base-info", Static).update(
                Text("no bases yet: add one with `adaptr base add NAME PATH_OR_HUB_ID`", style="dim"))
        self.selected = None
        if keep:
            self.select_base(keep)
        elif self.bases:
            self._show(self.bases[0]["name"])

    def select_base(self, name: str) -> None:
        if not self.is_mounted:
            self._pending = name
            return
        table = self.query_one("#bases", DataTable)
        try:
            table.move_cursor(row=table.get_row_index(name))
        except RowDoesNotExist:
            self.app.notify(f"unknown base {name!r}", severity="warning")
            return
        self._show(name)

    @on(DataTable.RowHighlighted, "#bases")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._show(event.row_key.value)

    @on(DataTable.RowSelected, "#bases")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.show_adapters_of_base(event.row_key.value)

    def _show(self, name: str) -> None:
        if self.selected and self.selected["name"] == name:
            return
        registry = self.app.registry
        try:
            base = registry.base(name)
            ancestors = registry.ancestors(base["id"], bases=True)
            descendants = registry.descendants(base["id"])
        except AdaptrError as exc:
            self.app.show_error(exc)
            return
        self.selected = base
        self.query_one("#base-info", Static).update(kv_table(_info_rows(base, registry)))
        self.query_one("#base-lineage", LineageTree).show(base, ancestors, descendants)

    @on(LineageTree.Jump)
    def _jump(self, event: LineageTree.Jump) -> None:
        if event.node.kind == "base":
            self.select_base(event.node.ref)
        else:
            self.app.show_adapter(event.node.ref)

    def action_show_adapters(self) -> None:
        if self.selected:
            self.app.show_adapters_of_base(self.selected["name"])

    def action_focus_lineage(self) -> None:
        self.query_one("#base-lineage", LineageTree).focus()


def _source(base: dict) -> str:
    if base["source_kind"] == "hub" and base.get("revision"):
        return f"{base['source']}@{base['revision'][:10]}"
    if base["source_kind"] == "local":
        return base["source"].rsplit("/", 1)[-1]
    return base["source"]


def _info_rows(base: dict, registry) -> list[tuple[str, object]]:
    rows: list[tuple[str, object]] = [
        ("name", Text(base["name"], style="bold")),
        ("kind", base["source_kind"] + (" (owned by the registry)" if base.get("owned") else "")),
        ("source", base["source"]),
        ("revision", base.get("revision")),
        ("architecture", base.get("architecture")),
        ("parameters", f"{base['num_parameters']:,}" if base.get("num_parameters") else None),
        ("dtype", base.get("dtype")),
        ("config sha256", (base.get("config_sha256") or "")[:16] or None),
        ("tokenizer sha256", (base.get("tokenizer_sha256") or "")[:16] or None),
        ("created", data.short_time(base["created_at"]) + " UTC"),
        ("parents", parents_text(base.get("parents") or [])),
    ]
    if base.get("path"):
        rows.append(("path", registry.store.relative(base["path"])))
    rows.extend(_record_rows(base.record))
    return rows


def _record_rows(record) -> list[tuple[str, object]]:
    """What the base's record says: the merge that made a derived base, the revision asked for."""
    rows: list[tuple[str, object]] = []
    if record.merge:
        merge = record.merge
        rows += [("merged from", merge.merged_from), ("chain", ", ".join(merge.chain)), ("onto", merge.base),
                 ("merge dtype", merge.dtype), ("tensors merged", f"{merge.tensors_merged}/{merge.tensors}")]
    if record.requested_revision:
        rows.append(("requested revision", record.requested_revision))
    if record.libraries:
        rows.append(("libraries", ", ".join(f"{k} {v}" for k, v in sorted(record.libraries.items()))))
    return rows
