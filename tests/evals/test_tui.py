"""The done-when check in the TUI: real `adaptr eval` results for sft-v1 and dpo-v1 in the lineage tree."""

from __future__ import annotations

import asyncio
import json

import pytest
from textual.widgets import DataTable

from conftest import run_cli

pytestmark = pytest.mark.slow


def _labels(tree) -> list[str]:
    out, stack = [], [tree.root]
    while stack:
        node = stack.pop()
        out.append(str(node.label))
        stack.extend(node.children)
    return out


def test_lineage_tree_shows_both_values_and_the_delta(eval_registry, heldout_prefs):
    from adaptr.tui import make_app

    proc = run_cli("eval", "sft-v1", "dpo-v1", "--data", str(heldout_prefs), "--json", registry=eval_registry)
    assert proc.returncode == 0, proc.stderr
    accuracy = {r["ref"]: r["metrics"]["accuracy"] for r in json.loads(proc.stdout)}

    async def scenario():
        app = make_app(eval_registry.root)
        async with app.run_test(size=(120, 36)) as pilot:
            await pilot.pause(0.3)
            screen = app.screen
            screen.select_ref("dpo-v1")
            await pilot.press("e")
            await pilot.pause(0.3)
            table = screen.query_one("#eval-table", DataTable)
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
            table.move_cursor(row=next(i for i, r in enumerate(rows) if r[2] == "accuracy"))
            await pilot.pause(0.3)
            labels = _labels(screen.query_one("LineageTree"))
            delta = accuracy["dpo-v1"] - accuracy["sft-v1"]
            assert any("dpo-v1" in l and f"accuracy {accuracy['dpo-v1']:.4f} ({delta:+.4f})" in l for l in labels), labels
            assert any("sft-v1" in l and f"accuracy {accuracy['sft-v1']:.4f}" in l for l in labels), labels

    asyncio.run(scenario())
