"""Races and identity: two resumes of one run, removing what a run reads, a held lock, a base
that only looks like a derived one, merge weights that are not numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import run_cli

from adaptr import Registry
from adaptr.demo import PREFERENCE_DATA, SFT_DATA, data_file

from .test_verify_before_use import assert_refused, snapshot

SFT, PREFS = str(data_file(SFT_DATA)), str(data_file(PREFERENCE_DATA))
QUICK = ["--set", "max_length=48", "--set", "per_device_train_batch_size=4", "--r", "4",
         "--lora-alpha", "8", "--logging-steps", "1"]


def _wait(predicate, timeout=120.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _run(reg_dir, run_id) -> dict:
    with Registry(reg_dir / "adaptr.db") as registry:
        return registry.run(run_id)


def _interrupted_run(reg_dir) -> str:
    """A real SFT run killed (SIGKILL) right after it recorded its checkpoint at step 2."""
    started = run_cli("train", "sft", "--base", "tiny", "--data", SFT, "--name", "cut", "--max-steps", "4",
                      "--save-steps", "2", *QUICK, "--detach", registry=reg_dir,
                      env={"ADAPTR_TEST_HANG_AT": "checkpoint-recorded-2"}, check=True)
    run_id = started.stdout.strip()
    with Registry(reg_dir / "adaptr.db") as registry:
        _wait(lambda: registry.checkpoints(run_id), what="the checkpoint at step 2")
        os.killpg(_run(reg_dir, run_id)["pid"], signal.SIGKILL)
    _wait(lambda: json.loads(run_cli("runs", "--json", registry=reg_dir).stdout)[0]["status"] == "interrupted",
          what="the run to show as interrupted")
    return run_id


@pytest.mark.slow
def test_of_two_resumes_at_once_exactly_one_goes_on(reg_dir):
    run_id = _interrupted_run(reg_dir)
    env = {**os.environ, "ADAPTR_REGISTRY": str(reg_dir)}
    exe = os.path.join(os.path.dirname(sys.executable), "adaptr")
    procs = [subprocess.Popen([exe, "resume", run_id], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
    codes = sorted(code for code, _, _ in results)
    assert codes == [0, 2], results
    loser = next(err for code, _, err in results if code == 2)
    assert f"run {run_id} was already resumed by run" in loser and loser.count("\n") == 1
    with Registry(reg_dir / "adaptr.db") as registry:
        resumes = registry.query("SELECT id, status FROM runs WHERE resumed_from_run = ?", [run_id])
        assert [r["status"] for r in resumes] == ["succeeded"]
        assert [a["ref"] for a in registry.adapters() if a["name"] == "cut"] == ["cut-v1"]


@pytest.mark.slow
def test_a_version_a_run_reads_cannot_be_removed_until_it_ends(reg_dir):
    started = run_cli("train", "sft", "--from", "imp-v1", "--data", SFT, "--max-steps", "5000", *QUICK,
                      "--detach", registry=reg_dir, check=True)
    run_id = started.stdout.strip()
    try:
        _wait(lambda: _run(reg_dir, run_id)["progress_step"] > 0, what="the run to step")
        files = (reg_dir / "adapters" / "imp" / "v1").iterdir
        before = sorted(files())
        assert_refused(run_cli("rm", "imp-v1", registry=reg_dir),
                       f"imp-v1 is in use by run {run_id} (running)", f"adaptr cancel {run_id}")
        assert sorted(files()) == before and before  # its files are all still there
    finally:
        run_cli("cancel", run_id, "--wait", registry=reg_dir)
    assert _run(reg_dir, run_id)["status"] == "cancelled"
    assert run_cli("rm", "imp-v1", registry=reg_dir).returncode == 0  # the run is over


def test_rm_force_never_leaves_a_stack_that_loads_without_its_layer(reg_dir):
    before = snapshot(reg_dir)
    for args in (["rm", "sft-v1"], ["rm", "sft-v1", "--force"]):
        assert_refused(run_cli(*args, registry=reg_dir), "st-v1 is stacked on sft-v1 and loads only with it",
                       "adaptr rm st-v1")
    assert snapshot(reg_dir) == before
    assert run_cli("rm", "st-v1", registry=reg_dir).returncode == 0
    assert run_cli("rm", "sft-v1", registry=reg_dir).returncode == 0


def test_a_write_blocked_past_the_busy_timeout_names_the_holder(reg_dir):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sqlite3, sys, time; c = sqlite3.connect(sys.argv[1]); "
         "c.execute('PRAGMA journal_mode'); c.execute('BEGIN IMMEDIATE'); print('holding', flush=True); "
         "time.sleep(60)", str(reg_dir / "adaptr.db")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "holding"
        proc = run_cli("tag", "sft-v1", "prod", registry=reg_dir, env={"ADAPTR_BUSY_TIMEOUT": "1"})
        line = assert_refused(proc, f"is locked by process {holder.pid} (python", "gave up after 1s",
                              f"kill {holder.pid}")
        print(line)
    finally:
        holder.kill()
        holder.wait()
    assert run_cli("tag", "sft-v1", "prod", registry=reg_dir).returncode == 0


@pytest.mark.slow
def test_mode_merge_finds_its_derived_base_by_lineage_not_by_name(reg_dir):
    impostor = run_cli("base", "add", "sft-v1-merged", "--from", str(reg_dir / "models" / "tiny"),
                       registry=reg_dir)
    assert impostor.returncode == 0, impostor.stderr
    for name in ("m1", "m2"):
        proc = run_cli("train", "dpo", "--from", "sft-v1", "--mode", "merge", "--data", PREFS, "--name", name,
                       "--max-steps", "1", *QUICK, registry=reg_dir)
        assert proc.returncode == 0, proc.stderr
    with Registry(reg_dir / "adaptr.db") as registry:
        m1, m2 = registry.resolve("m1-v1"), registry.resolve("m2-v1")
        assert m1["base"] == m2["base"] == "sft-v1-merged-2"  # made once, then found by its edge
        derived = registry.base("sft-v1-merged-2")
        assert derived["source_kind"] == "derived"
        assert any(p["ref"] == "sft-v1" and p["relation"] == "merged" for p in derived["parents"])
        assert registry.base("sft-v1-merged")["source_kind"] == "local"


@pytest.mark.parametrize("args,words", [
    (["--method", "linear", "--weights", "nan,1"], "merge weight nan is not a finite number"),
    (["--method", "linear", "--weights", "inf,1"], "merge weight inf is not a finite number"),
    (["--method", "linear", "--weights", "0,0"], "every merge weight is 0"),
    (["--method", "ties", "--density", "nan"], "density=nan is not a finite number"),
    (["--method", "ties", "--density", "1.5"], "--density 1.5 is outside (0, 1]"),
], ids=["nan weight", "inf weight", "zero weights", "nan density", "density above 1"])
def test_merges_take_finite_weights_and_densities_in_range(args, words, reg_dir):
    before = snapshot(reg_dir)
    assert_refused(run_cli("merge", "sft-v1", "imp-v1", *args, "--name", "mix", registry=reg_dir), words)
    assert snapshot(reg_dir) == before
