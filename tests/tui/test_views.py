"""Pilot tests of each view: adapters (filter, detail, lineage), bases, runs, palette, actions."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

from textual.widgets import DataTable, Input, Log, ProgressBar, Static, TabbedContent

from adaptr.registry import now
from adaptr.tui import make_app
from adaptr.tui.screens.adapters import AdaptersScreen
from adaptr.tui.screens.bases import BasesScreen
from adaptr.tui.screens.confirm import ConfirmScreen
from adaptr.tui.screens.runs import RunsScreen
from adaptr.tui.widgets.adapter_table import AdapterTable
from adaptr.tui.widgets.detail import AdapterDetailPane
from adaptr.tui.widgets.lineage import LineageTree
from adaptr.tui.widgets.loss_plot import LossPlot

from .conftest import add_fake_base, publish_fake
from .tui_helpers import record_notifications, run, settle, wait_until

SIZE = (120, 36)


def plain(static: Static) -> str:
    """The text a Static shows (its content may be a Rich renderable such as a table)."""
    from rich.console import Console

    console = Console(width=200, record=True, file=open(os.devnull, "w"))
    console.print(static.content)
    return console.export_text().rstrip()


def table_refs(screen: AdaptersScreen) -> list[str]:
    table = screen.query_one(AdapterTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


def tree_labels(tree: LineageTree) -> list[str]:
    out = []

    def walk(node):
        out.append(str(node.label))
        for child in node.children:
            walk(child)

    walk(tree.root)
    return out


def find_tree_node(tree: LineageTree, ref: str, kind: str = "adapter"):
    stack = [tree.root]
    while stack:
        node = stack.pop()
        data = node.data
        if node is not tree.root and data is not None and (data.ref, data.kind) == (ref, kind):
            return node
        stack.extend(node.children)
    raise AssertionError(f"{ref} is not in the lineage tree")


def test_adapters_view_lists_newest_first_with_details(lineage_registry):
    async def scenario():
        app = make_app(lineage_registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, AdaptersScreen)
            assert table_refs(screen) == ["dpo-v2", "stack-v1", "dpo-v1", "sft-v2", "sft-v1"]
            assert plain(screen.query_one("#adapter-count", Static)) == "5 versions"
            assert screen.selected["ref"] == "dpo-v2"
            table = screen.query_one(AdapterTable)
            assert [str(c) for c in table.get_row_at(3)] == [
                "sft-v2", "tiny", "sft", "ready", "2026-01-15 10:03", "0.9200"]

            await pilot.press("ctrl+end")
            await settle(pilot)
            assert screen.selected["ref"] == "sft-v1"
            detail = screen.query_one(AdapterDetailPane)
            overview = plain(detail.query_one("#overview", Static))
            assert "20260115-090000-a1b2" in overview and "adapters/sft/v1" in overview
            assert "serving" in overview and "vllm yes, llama.cpp yes, lorax yes, tgi yes" in " ".join(overview.split())
            tabs = detail.query_one(TabbedContent)
            assert not detail.query(LossPlot)  # hidden tabs are built when first shown
            tabs.active = "tab-metrics"
            await settle(pilot)
            plot = detail.query_one(LossPlot)
            assert "2.3100 → 0.8900" in plain(plot.query_one(".caption", Static))
            tabs.active = "tab-files"
            await settle(pilot)
            files = detail.query_one("#files", DataTable)
            names = [str(files.get_row_at(i)[0]) for i in range(files.row_count)]
            assert names[:3] == ["README.md", "adapter_config.json", "adapter_model.safetensors"]
            assert names[-1] == "3 files"
    run(scenario())


def test_filter_matches_words_and_keys(lineage_registry):
    async def scenario():
        app = make_app(lineage_registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            await pilot.press("slash")
            assert isinstance(app.focused, Input)
            await pilot.press(*"stage:dpo", "enter")
            await settle(pilot)
            assert table_refs(screen) == ["dpo-v2", "dpo-v1"]
            assert plain(screen.query_one("#adapter-count", Static)) == "2 match"
            assert isinstance(app.focused, AdapterTable)

            screen.set_filter("base:tiny sft")
            assert table_refs(screen) == ["stack-v1", "sft-v2", "sft-v1"]
            screen.set_filter("no-such-thing")
            assert table_refs(screen) == [] and screen.selected is None
            assert "match the filter" in plain(screen.query_one("#overview", Static))
            await pilot.press("escape")
            await settle(pilot)
            assert len(table_refs(screen)) == 5
    run(scenario())


def test_lineage_tree_shows_relations_and_jumps(lineage_registry):
    async def scenario():
        app = make_app(lineage_registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.select_ref("sft-v2")
            await settle(pilot)
            tree = screen.query_one(LineageTree)
            labels = tree_labels(tree)
            assert "● sft-v1  continued" in labels  # its parent
            assert "◆ tiny  trained on" in labels  # its base
            assert "● dpo-v1  continued" in labels  # a child that continued it
            assert "◆ tiny-sft  merged" in labels  # the derived base it was merged into

            await pilot.press("t")
            assert app.focused is tree
            tree.move_cursor(find_tree_node(tree, "sft-v1"))
            await pilot.press("enter")
            await settle(pilot)
            assert screen.selected["ref"] == "sft-v1"
            table = screen.query_one(AdapterTable)
            assert str(table.get_row_at(table.cursor_row)[0]) == "sft-v1"

            tree = screen.query_one(LineageTree)
            tree.focus()
            tree.move_cursor(find_tree_node(tree, "tiny", kind="base"))
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, BasesScreen)
            assert app.screen.selected["name"] == "tiny"
    run(scenario())


def test_jump_to_a_version_hidden_by_the_filter_clears_it(lineage_registry):
    async def scenario():
        app = make_app(lineage_registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            screen.set_filter("stage:dpo")
            app.show_adapter("sft-v1")
            await settle(pilot)
            assert screen.query_one("#filter", Input).value == ""
            assert screen.selected["ref"] == "sft-v1"
    run(scenario())


def test_bases_view_and_its_adapters(lineage_registry):
    async def scenario():
        app = make_app(lineage_registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("2")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, BasesScreen)
            table = screen.query_one("#bases", DataTable)
            rows = [[str(c) for c in table.get_row_at(i)] for i in range(table.row_count)]
            assert rows[0][:3] == ["tiny", "hub", "example/tiny-llama@0123456789"]
            assert rows[1][:3] == ["tiny-sft", "derived", "merge:sft-v2"]
            assert [r[6] for r in rows] == ["4", "1"]

            await pilot.press("down")
            await settle(pilot)
            assert screen.selected["name"] == "tiny-sft"
            labels = tree_labels(screen.query_one("#base-lineage", LineageTree))
            assert "● sft-v2  merged" in labels
            await pilot.press("enter")
            await settle(pilot)
            adapters = app.screen
            assert isinstance(adapters, AdaptersScreen)
            assert adapters.query_one("#filter", Input).value == "base:tiny-sft"
            assert table_refs(adapters) == ["dpo-v2"]
    run(scenario())


def test_runs_view_shows_status_progress_and_log(lineage_registry):
    async def scenario():
        app = make_app(lineage_registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("3")
            await settle(pilot)
            screen = app.screen
            assert isinstance(screen, RunsScreen)
            table = screen.query_one("#runs", DataTable)
            assert [str(table.get_row_at(i)[2]) for i in range(3)] == ["cancelled", "failed", "succeeded"]
            await pilot.press("down")
            await settle(pilot)
            assert screen.selected_id == "20260115-093000-c3d4"
            assert await wait_until(pilot, lambda: "ValueError: bad batch" in screen.query_one(Log).lines)
            bar = screen.query_one(ProgressBar)
            assert (bar.progress, bar.total) == (12, 50)
            assert "ValueError: bad batch" in plain(screen.query_one("#run-info", Static))

            await pilot.press("down", "o")
            await settle(pilot)
            assert isinstance(app.screen, AdaptersScreen) and app.screen.selected["ref"] == "sft-v1"
    run(scenario())


def test_runs_view_follows_a_live_run(lineage_registry):
    """Progress and status written by another process show up without any key press."""
    registry = lineage_registry
    run_row = registry.create_run(stage="sft", request={"stage": "sft", "base": "tiny"}, config={},
                                  status="running")
    # This test process stands in for the run's process, so `jobs.refresh` sees it alive.
    registry.update_run(run_row["id"], pid=os.getpid(), host=socket.gethostname(), started_at=now())
    log = os.path.join(run_row["run_dir"], "run.log")
    with open(log, "w") as fh:
        fh.write("[adaptr] sft: 40 steps\n")

    async def scenario():
        app = make_app(registry.root, poll_interval=0.1)
        notes = record_notifications(app)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            screen = app.screen
            assert await wait_until(pilot, lambda: screen.selected_id == run_row["id"])
            registry.update_run(run_row["id"], progress_step=10, progress_total=40)
            with open(log, "a") as fh:
                fh.write("[adaptr] step 10 loss=1.5\n")
            bar = screen.query_one(ProgressBar)
            assert await wait_until(pilot, lambda: (bar.progress, bar.total) == (10, 40))
            assert await wait_until(pilot, lambda: "[adaptr] step 10 loss=1.5" in screen.query_one(Log).lines)
            table = screen.query_one("#runs", DataTable)
            assert str(table.get_row_at(0)[3]) == "10/40"

            version = publish_fake(registry, "live", run_id=run_row["id"])
            registry.update_run(run_row["id"], status="succeeded", progress_step=40, ended_at=now())
            assert await wait_until(pilot, lambda: any("published live-v1" in n.message for n in notes))
            assert str(table.get_row_at(0)[2]) == "succeeded"
            adapters = app.views["adapters"]
            assert "live-v1" in table_refs(adapters)
            assert version["ref"] == "live-v1"
    run(scenario())


def test_cancel_needs_an_active_run_and_never_crashes(lineage_registry):
    async def scenario():
        app = make_app(lineage_registry.root)
        notes = record_notifications(app)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(pilot)
            await pilot.press("c")
            await settle(pilot)
            assert notes[-1].severity == "warning" and "cancel" in notes[-1].message
            assert not isinstance(app.screen, ConfirmScreen)
    run(scenario())


def test_push_calls_the_core_and_reports_its_error(lineage_registry, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)

    async def scenario():
        app = make_app(lineage_registry.root)
        notes = record_notifications(app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("p")
            await settle(pilot)
            dialog = app.screen
            assert isinstance(dialog, ConfirmScreen)
            options = dialog.query_one("#confirm-options", Input)
            assert options.value == "--repo "
            options.value = "--repo someone/dpo"
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: any(n.title.endswith("failed") or n.title.endswith("done")
                                                       for n in notes), timeout=60)
            outcome = next(n for n in notes if n.title.startswith("adaptr push"))
            assert outcome.title == "adaptr push dpo-v2 --repo someone/dpo: failed"
            assert outcome.severity == "error" and outcome.message
            assert isinstance(app.screen, AdaptersScreen)
    run(scenario())


def test_command_palette_opens_a_version(lineage_registry):
    async def scenario():
        app = make_app(lineage_registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("ctrl+p")
            await settle(pilot)
            await pilot.press(*"stack-v1")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, AdaptersScreen)
            assert app.screen.selected["ref"] == "stack-v1"

            await pilot.press("ctrl+p")
            await settle(pilot)
            await pilot.press(*"Runs view")
            await pilot.pause(0.5)
            await pilot.press("enter")
            await settle(pilot)
            assert isinstance(app.screen, RunsScreen)
    run(scenario())


def test_pages_load_as_the_user_scrolls(tmp_path):
    from adaptr import Registry

    from .conftest import bulk_adapters

    registry = Registry.init(tmp_path / "registry")
    add_fake_base(registry)
    bulk_adapters(registry, 1000)

    async def scenario():
        app = make_app(registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.screen
            table = screen.query_one(AdapterTable)
            assert table.row_count == 200
            assert plain(screen.query_one("#adapter-count", Static)) == "1,000 versions (200 loaded)"
            for _ in range(16):
                await pilot.press("pagedown")
            await settle(pilot)
            assert 200 < table.row_count < 1000
            await pilot.press("ctrl+end")  # loads every remaining row at once
            await settle(pilot)
            assert table.row_count == 1000 and table.exhausted
            assert table.cursor_row == 999
            assert str(table.get_row_at(999)[0]) == "bulk-v1"
            assert plain(screen.query_one("#adapter-count", Static)) == "1,000 versions"
            app.show_adapter("bulk-v500")
            await settle(pilot)
            assert str(table.get_row_at(table.cursor_row)[0]) == "bulk-v500"
    run(scenario())
    registry.close()


def test_the_app_imports_no_training_library(lineage_registry):
    """Mount the app and open the launch form in a fresh interpreter; torch & co stay unloaded."""
    script = textwrap.dedent(f"""
        import asyncio, sys
        from adaptr.tui import make_app

        async def main():
            app = make_app({str(lineage_registry.root)!r})
            async with app.run_test(size=(120, 36)) as pilot:
                await pilot.pause(0.3)
                await pilot.press("n")
                await pilot.pause(0.5)
                assert type(app.screen).__name__ == "LaunchScreen", app.screen
                await pilot.press("escape", "3")
                await pilot.pause(0.5)
                assert type(app.screen).__name__ == "RunsScreen", app.screen
        asyncio.run(main())
        heavy = sorted(m for m in sys.modules
                       if m.split(".")[0] in ("torch", "transformers", "peft", "trl", "bitsandbytes"))
        print("HEAVY", heavy)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_resume_calls_the_core_and_reports_its_outcome(lineage_registry):
    async def scenario():
        app = make_app(lineage_registry.root)
        notes = record_notifications(app)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.press("3")
            await settle(pilot)
            screen = app.screen
            screen.select_run("20260115-090000-a1b2")  # succeeded: nothing to resume
            await pilot.press("r")
            await settle(pilot)
            assert notes[-1].severity == "warning" and "resume" in notes[-1].message

            screen.select_run("20260115-093000-c3d4")  # failed, and it saved no checkpoint
            await pilot.press("r")
            await settle(pilot)
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: any(n.title.startswith("adaptr resume") for n in notes),
                                    timeout=60)
            outcome = next(n for n in notes if n.title.startswith("adaptr resume"))
            assert outcome.title == "adaptr resume 20260115-093000-c3d4 --detach: failed"
            assert outcome.severity == "error" and "checkpoint" in outcome.message
            assert isinstance(app.screen, RunsScreen)
    run(scenario())
