"""The `slurm` executor on the real local cluster: submit, state, logs, cancel, failure, requeue."""

from __future__ import annotations

import json
import os
import signal
import subprocess

import pytest

from adaptr import jobs
from conftest import dump_registry, run_cli
from jobs.conftest import loop_registry, testloop  # noqa: F401  (fixtures)
from jobs.helpers import numbers_file, wait_until

pytestmark = pytest.mark.xdist_group("slurm")


def _loop_args(data, *extra):
    return ("train", "testloop", "--base", "toy", "--data", str(data), "--executor", "slurm", *extra)


def _submit(registry, *args) -> dict:
    done = run_cli(*args, registry=registry)
    assert done.returncode == 0, done.stderr
    return registry.run(done.stdout.strip())


def _chain_end(registry, run_id: str) -> dict:
    from adaptr_slurm.job import newest_of_chain

    jobs.refresh(registry)  # the job reports through its journal: the host ingests it on a look
    return newest_of_chain(registry, run_id)


def _looked(registry, run_id: str) -> dict:
    """The run as the registry's host sees it after a look (`adaptr runs` does this)."""
    jobs.refresh(registry)
    return registry.run(run_id)


def test_a_run_goes_through_sbatch_and_follows_the_scheduler(slurm_cluster, loop_registry, tmp_path):
    run = _submit(loop_registry, *_loop_args(numbers_file(tmp_path), "--set", "steps=6", "--set", "sleep=0.2",
                                             "--set", "save_steps=3"))
    assert run["status"] == "queued" and run["job_id"] and run["executor"] == "slurm"
    script = (tmp_path / "registry" / "runs" / run["id"] / "slurm.sbatch").read_text()
    assert "#SBATCH --signal=USR1@90" in script and "#SBATCH --requeue" in script
    followed = run_cli("logs", "-f", run["id"], registry=loop_registry, check=True)  # the job's output file
    assert "published testloop" in followed.stdout  # the job's line; the host numbers the version
    done = loop_registry.run(run["id"])
    assert done["status"] == "succeeded" and done["output_ref"] == "testloop-v1"
    assert [c["step"] for c in loop_registry.checkpoints(run["id"])] == [6, 3]
    listed = json.loads(run_cli("runs", "--json", registry=loop_registry, check=True).stdout)
    assert (listed[0]["id"], listed[0]["job_id"], listed[0]["status"]) == (run["id"], run["job_id"], "succeeded")
    state = subprocess.run(["squeue", "-h", "--states=all", "-j", run["job_id"], "-o", "%T"],
                           capture_output=True, text=True).stdout.strip()
    assert state in ("COMPLETED", "COMPLETING")


def test_cancel_signals_the_job_which_checkpoints_and_ends_cancelled(slurm_cluster, loop_registry, tmp_path):
    run = _submit(loop_registry, *_loop_args(numbers_file(tmp_path), "--set", "steps=400", "--set", "sleep=0.05"))
    wait_until(lambda: _looked(loop_registry, run["id"])["progress_step"] >= 3, timeout=90, what="progress")
    done = run_cli("cancel", "--wait", run["id"], registry=loop_registry)
    assert done.returncode == 0, done.stderr
    ended = loop_registry.run(run["id"])
    assert ended["status"] == "cancelled", (ended["error"], jobs.tail(ended, 20))
    steps = [c["step"] for c in loop_registry.checkpoints(run["id"])]
    assert steps and 3 <= steps[0] < 400  # the checkpoint it saved on the way out
    assert not subprocess.run(["squeue", "-h", "-j", run["job_id"], "-o", "%T"], capture_output=True,
                              text=True).stdout.strip() in ("PENDING", "REQUEUED")  # not requeued

    # `adaptr resume RUN --detach` submits a new job with the run's options and continues it
    done = run_cli("resume", run["id"], "--detach", "--set", "sleep=0", "--inexact",
                   registry=loop_registry)
    assert done.returncode == 0, done.stderr
    resumed = jobs.wait(loop_registry, done.stdout.strip(), timeout=120)
    assert resumed["status"] == "succeeded" and resumed["executor"] == "slurm", resumed["error"]
    assert resumed["job_id"] not in (None, run["job_id"]) and resumed["resumed_from_step"] == steps[0]


def test_a_failing_job_ends_failed_with_its_log_tail(slurm_cluster, loop_registry, tmp_path):
    run = _submit(loop_registry, *_loop_args(numbers_file(tmp_path), "--set", "steps=10", "--set", "fail_at=2"))
    ended = jobs.wait(loop_registry, run["id"], timeout=120)
    assert ended["status"] == "failed" and "failing at step 2" in ended["error"]
    listed = json.loads(run_cli("runs", "--json", registry=loop_registry, check=True).stdout)
    assert "failing at step 2" in listed[0]["error"]


def test_a_job_killed_outside_adaptr_ends_with_the_scheduler_state(slurm_cluster, loop_registry, tmp_path):
    """The OOM killer SIGKILLs the run's process: it cannot record an end; the batch script's
    `end` does, naming the job. (`scancel --signal=KILL` would not do: SLURM turns it into a
    cancel, SIGTERM first, which the run handles.)"""
    run = _submit(loop_registry, *_loop_args(numbers_file(tmp_path), "--set", "steps=400", "--set", "sleep=0.05"))
    wait_until(lambda: _looked(loop_registry, run["id"])["progress_step"] >= 2, timeout=90, what="progress")
    os.kill(loop_registry.run(run["id"])["pid"], signal.SIGKILL)  # the job runs on this host
    ended = jobs.wait(loop_registry, run["id"], timeout=60)
    assert ended["status"] == "interrupted" and f"SLURM job {run['job_id']} was killed" in ended["error"], ended["error"]


def test_a_worker_that_exits_without_recording_ends_failed_with_the_log_tail(slurm_cluster, loop_registry, tmp_path,
                                                                            monkeypatch):
    monkeypatch.setenv("ADAPTR_TEST_CRASH_AT", "checkpoint-placed")  # os._exit(70) in the job's worker
    run = _submit(loop_registry, *_loop_args(numbers_file(tmp_path), "--set", "steps=10", "--set", "save_steps=3"))
    ended = jobs.wait(loop_registry, run["id"], timeout=120)
    assert ended["status"] == "failed", ended["error"]
    assert f"SLURM job {run['job_id']} exited with status 70" in ended["error"] and "log: " in ended["error"]
    listed = json.loads(run_cli("runs", "--json", registry=loop_registry, check=True).stdout)
    assert "step 3" in listed[0]["error"], listed[0]["error"]


def test_usr1_saves_a_checkpoint_requeues_and_the_requeued_job_resumes(slurm_cluster, loop_registry, tmp_path):
    data = numbers_file(tmp_path)
    reference = _submit(loop_registry, *_loop_args(data, "--set", "steps=60", "--name", "ref"))
    assert jobs.wait(loop_registry, reference["id"], timeout=120)["status"] == "succeeded"
    run = _submit(loop_registry, *_loop_args(data, "--set", "steps=60", "--set", "sleep=0.1"))
    wait_until(lambda: _looked(loop_registry, run["id"])["progress_step"] >= 5, timeout=90, what="progress")
    subprocess.run(["scancel", "--signal=USR1", run["job_id"]], check=True)  # what --signal=USR1@90 sends
    first = jobs.wait(loop_registry, run["id"], timeout=60)
    assert first["status"] == "interrupted" and "SIGUSR1" in first["error"], jobs.tail(first, 20)
    stopped_at = loop_registry.checkpoints(run["id"])[0]["step"]
    assert 5 <= stopped_at < 60
    resumed = wait_until(lambda: (r := _chain_end(loop_registry, run["id"]))["id"] != run["id"] and r,
                         timeout=60, what="the resume run")
    assert resumed["job_id"] == run["job_id"] and resumed["status"] in ("queued", "running")
    final = jobs.wait(loop_registry, resumed["id"], timeout=180)
    assert final["status"] == "succeeded", (final["error"], jobs.tail(final, 30))
    assert (final["resumed_from_run"], final["resumed_from_step"]) == (run["id"], stopped_at)
    ref_losses = {r["step"]: r["value"] for r in loop_registry.metrics(reference["id"], "loss")}
    got = {r["step"]: r["value"] for r in loop_registry.metrics(run["id"], "loss") if r["step"] <= stopped_at}
    got.update({r["step"]: r["value"] for r in loop_registry.metrics(final["id"], "loss")})
    assert got == ref_losses
    log = (tmp_path / "registry" / "runs" / run["id"] / "run.log").read_text()
    assert f"requeueing job {run['job_id']}" in log


def test_bad_slurm_options_exit_2_and_write_nothing(slurm_cluster, loop_registry, tmp_path):
    data = numbers_file(tmp_path)
    before = dump_registry(loop_registry.root)
    for extra, words in ((("--partition", "nosuch"), "SLURM refuses this job"),
                         (("--time", "1"), "leaves no time to train"),
                         (("--time", "soon"), "is not a SLURM time limit"),
                         (("--nodes", "0"), "is not a number of at least 1"),
                         (("--profile", "gpu"), "no SLURM profile 'gpu'")):
        done = run_cli(*_loop_args(data, *extra), registry=loop_registry)
        assert done.returncode == 2 and words in done.stderr, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert dump_registry(loop_registry.root) == before


def test_no_slurm_on_the_path_exits_2_and_writes_nothing(loop_registry, tmp_path):
    """Needs no cluster: PATH holds only this Python's bin directory."""
    import sys
    from pathlib import Path

    before = dump_registry(loop_registry.root)
    done = run_cli(*_loop_args(numbers_file(tmp_path)), registry=loop_registry,
                   env={"PATH": str(Path(sys.executable).parent)})
    assert done.returncode == 2 and "needs sbatch, which is not on PATH" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert dump_registry(loop_registry.root) == before


def test_no_controller_exits_2_with_a_hint(loop_registry, tmp_path):
    if subprocess.run(["which", "sbatch"], capture_output=True).returncode != 0:
        pytest.skip("no sbatch on PATH")
    done = run_cli(*_loop_args(numbers_file(tmp_path)), registry=loop_registry,
                   env={"SLURM_CONF": str(tmp_path / "nosuch.conf")})
    assert done.returncode == 2 and "SLURM_CONF names" in done.stderr, done.stderr


def test_scontrol_requeue_mid_run_resumes_exactly_from_the_checkpoint_saved_on_sigterm(
        slurm_cluster, loop_registry, tmp_path):
    """A requeue from outside (an admin, preemption with requeue): SLURM SIGTERMs the job; without
    `adaptr cancel` that means interrupted, and the restarted job resumes the run."""
    data = numbers_file(tmp_path)
    reference = _submit(loop_registry, *_loop_args(data, "--set", "steps=60", "--name", "ref"))
    assert jobs.wait(loop_registry, reference["id"], timeout=120)["status"] == "succeeded"
    run = _submit(loop_registry, *_loop_args(data, "--set", "steps=60", "--set", "sleep=0.1"))
    wait_until(lambda: _looked(loop_registry, run["id"])["progress_step"] >= 5, timeout=90, what="progress")
    subprocess.run(["scontrol", "requeue", run["job_id"]], check=True)
    first = jobs.wait(loop_registry, run["id"], timeout=60)
    assert first["status"] == "interrupted" and "SIGTERM" in first["error"], (first["error"], jobs.tail(first, 20))
    stopped_at = loop_registry.checkpoints(run["id"])[0]["step"]
    resumed = wait_until(lambda: (r := _chain_end(loop_registry, run["id"]))["id"] != run["id"] and r,
                         timeout=90, what="the resume run")
    final = jobs.wait(loop_registry, resumed["id"], timeout=180)
    assert final["status"] == "succeeded", (final["error"], jobs.tail(final, 30))
    assert final["resumed_from_step"] == stopped_at
    ref_losses = {r["step"]: r["value"] for r in loop_registry.metrics(reference["id"], "loss")}
    got = {r["step"]: r["value"] for r in loop_registry.metrics(run["id"], "loss") if r["step"] <= stopped_at}
    got.update({r["step"]: r["value"] for r in loop_registry.metrics(final["id"], "loss")})
    assert got == ref_losses


def test_a_job_that_can_never_start_is_cancelled_and_its_run_fails_with_the_reason(slurm_cluster, loop_registry,
                                                                                   tmp_path):
    """The partition's limit drops under the job's time while it waits: SLURM keeps it pending
    (PartitionTimeLimit) forever; the next look cancels it and says why."""
    subprocess.run(["scontrol", "update", "PartitionName=debug", "State=DOWN"], check=True)
    try:
        run = _submit(loop_registry, *_loop_args(numbers_file(tmp_path), "--time", "10:00"))
        subprocess.run(["scontrol", "update", "PartitionName=debug", "MaxTime=5", "State=UP"], check=True)
        wait_until(lambda: loop_registry.run(run["id"])["status"] != "queued" or jobs.refresh(loop_registry),
                   timeout=60, what="the look that ends it")
        ended = loop_registry.run(run["id"])
        assert ended["status"] == "failed" and "can never start (PartitionTimeLimit)" in ended["error"], ended["error"]
        state = subprocess.run(["squeue", "-h", "--states=all", "-j", run["job_id"], "-o", "%T"],
                               capture_output=True, text=True).stdout.strip()
        assert state == "CANCELLED"
    finally:
        subprocess.run(["scontrol", "update", "PartitionName=debug", "MaxTime=INFINITE", "State=UP"], check=True)


def test_the_time_limit_warning_from_slurm_itself_requeues_and_the_run_finishes_exactly(
        slurm_cluster, loop_registry, tmp_path):
    """No signal sent by the test: a one-minute time limit with the warning 20 s before it
    (SLURM checks in a coarse loop and may warn earlier). Each start trains until warned, saves,
    requeues; the chain finishes with the losses of an uninterrupted run."""
    (loop_registry.root / "slurm.yaml").write_text("short: {time: '1', signal_seconds: 20}\n")
    data = numbers_file(tmp_path)
    reference = _submit(loop_registry, *_loop_args(data, "--set", "steps=150", "--name", "ref"))
    assert jobs.wait(loop_registry, reference["id"], timeout=120)["status"] == "succeeded"
    run = _submit(loop_registry, *_loop_args(data, "--set", "steps=150", "--set", "sleep=0.25",
                                             "--profile", "short"))
    assert "#SBATCH --signal=USR1@20" in (tmp_path / "registry" / "runs" / run["id"] / "slurm.sbatch").read_text()
    final = wait_until(lambda: (r := _chain_end(loop_registry, run["id"]))["status"] not in jobs.ACTIVE
                       and r["status"] != "interrupted" and r, timeout=400, what="the chain to finish")
    assert final["status"] == "succeeded", (final["error"], jobs.tail(final, 30))
    first = loop_registry.run(run["id"])
    assert first["status"] == "interrupted" and "SIGUSR1" in first["error"]
    chain, losses_seen = [], {}
    current = final
    while current is not None:
        chain.append(current)
        current = loop_registry.run(current["resumed_from_run"]) if current["resumed_from_run"] else None
    for earlier in reversed(chain):
        for row in loop_registry.metrics(earlier["id"], "loss"):
            losses_seen[row["step"]] = row["value"]  # a resume replays nothing before its checkpoint
    assert losses_seen == {r["step"]: r["value"] for r in loop_registry.metrics(reference["id"], "loss")}
    assert len(chain) >= 2 and all(r["job_id"] == run["job_id"] for r in chain)


def test_runs_lists_slurm_runs_from_a_machine_without_slurm_leaving_them_as_they_are(
        slurm_cluster, loop_registry, tmp_path):
    """Not knowing (no squeue here, the controller down) ends nothing."""
    import sys
    from pathlib import Path

    run = _submit(loop_registry, *_loop_args(numbers_file(tmp_path), "--set", "steps=400", "--set", "sleep=0.05"))
    wait_until(lambda: _looked(loop_registry, run["id"])["status"] == "running", timeout=60, what="running")
    listed = run_cli("runs", "--json", registry=loop_registry, env={"PATH": str(Path(sys.executable).parent)})
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)[0]["status"] == "running"
    run_cli("cancel", "--wait", run["id"], registry=loop_registry, check=True)
    assert loop_registry.run(run["id"])["status"] == "cancelled"
