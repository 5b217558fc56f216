"""The Evals tab: recorded results with their change from the parent, a chart of the chosen
metric along the chain of versions, and generated outputs beside the parent's."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.message import Message
from textual.widgets import DataTable, Static
from textual_plotext import PlotextPlot

from .. import evaldata


class MetricChart(PlotextPlot):
    """One metric along the chain root → selected version (plotext, drawn in braille)."""

    def plot_chain(self, name: str, points: list[tuple[str, float]]) -> None:
        plt = self.plt
        plt.clear_figure()
        plt.title(f"{name} along the lineage")
        if points:
            xs = list(range(1, len(points) + 1))
            plt.plot(xs, [value for _, value in points], marker="braille")
            plt.scatter(xs, [value for _, value in points], marker="●")
            plt.xticks(xs, [ref for ref, _ in points])
        self.refresh()


class EvalsPanel(VerticalScroll):
    """Results of the selected node; highlighting a metric charts it and tells the screen."""

    class MetricChosen(Message):
        def __init__(self, choice) -> None:
            super().__init__()
            self.choice = choice

    DEFAULT_CSS = """
    EvalsPanel > DataTable { height: auto; max-height: 10; }
    EvalsPanel > MetricChart { height: 14; }
    EvalsPanel > .caption { color: $text-muted; padding: 0 1; height: auto; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.node_id: int | None = None
        self.rows: list[evaldata.EvalRow] = []
        self.wanted = None  # the metric chosen last, kept when another version is selected

    def compose(self) -> ComposeResult:
        yield Static("", id="evals-caption", classes="caption")
        table = DataTable(id="eval-table", cursor_type="row", zebra_stripes=True)
        for label in ("Evaluator", "Eval set", "Metric", "Value", "Δ parent", "Reference"):
            table.add_column(label)
        yield table
        yield MetricChart(id="metric-chart")
        yield Static("", id="generations-caption", classes="caption")
        generations = DataTable(id="generations", zebra_stripes=True)
        for label in ("Row", "Prompt", "Parent", "This version", "Parent score", "Score"):
            generations.add_column(label)
        yield generations

    def show(self, registry, node_id: int | None) -> None:
        self.node_id = node_id
        self.rows = evaldata.eval_rows(registry, node_id) if node_id is not None else []
        table = self.query_one("#eval-table", DataTable)
        table.clear()
        for row in self.rows:
            table.add_row(row.choice.key.evaluator, row.choice.eval_set.get("name", ""), row.metric,
                          _number(row.value), _delta(row), row.reference or "")
        caption = self.query_one("#evals-caption", Static)
        if not self.rows:
            caption.update("no evaluations recorded: adaptr eval REF --data FILE")
            self._chart(registry, None)
            self._generations(registry, None)
            return
        caption.update(f"{len(self.rows)} metrics; highlight one to chart it and show it in the lineage")
        index = next((i for i, r in enumerate(self.rows) if self.wanted and
                      (r.choice.key, r.metric) == (self.wanted.key, self.wanted.metric)), 0)
        table.move_cursor(row=index)
        self._choose(registry, self.rows[index])

    @on(DataTable.RowHighlighted, "#eval-table")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if 0 <= event.cursor_row < len(self.rows):
            self._choose(self.app.registry, self.rows[event.cursor_row])

    def _choose(self, registry, row: evaldata.EvalRow) -> None:
        self.wanted = row.choice
        self._chart(registry, row)
        self._generations(registry, row)
        self.post_message(self.MetricChosen(row.choice))

    def _chart(self, registry, row: evaldata.EvalRow | None) -> None:
        chart = self.query_one(MetricChart)
        points = evaldata.metric_chain(registry, row.choice, self.node_id) if row else []
        chart.plot_chain(row.choice.name if row else "metric", points)

    def _generations(self, registry, row: evaldata.EvalRow | None) -> None:
        table = self.query_one("#generations", DataTable)
        caption = self.query_one("#generations-caption", Static)
        table.clear()
        if row is None or row.choice.key.evaluator != "generate" and not _has_outputs(registry, row):
            caption.update("")
            table.display = False
            return
        side = evaldata.generations(registry, row.evaluation_id, self.node_id)
        caption.update(f"generated outputs: {side.parent_ref or 'no parent result'} | this version")
        table.display = True
        for number, prompt, theirs, mine, their_score, my_score in side.rows:
            table.add_row(str(number or ""), _cut(prompt), _cut(theirs or "–"), _cut(mine),
                          _number(their_score), _number(my_score))


def _has_outputs(registry, row: evaldata.EvalRow) -> bool:
    return bool(registry.query("SELECT 1 FROM eval_outputs WHERE evaluation_id = ? LIMIT 1",
                               [row.evaluation_id]))


def _number(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def _delta(row: evaldata.EvalRow) -> Text:
    if row.delta is None:
        return Text("–", style="dim")
    better = row.delta != 0 and (row.delta > 0) == row.choice.higher_is_better
    style = "green" if better else ("red" if row.delta != 0 else "")
    return Text(f"{row.delta:+.4f} vs {row.parent_ref}", style=style)


def _cut(text: str, width: int = 28) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[:width - 1] + "…"
