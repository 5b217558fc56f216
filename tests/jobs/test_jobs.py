"""Detached runs: submit, runs, logs, cancel, interrupted, GPU queueing (with the testloop stage)."""

from __future__ import annotations

import json
import os
import signal

import pytest

from adaptr import ConflictError, NotFoundError, UsageError, jobs
from conftest import dump_registry, run_cli

from .helpers import loop_request, numbers_file, wait_until


def _running_with_progress(registry, run_id, step=2):
    run = registry.run(run_id)
    return run if run["status"] == "running" and run["progress_step"] >= step else None


def test_detached_run_returns_at_once_and_succeeds(loop_registry, tmp_path):
    run = jobs.submit(loop_registry, loop_request(numbers_file(tmp_path), steps=6, save_steps=3))
    assert run["status"] == "queued" and run["pid"]
    done = jobs.wait(loop_registry, run["id"], timeout=60)
    assert done["status"] == "succeeded", jobs.tail(done, 30)
    assert done["output_ref"] == "testloop-v1"
    assert [c["step"] for c in loop_registry.checkpoints(run["id"])] == [6, 3]
    assert any("published testloop-v1" in line for line in jobs.tail(done, 50))

    listed = run_cli("runs", "--json", registry=loop_registry, check=True)
    row = json.loads(listed.stdout)[0]
    assert (row["id"], row["status"], row["output_ref"]) == (run["id"], "succeeded", "testloop-v1")
    assert (row["progress_step"], row["progress_total"]) == (6, 6)
    table = run_cli("runs", registry=loop_registry, check=True).stdout
    assert run["id"] in table and "succeeded" in table
    logs = run_cli("logs", run["id"], registry=loop_registry, check=True).stdout
    assert "published testloop-v1" in logs
    assert run_cli("logs", run["id"], "-n", "1", registry=loop_registry, check=True).stdout.count("\n") == 1


def test_logs_follow_prints_until_the_run_ends(loop_registry, tmp_path):
    run = jobs.submit(loop_registry, loop_request(numbers_file(tmp_path), steps=8, sleep=0.1))
    followed = run_cli("logs", "-f", run["id"], registry=loop_registry, check=True)
    assert "step 8" in followed.stdout and "published testloop-v1" in followed.stdout
    assert loop_registry.run(run["id"])["status"] == "succeeded"


def test_a_killed_run_is_marked_interrupted_on_the_next_look(loop_registry, tmp_path):
    run = jobs.submit(loop_registry, loop_request(numbers_file(tmp_path), steps=500, sleep=0.05))
    wait_until(lambda: _running_with_progress(loop_registry, run["id"]), what="progress")
    os.killpg(run["pid"], signal.SIGKILL)
    wait_until(lambda: jobs.refresh(loop_registry), what="refresh to notice")
    assert loop_registry.run(run["id"])["status"] == "interrupted"
    listed = json.loads(run_cli("runs", "--json", registry=loop_registry, check=True).stdout)
    assert listed[0]["status"] == "interrupted" and "process ended" in listed[0]["error"]


def test_cancel_saves_a_checkpoint_and_ends_cancelled(loop_registry, tmp_path):
    run = jobs.submit(loop_registry, loop_request(numbers_file(tmp_path), steps=500, sleep=0.05,
                                                  save_steps=1000))
    wait_until(lambda: _running_with_progress(loop_registry, run["id"]), what="progress")
    cancelled = run_cli("cancel", "--wait", run["id"], registry=loop_registry, check=True)
    assert "ended cancelled" in cancelled.stderr
    ended = loop_registry.run(run["id"])
    assert ended["status"] == "cancelled" and ended["output_ref"] is None
    [checkpoint] = loop_registry.checkpoints(run["id"])
    assert checkpoint["step"] == ended["progress_step"]

    before = dump_registry(loop_registry.root)
    again = run_cli("cancel", run["id"], registry=loop_registry)
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "already ended (cancelled)" in again.stderr and "hint:" in again.stderr
    assert dump_registry(loop_registry.root) == before
    with pytest.raises(ConflictError):
        jobs.cancel(loop_registry, run["id"])


def test_a_run_waits_queued_while_another_holds_its_gpus(loop_registry, tmp_path):
    data = numbers_file(tmp_path)
    holder = jobs.submit(loop_registry, loop_request(data, steps=500, sleep=0.05), gpus="0")
    wait_until(lambda: _running_with_progress(loop_registry, holder["id"], 1), what="holder running")
    waiting = jobs.submit(loop_registry, loop_request(data, steps=3), gpus="1,0")
    behind = jobs.submit(loop_registry, loop_request(data, steps=3), gpus="1")  # after `waiting`
    free = jobs.submit(loop_registry, loop_request(data, steps=3), gpus="2")
    assert jobs.wait(loop_registry, free["id"], timeout=60)["status"] == "succeeded"
    for run in (waiting, behind):
        wait_until(lambda: any("held by run" in line for line in jobs.tail(run, 5)), what="waiting note")
        assert loop_registry.run(run["id"])["status"] == "queued"

    jobs.cancel(loop_registry, behind["id"])
    ended = jobs.wait(loop_registry, behind["id"], timeout=30)
    assert ended["status"] == "cancelled" and ended["error"] == "cancelled while queued"
    jobs.cancel(loop_registry, holder["id"])
    assert jobs.wait(loop_registry, waiting["id"], timeout=60)["status"] == "succeeded"
    assert loop_registry.run(holder["id"])["status"] == "cancelled"
    assert "[adaptr] devices: 1,0" in jobs.tail(waiting, 50)


def test_a_failing_stage_ends_failed_with_its_error(loop_registry, tmp_path):
    run = jobs.submit(loop_registry, loop_request(numbers_file(tmp_path), steps=5, fail_at=3))
    ended = jobs.wait(loop_registry, run["id"], timeout=60)
    assert ended["status"] == "failed" and "failing at step 3" in ended["error"]


@pytest.mark.parametrize("change, error", [
    ({"executor": "nosuch"}, NotFoundError),
    ({"gpus": "0,x"}, UsageError),
    ({"gpus": "1,1"}, UsageError),
    ({"options": {"processes": 2}}, UsageError),
    ({"executor": "accelerate", "options": {"processes": 0}}, UsageError),
    ({"executor": "accelerate", "options": {"nodes": 2}}, UsageError),
    ({"config": {"stepz": 3}}, UsageError),
    ({"data": "missing.txt"}, UsageError),
])
def test_bad_submissions_write_nothing(loop_registry, tmp_path, change, error):
    request = loop_request(numbers_file(tmp_path), **change.pop("config", {}))
    if "data" in change:
        request.data = str(tmp_path / change.pop("data"))
    before = dump_registry(loop_registry.root)
    with pytest.raises(error):
        jobs.submit(loop_registry, request, **change)
    assert dump_registry(loop_registry.root) == before


def test_unknown_run_is_a_one_line_error(loop_registry):
    before = dump_registry(loop_registry.root)
    for args in (("logs", "nope"), ("cancel", "nope"), ("resume", "nope")):
        proc = run_cli(*args, registry=loop_registry)
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert "unknown run 'nope'" in proc.stderr
    assert dump_registry(loop_registry.root) == before


def test_tail_reads_only_the_end(tmp_path):
    run = {"run_dir": str(tmp_path)}
    (tmp_path / jobs.LOG_NAME).write_text("".join(f"line {i}\n" for i in range(5000)))
    assert jobs.tail(run, 3) == ["line 4997", "line 4998", "line 4999"]
    assert jobs.tail({"run_dir": str(tmp_path / "none")}, 3) == []


def test_other_ranks_never_write_to_the_registry(loop_registry, tmp_path, monkeypatch):
    from adaptr import stages

    ctx = stages.prepare(loop_registry, loop_request(numbers_file(tmp_path)))
    run = loop_registry.create_run(stage="testloop", request={}, config={})
    before = dump_registry(loop_registry.root)
    monkeypatch.setenv("RANK", "1")
    ctx.run = run
    ctx.progress(1, 2, {"loss": 1.0})
    assert ctx.save_checkpoint(1, tmp_path) is None
    assert ctx.publish_adapter(tmp_path, record={}) is None
    with pytest.raises(RuntimeError, match="reserved to rank 0"):
        loop_registry.update_run(run["id"], progress_step=1)
    assert dump_registry(loop_registry.root) == before


def test_an_unimportable_extra_plugin_is_a_one_line_error(registry):
    proc = run_cli("plugins", registry=registry, env={"ADAPTR_EXTRA_PLUGINS": "no_such_adaptr_plugin"})
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "ADAPTR_EXTRA_PLUGINS names 'no_such_adaptr_plugin'" in proc.stderr
