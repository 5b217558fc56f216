"""The Evals tab, the metric in the lineage tree, the chart, and generations beside the parent's."""

from __future__ import annotations

from textual.widgets import DataTable, TabbedContent

from adaptr import evalstore
from adaptr.evalstore import EvalKey
from adaptr.tui import make_app
from adaptr.tui.widgets.evals import EvalsPanel, MetricChart

from .test_views import SIZE, find_tree_node, tree_labels
from .tui_helpers import run, settle

KEY = EvalKey("preference", "a" * 64, "b" * 64)
GEN = EvalKey("generate", "c" * 64, "d" * 64)


def _record(registry, ref: str, key: EvalKey, metrics: dict, outputs=()):
    node = registry.node(ref)
    evalstore.record(registry, [{
        "node_id": node["id"], "key": key, "eval_set": {"name": f"{key.evaluator}.jsonl", "rows": 3},
        "settings": {}, "metrics": metrics, "higher_is_better": {m: True for m in metrics},
        "outputs": list(outputs)}])


def _with_results(registry):
    for ref, accuracy in (("tiny", 0.5), ("sft-v1", 0.6), ("sft-v2", 0.7), ("dpo-v1", 0.9)):
        _record(registry, ref, KEY, {"accuracy": accuracy, "margin": accuracy / 10})
    for ref, answer in (("sft-v2", "four"), ("dpo-v1", "4")):
        _record(registry, ref, GEN, {"score": float(answer == "4")}, outputs=[
            {"row": 1, "prompt": '[{"role": "user", "content": "What is 2 + 2?"}]', "output": answer,
             "expected": "4", "score": float(answer == "4")}])
    return registry


def test_evals_tab_chart_and_lineage_metric(lineage_registry):
    _with_results(lineage_registry)

    async def scenario():
        app = make_app(lineage_registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.select_ref("dpo-v1")
            await settle(pilot)
            await pilot.press("e")
            await settle(pilot)
            assert screen.query_one(TabbedContent).active == "tab-evals"
            panel = screen.query_one(EvalsPanel)
            table = panel.query_one("#eval-table", DataTable)
            cells = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
            accuracy = next(r for r in cells if r[2] == "accuracy")
            assert accuracy[:4] == ["preference", "preference.jsonl", "accuracy", "0.9000"]
            assert accuracy[4] == "+0.2000 vs sft-v2"
            assert table.cursor_row == 0 and cells[0][2] == "score"  # the newest result comes first
            table.move_cursor(row=cells.index(accuracy))
            await settle(pilot)
            labels = tree_labels(screen.query_one("LineageTree"))
            assert any("sft-v2" in label and "0.7000 (+0.1000)" in label for label in labels), labels
            assert any("tiny" in label and "accuracy 0.5000" in label for label in labels), labels

            chart = panel.query_one(MetricChart)
            drawn = chart.render().plain
            assert "preference.accuracy along the lineage" in drawn
            # root first: the base, then each first parent down to the selected version
            positions = [drawn.rfind(ref) for ref in ("tiny", "sft-v1", "sft-v2", "dpo-v1")]
            assert all(p >= 0 for p in positions) and positions == sorted(positions), drawn

            score = next(i for i, r in enumerate(cells) if r[2] == "score")
            table.move_cursor(row=score)
            await settle(pilot)
            generations = panel.query_one("#generations", DataTable)
            assert generations.display and generations.row_count == 1
            assert [str(c) for c in generations.get_row_at(0)] == [
                "1", "What is 2 + 2?", "four", "4", "0.0000", "1.0000"]

            tree = screen.query_one("LineageTree")
            tree.move_cursor(find_tree_node(tree, "sft-v2"))
            await pilot.press("t", "enter")
            await settle(pilot)
            assert screen.selected["ref"] == "sft-v2"
            assert panel.wanted.metric == "score"  # the chosen metric is kept when moving
    run(scenario())


def test_no_evaluations_yet(lineage_registry):
    async def scenario():
        app = make_app(lineage_registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("e")
            await settle(pilot)
            panel = app.screen.query_one(EvalsPanel)
            assert panel.query_one("#eval-table", DataTable).row_count == 0
            assert "no evaluations recorded" in str(panel.query_one("#evals-caption").content)
    run(scenario())
