"""Snapshots of the main screens on a registry with fixed times (pytest-textual-snapshot).

Update them after an intended change with ``pytest tests/tui --snapshot-update`` and look at
the SVGs in ``__snapshots__`` before committing.
"""

from __future__ import annotations

from adaptr.tui import make_app
from adaptr.tui.screens.launch import Prefill

from .tui_helpers import settle

SIZE = (120, 36)


def app_for(registry):
    app = make_app(registry.root)
    app.sub_title = "registry"  # the real path differs per test run
    return app


def test_adapters_screen(lineage_registry, snap_compare):
    assert snap_compare(app_for(lineage_registry), terminal_size=SIZE, run_before=settle)


def test_adapter_metrics_and_lineage(lineage_registry, snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        pilot.app.screen.select_ref("sft-v1")
        await settle(pilot)
        pilot.app.screen.query_one("TabbedContent").active = "tab-metrics"
        await settle(pilot)

    assert snap_compare(app_for(lineage_registry), terminal_size=SIZE, run_before=run_before)


def test_bases_screen(lineage_registry, snap_compare):
    assert snap_compare(app_for(lineage_registry), press=["2"], terminal_size=SIZE, run_before=settle)


def test_runs_screen(lineage_registry, snap_compare):
    async def run_before(pilot):
        await pilot.press("3")
        await settle(pilot, rounds=4)

    assert snap_compare(app_for(lineage_registry), terminal_size=SIZE, run_before=run_before)


def test_launch_form(lineage_registry, toy_stage, snap_compare):
    async def run_before(pilot):
        await settle(pilot)
        pilot.app.open_launch(Prefill(stage=toy_stage, base="tiny"))
        await settle(pilot)

    assert snap_compare(app_for(lineage_registry), terminal_size=SIZE, run_before=run_before)


def test_evals_tab(lineage_registry, snap_compare):
    from .test_evals_view import _with_results

    _with_results(lineage_registry)

    async def run_before(pilot):
        await settle(pilot)
        pilot.app.screen.select_ref("dpo-v1")
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        table = pilot.app.screen.query_one("#eval-table")
        table.move_cursor(row=1)  # preference accuracy: charted and shown in the lineage tree
        await settle(pilot)

    assert snap_compare(app_for(lineage_registry), terminal_size=SIZE, run_before=run_before)
