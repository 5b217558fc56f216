"""Real SFT on the tiny CPU model through the local SLURM cluster: a version is published, and a
run stopped by SLURM's warning signal, requeued and resumed ends with the adapter and losses of
an uninterrupted run (plain transformers/PEFT training in this process is the reference)."""

from __future__ import annotations

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


def test_sft_through_slurm_stopped_by_usr1_requeued_and_resumed_equals_an_uninterrupted_run(
        slurm_cluster, registry_with_base, sft_data):
    from adaptr_slurm.job import newest_of_chain

    registry = registry_with_base
    settings = {"max_steps": 16, "per_device_train_batch_size": 2}
    reference = run_stage(registry, sft_request(sft_data, save_steps=0, **settings))
    run = jobs.submit(registry, sft_request(sft_data, save_steps=0, **settings), executor="slurm")
    assert run["job_id"]
    wait_until(lambda: registry.run(run["id"])["progress_step"] >= 3, timeout=180, what="training steps")
    subprocess.run(["scancel", "--signal=USR1", run["job_id"]], check=True)  # as --signal=USR1@90 does
    first = jobs.wait(registry, run["id"], timeout=120)
    assert first["status"] == "interrupted", (first["error"], jobs.tail(first, 30))
    stopped_at = registry.checkpoints(run["id"])[0]["step"]
    assert 3 <= stopped_at < 16
    resumed = wait_until(lambda: (r := newest_of_chain(registry, run["id"]))["id"] != run["id"] and r,
                         timeout=60, what="the resume run")
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
