"""Real SFT on the tiny CPU model through the local SLURM cluster: a version is published, and a
run stopped by SLURM's warning signal, requeued and resumed ends with the adapter and losses of
an uninterrupted run (plain transformers/PEFT training in this process is the reference). No
process of the job ever opens adaptr.db: it reports through its journal (adaptr/journal.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from safetensors.torch import load_file

from adaptr import jobs, run_stage
from jobs.helpers import losses, wait_until
from jobs.test_training_jobs import sft_data, sft_request  # noqa: F401  (fixture)

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("slurm")]


def _adapter(registry, ref: str) -> dict:
    version = registry.verified(registry.resolve(ref))
    return load_file(Path(version["path"]) / "adapter_model.safetensors")


# Every Python process of the job (SLURM_JOB_ID set) logs each file it opens and each SQLite
# database it connects to, through the interpreter's audit hooks (PEP 578): Python's open(),
# os.open() and sqlite3.connect() all raise them, before the open is tried.
AUDIT = """
import json, os, sys
if os.environ.get("SLURM_JOB_ID") and os.environ.get("ADAPTR_TEST_OPEN_LOG"):
    _fd = os.open(os.environ["ADAPTR_TEST_OPEN_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    with open("/proc/self/cmdline", "rb") as _cmd:
        os.write(_fd, (json.dumps([os.getpid(), "argv", _cmd.read().replace(b"\\0", b" ").decode()]) + "\\n").encode())
    def _hook(event, args, _fd=_fd, _write=os.write, _dumps=json.dumps, _pid=os.getpid):
        if event in ("open", "sqlite3.connect") and args and isinstance(args[0], (str, bytes, os.PathLike)):
            _write(_fd, (_dumps([_pid(), event, os.fsdecode(args[0])]) + "\\n").encode())
    sys.addaudithook(_hook)
"""


def _looked(registry, run_id: str) -> dict:
    jobs.refresh(registry)  # the host ingests the job's journal on a look
    return registry.run(run_id)


def test_sft_through_slurm_stopped_by_usr1_requeued_and_resumed_equals_an_uninterrupted_run(
        slurm_cluster, registry_with_base, sft_data, tmp_path, monkeypatch):
    from adaptr_slurm.job import newest_of_chain

    hooks, opened = tmp_path / "hooks", tmp_path / "opened.jsonl"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(AUDIT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(hooks), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("ADAPTR_TEST_OPEN_LOG", str(opened))
    registry = registry_with_base
    settings = {"max_steps": 16, "per_device_train_batch_size": 2}
    reference = run_stage(registry, sft_request(sft_data, save_steps=0, **settings))
    run = jobs.submit(registry, sft_request(sft_data, save_steps=0, **settings), executor="slurm")
    assert run["job_id"]
    wait_until(lambda: _looked(registry, run["id"])["progress_step"] >= 3, timeout=180, what="training steps")
    subprocess.run(["scancel", "--signal=USR1", run["job_id"]], check=True)  # as --signal=USR1@90 does
    first = jobs.wait(registry, run["id"], timeout=120)
    assert first["status"] == "interrupted", (first["error"], jobs.tail(first, 30))
    stopped_at = registry.checkpoints(run["id"])[0]["step"]
    assert 3 <= stopped_at < 16
    resumed = wait_until(lambda: jobs.refresh(registry) is not None and (
        r := newest_of_chain(registry, run["id"]))["id"] != run["id"] and r, timeout=60, what="the resume run")
    final = jobs.wait(registry, resumed["id"], timeout=300)
    assert final["status"] == "succeeded", (final["error"], jobs.tail(final, 30))
    assert (final["resumed_from_run"], final["resumed_from_step"], final["job_id"]) == (
        run["id"], stopped_at, run["job_id"])
    expected = losses(registry, reference["id"])
    got = {s: v for s, v in losses(registry, run["id"]).items() if s <= stopped_at}
    got.update(losses(registry, final["id"]))
    assert got == expected  # float equality, every step
    want, have = _adapter(registry, reference["output_ref"]), _adapter(registry, final["output_ref"])
    assert want.keys() == have.keys() and all((want[k] == have[k]).all() for k in want)

    wait_until(lambda: subprocess.run(["squeue", "-h", "--states=all", "-j", run["job_id"], "-o", "%T"],
                                      capture_output=True, text=True).stdout.strip() == "COMPLETED",
               timeout=60, what="the job's last step (`end`)")
    seen = [json.loads(line) for line in opened.read_text().splitlines()]
    pids = {pid for pid, _, _ in seen}
    workers = {pid for pid, event, path in seen if event == "sqlite3.connect" and "registry-snapshot.db" in path}
    started = [path for _, event, path in seen if event == "argv"]
    assert len(workers) >= 6, started  # begin, the worker and end, in both starts of the job: the hook ran there
    assert [s for s in seen if Path(s[2]).name.startswith("adaptr.db")] == [], pids  # adaptr.db, -wal, -shm
    journal = Path(run["run_dir"]) / "journal.jsonl"
    ops = [json.loads(line)["op"] for line in journal.read_text().splitlines()]
    assert "publish_adapter" in ops and ops[-1] == "close" and "create_run" in ops, ops


def test_two_ranks_through_srun_train_over_gloo_and_publish_one_version(slurm_cluster, registry_with_base, sft_data):
    """Two tasks on the one node (CPUs=2), ranks from SLURM's env, env:// rendezvous: the path a
    multi-node job takes, on one node. A real multi-node run is not possible here."""
    registry = registry_with_base
    run = jobs.submit(registry, sft_request(sft_data, max_steps=4, per_device_train_batch_size=1),
                      executor="slurm", options={"processes": 2})
    final = jobs.wait(registry, run["id"], timeout=300)
    assert final["status"] == "succeeded", (final["error"], jobs.tail(final, 40))
    log = "\n".join(jobs.tail(final, 400))
    assert registry.resolve(final["output_ref"])["run_id"] == run["id"]
    assert len(registry.runs()) == 1 and len(registry.query("SELECT id FROM adapters")) == 1
    script = (Path(final["run_dir"]) / "slurm.sbatch").read_text()
    assert "#SBATCH --ntasks-per-node=2" in script and "RANK=$SLURM_PROCID" in script, script
    assert "[rank1]:" in log and "DDP" in log, log  # torch's own rank-prefixed DDP warning from rank 1
