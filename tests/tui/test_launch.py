"""The launch form: built from any stage's config, errors as notifications, launch -> watch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from textual.widgets import Checkbox, Input, Log, ProgressBar, Select, TabbedContent

from adaptr.tui import make_app
from adaptr.tui.screens.adapters import AdaptersScreen
from adaptr.tui.screens.launch import LaunchScreen, Prefill
from adaptr.tui.screens.runs import RunsScreen
from adaptr.tui.widgets.loss_plot import LossPlot

from .tui_helpers import record_notifications, run, settle, wait_until

SIZE = (120, 36)


@pytest.fixture
def sft_data(tmp_path) -> Path:
    path = tmp_path / "train.jsonl"
    rows = [{"prompt": f"Question {i}: what is {i} plus {i}?", "completion": f" It is {2 * i}."}
            for i in range(32)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def set_value(screen: LaunchScreen, selector: str, value) -> None:
    screen.query_one(selector).value = value


def test_form_follows_the_stage_config_and_sends_only_changes(lineage_registry, toy_stage):
    async def scenario():
        app = make_app(lineage_registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            screen = app.views["adapters"]
            screen.select_ref("sft-v2")
            app.open_launch(Prefill(stage=toy_stage, parent="sft-v2",
                                    parent_config=screen.selected["config"]))
            await settle(pilot)
            form = app.screen
            assert isinstance(form, LaunchScreen)
            assert form.query_one("#f-parent", Input).value == "sft-v2"
            assert form.query_one("#cfg-r", Input).value == "8"  # the parent's LoRA rank
            assert isinstance(form.query_one("#cfg-packing"), Checkbox)
            assert form.query_one("#cfg-schedule", Select).value == "linear"
            assert not form.query_one("#f-data").parent.display  # tuitoy takes no data

            set_value(form, "#cfg-steps", "5")
            set_value(form, "#cfg-schedule", "cosine")
            set_value(form, "#cfg-packing", True)
            request, executor, gpus = form.build_request()
            assert request.stage == toy_stage and request.parent == "sft-v2" and request.base is None
            assert request.config == {"steps": "5", "schedule": "cosine", "packing": True}
            assert (executor, gpus) == ("local", None)

            # Only `adaptr train` stages are offered: resume and merge have actions of their own.
            stage_select = form.query_one("#f-stage", Select)
            offered = {value for _, value in stage_select._options}
            assert {"sft", "dpo", "grpo", "kto", toy_stage} <= offered and not {"resume", "merge"} & offered
            set_value(form, "#f-stage", "sft")
            await settle(pilot)
            assert isinstance(form.query_one("#cfg-max_length"), Input)  # sft's own config field
            assert form.query_one("#f-data").parent.display  # sft takes data
            set_value(form, "#f-stage", "grpo")
            await settle(pilot)
            assert not form.query(("#cfg-max_length"))  # GRPOConfig has none
            set_value(form, "#cfg-reward", "length,regex=0.5")
            set_value(form, "#cfg-reward_pattern", "[0-9]")
            request, _, _ = form.build_request()
            assert request.stage == "grpo"
            assert {k: request.config[k] for k in ("reward", "reward_pattern")} == {
                "reward": "length,regex=0.5", "reward_pattern": "[0-9]"}
            from adaptr import config as config_mod
            from adaptr_grpo.config import GrpoConfig

            assert config_mod.coerce(GrpoConfig, "reward", request.config["reward"]) == ["length", "regex=0.5"]
            await pilot.press("escape")
            await settle(pilot)
            assert isinstance(app.screen, AdaptersScreen)
    run(scenario())


def test_merge_action_opens_the_merge_stage_into_base(lineage_registry):
    async def scenario():
        app = make_app(lineage_registry.root)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("m")
            await settle(pilot)
            form = app.screen
            assert isinstance(form, LaunchScreen)
            request, _, _ = form.build_request()
            assert (request.stage, request.parent) == ("merge", "dpo-v2")
            assert request.config == {"into_base": True}
    run(scenario())


def _submit_and_expect_error(lineage_registry, fill, expected: str, severity="error"):
    async def scenario():
        app = make_app(lineage_registry.root)
        notes = record_notifications(app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            app.views["adapters"].select_ref("sft-v1")
            await pilot.press("n")
            await settle(pilot)
            form = app.screen
            assert isinstance(form, LaunchScreen)
            set_value(form, "#f-stage", "sft")
            await settle(pilot)
            fill(form)
            await pilot.press("ctrl+s")
            assert await wait_until(pilot, lambda: any(n.severity == severity for n in notes), timeout=60)
            error = next(n for n in notes if n.severity == severity)
            assert expected in error.message, error
            assert app.screen is form  # the form stays open to be fixed
            assert not form.query_one("#launch-submit").disabled
            assert lineage_registry.query("SELECT COUNT(*) AS n FROM runs")[0]["n"] == 3  # nothing written
    run(scenario())


def test_bad_data_path_is_a_notification(lineage_registry, tmp_path):
    missing = str(tmp_path / "no-such-file.jsonl")
    _submit_and_expect_error(lineage_registry, lambda form: set_value(form, "#f-data", missing),
                             "no-such-file.jsonl")


def test_conflicting_lora_settings_are_a_notification(lineage_registry, sft_data):
    def fill(form):
        set_value(form, "#f-data", str(sft_data))
        set_value(form, "#cfg-r", "4")  # the parent sft-v1 was trained with r=8

    _submit_and_expect_error(lineage_registry, fill, "--mode merge")


def test_qlora_without_cuda_is_a_notification(lineage_registry, sft_data):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: QLoRA is allowed here")

    def fill(form):
        set_value(form, "#f-data", str(sft_data))
        set_value(form, "#f-quantize", "4bit")

    _submit_and_expect_error(lineage_registry, fill, "CUDA")


@pytest.mark.slow
def test_launch_then_watch_a_real_detached_cpu_run(registry_with_base, sft_data):
    """Launch sft on the tiny base from the form; the detached run updates live to the end."""
    registry = registry_with_base

    async def scenario():
        app = make_app(registry.root, poll_interval=0.2)
        notes = record_notifications(app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            await pilot.press("2")
            await settle(pilot)
            await pilot.press("n")
            await settle(pilot)
            form = app.screen
            assert isinstance(form, LaunchScreen)
            assert form.query_one("#f-base", Select).value == "tiny"
            assert form.query_one("#f-stage", Select).value == "sft"
            set_value(form, "#f-data", str(sft_data))
            set_value(form, "#f-name", "tuirun")
            for key, value in {"r": "4", "lora_alpha": "8", "max_length": "48", "max_steps": "12",
                               "logging_steps": "1", "per_device_train_batch_size": "2",
                               "learning_rate": "0.001"}.items():
                set_value(form, f"#cfg-{key}", value)
            await pilot.press("ctrl+s")

            assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen), timeout=60)
            runs = app.screen
            run_id = runs.selected_id
            assert run_id and registry.run(run_id)["stage"] == "sft"
            bar = runs.query_one(ProgressBar)
            started = await wait_until(
                pilot, lambda: runs.runs.get(run_id, {}).get("status") in ("running", "succeeded"),
                timeout=120)
            assert started
            assert await wait_until(pilot, lambda: runs.runs[run_id]["status"] != "running", timeout=300)
            assert runs.runs[run_id]["status"] == "succeeded", registry.run(run_id)["error"]
            await settle(pilot)
            assert (bar.progress, bar.total) == (12, 12)
            assert any("published tuirun-v1" in line for line in runs.query_one(Log).lines)
            assert any("published tuirun-v1" in n.message for n in notes)

            await pilot.press("o")
            await settle(pilot)
            adapters = app.screen
            assert isinstance(adapters, AdaptersScreen) and adapters.selected["ref"] == "tuirun-v1"
            adapters.query_one(TabbedContent).active = "tab-metrics"
            await settle(pilot)
            plot = adapters.query_one(LossPlot)
            assert "12 points" in str(plot.query_one(".caption").content)
    run(scenario())


@pytest.mark.slow
def test_cancel_then_resume_a_run_from_the_runs_view(registry_with_base, sft_data):
    from adaptr import StageRequest
    from adaptr.tui import backend

    registry = registry_with_base
    request = StageRequest(stage="sft", base="tiny", data=str(sft_data), name="long",
                           config={"r": 4, "lora_alpha": 8, "max_length": 48, "max_steps": 5000,
                                   "logging_steps": 1, "per_device_train_batch_size": 2})
    run_row = backend.submit(registry.db_path, request)

    async def scenario():
        app = make_app(registry.root, poll_interval=0.2)
        async with app.run_test(size=SIZE) as pilot:
            app.show_run(run_row["id"])
            runs = app.screen
            def stepping():
                return (runs.runs.get(run_row["id"], {}).get("progress_step") or 0) > 0

            assert await wait_until(pilot, stepping, timeout=180)
            await pilot.press("c")
            await settle(pilot)
            assert type(app.screen).__name__ == "ConfirmScreen"
            await pilot.press("enter")
            def ended():
                return runs.runs[run_row["id"]]["status"] not in ("queued", "running")

            assert await wait_until(pilot, ended, timeout=180)
            assert runs.runs[run_row["id"]]["status"] == "cancelled"

            await pilot.press("r")
            await settle(pilot)
            assert type(app.screen).__name__ == "ConfirmScreen"
            await pilot.press("enter")
            assert await wait_until(pilot, lambda: runs.selected_id not in (None, run_row["id"])
                                    and runs.selected_id in runs.runs, timeout=120)
            resumed_id = runs.selected_id
            assert runs.runs[resumed_id]["stage"] == "resume"

            def resumed_stepping():
                return (runs.runs[resumed_id].get("progress_step") or 0) > 0

            assert await wait_until(pilot, resumed_stepping, timeout=180)
            backend.cancel(registry.db_path, resumed_id)  # leave no process behind
            assert await wait_until(
                pilot, lambda: runs.runs[resumed_id]["status"] not in ("queued", "running"), timeout=180)
    run(scenario())
