"""The generated batch script and the profiles (no cluster needed except where a fixture asks)."""

from __future__ import annotations

import json
import subprocess

import pytest

from adaptr_slurm import executor as slurm
from conftest import dump_registry, run_cli
from jobs.conftest import loop_registry, testloop  # noqa: F401  (fixtures)
from jobs.helpers import numbers_file

pytestmark = pytest.mark.xdist_group("slurm")


def _script(tmp_path, **options) -> str:
    run = {"id": "20260101-000000-abcd", "run_dir": str(tmp_path / "runs" / "r")}
    return slurm.batch_script(run, options, str(tmp_path / "registry"), python="/opt/py/bin/python")


def test_a_multi_node_script_asks_for_nodes_gpus_and_the_warning_and_starts_one_rank_per_gpu(tmp_path):
    """What a real multi-node job would run; a multi-node run is impossible on this machine."""
    text = _script(tmp_path, nodes=2, gpus_per_node=4, time="4:00:00", partition="gpu", account="lab", qos="high")
    lines = text.splitlines()
    for wanted in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4", "#SBATCH --gpus-per-node=4",
                   "#SBATCH --time=4:00:00", "#SBATCH --partition=gpu", "#SBATCH --account=lab",
                   "#SBATCH --qos=high", "#SBATCH --signal=USR1@90", "#SBATCH --requeue",
                   "#SBATCH --open-mode=append", f"#SBATCH --output={tmp_path}/runs/r/run.log"):
        assert wanted in lines, wanted
    assert lines.index("#SBATCH --nodes=2") < next(i for i, line in enumerate(lines) if not line.startswith("#"))
    assert 'export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)' in lines
    assert "RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS" in text
    assert any(line.startswith("srun --kill-on-bad-exit=1 ") and "-m adaptr _worker" in line for line in lines)
    assert lines[-1] == 'exec "$PYTHON" -m adaptr_slurm.job end "$run" "$?"'
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0  # it parses


def test_a_single_task_script_sets_no_rank_env_and_takes_the_configured_warning(tmp_path):
    text = _script(tmp_path, signal_seconds=300)
    assert "#SBATCH --signal=USR1@300" in text and "#SBATCH --nodes=1" in text
    assert "#SBATCH --ntasks-per-node=1" in text and "MASTER_ADDR" not in text and "rank_env=''" in text
    assert "--gpus-per-node" not in text and "--time" not in text


@pytest.mark.parametrize("value, seconds", [("30", 1800), ("10:30", 630), ("1:00:00", 3600), ("2-0", 172800),
                                            ("1-2:3", 93780), ("1-2:3:4", 93784)])
def test_time_limits_in_slurms_formats(value, seconds):
    assert slurm.time_seconds(value) == seconds


def test_a_profile_fills_what_the_command_line_leaves_out(slurm_cluster, loop_registry, tmp_path, monkeypatch):
    config_home = tmp_path / "config"
    (config_home / "adaptr").mkdir(parents=True)
    (config_home / "adaptr" / "slurm.yaml").write_text(
        "default: {time: '20:00', signal_seconds: 45}\nbig: {nodes: 2, time: '30:00'}\n")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(config_home))
    data = numbers_file(tmp_path)
    done = run_cli("train", "testloop", "--base", "toy", "--data", str(data), "--set", "steps=2",
                   "--executor", "slurm", "--time", "25:00", registry=loop_registry)
    assert done.returncode == 0, done.stderr
    run = loop_registry.run(done.stdout.strip())
    options = json.loads((tmp_path / "registry" / "runs" / run["id"] / "job.json").read_text())["options"]
    assert options == {"time": "25:00", "signal_seconds": 45}  # the command line wins
    script = (tmp_path / "registry" / "runs" / run["id"] / "slurm.sbatch").read_text()
    assert "#SBATCH --time=25:00" in script and "#SBATCH --signal=USR1@45" in script
    from adaptr import jobs

    assert jobs.wait(loop_registry, run["id"], timeout=120)["status"] == "succeeded"

    # beside the registry wins over the user's file; a profile the cluster cannot run is refused first
    (tmp_path / "registry" / "slurm.yaml").write_text("big: {nodes: 2}\n")
    before = dump_registry(loop_registry.root)
    done = run_cli("train", "testloop", "--base", "toy", "--data", str(data), "--executor", "slurm",
                   "--profile", "big", registry=loop_registry)
    assert done.returncode == 2 and "SLURM refuses this job" in done.stderr, done.stderr
    assert dump_registry(loop_registry.root) == before
    done = run_cli("train", "testloop", "--base", "toy", "--data", str(data), "--executor", "slurm",
                   "--profile", "small", registry=loop_registry)
    assert done.returncode == 2 and "no SLURM profile 'small'" in done.stderr and "big" in done.stderr
