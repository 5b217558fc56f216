"""The TUI launch form chooses the slurm executor and a profile; the run goes through the cluster."""

from __future__ import annotations

import json

import pytest
from textual.widgets import Input, Select

from adaptr import jobs
from adaptr.tui import make_app
from adaptr.tui.screens.launch import LaunchScreen, Prefill
from adaptr.tui.screens.runs import RunsScreen
from jobs.conftest import loop_registry, testloop  # noqa: F401  (fixtures)
from jobs.helpers import numbers_file
from tui.tui_helpers import record_notifications, run, settle, wait_until

pytestmark = pytest.mark.xdist_group("slurm")
SIZE = (120, 36)


def test_the_launch_form_submits_to_slurm_with_a_profile(slurm_cluster, loop_registry, tmp_path):
    (loop_registry.root / "slurm.yaml").write_text("quick: {time: '10:00', signal_seconds: 30}\n")
    data = numbers_file(tmp_path)

    async def scenario():
        app = make_app(loop_registry.root)
        notes = record_notifications(app)
        async with app.run_test(size=SIZE) as pilot:
            await settle(pilot)
            app.open_launch(Prefill(stage="testloop", base="toy", config={"steps": 3}))
            await settle(pilot)
            form = app.screen
            assert isinstance(form, LaunchScreen)
            assert not form.query_one("#f-profile").parent.display  # only for slurm
            form.query_one("#f-executor", Select).value = "slurm"
            await settle(pilot)
            assert form.query_one("#f-profile").parent.display
            form.query_one("#f-data", Input).value = str(data)

            form.query_one("#f-profile", Input).value = "nosuch"
            form.action_submit()
            assert await wait_until(pilot, lambda: notes, timeout=30)
            assert "no SLURM profile 'nosuch'" in notes[-1].message and notes[-1].severity == "error"
            assert loop_registry.runs() == []  # nothing recorded

            form.query_one("#f-profile", Input).value = "quick"
            form.action_submit()
            assert await wait_until(pilot, lambda: isinstance(app.screen, RunsScreen) and app.screen.selected_id,
                                    timeout=60), notes
            assert app.screen.selected_id == loop_registry.runs()[0]["id"]  # the runs view shows it
    run(scenario())
    submitted = loop_registry.runs()[0]
    assert submitted["executor"] == "slurm" and submitted["job_id"]
    job = json.loads((loop_registry.root / "runs" / submitted["id"] / "job.json").read_text())
    assert job["options"] == {"time": "10:00", "signal_seconds": 30, "profile": "quick"}
    assert jobs.wait(loop_registry, submitted["id"], timeout=120)["status"] == "succeeded"
