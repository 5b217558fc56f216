"""The local cluster itself: sbatch runs a job, a job gets --signal's USR1 and can requeue itself."""

from __future__ import annotations

import subprocess
import time

import pytest

pytestmark = pytest.mark.xdist_group("slurm")


def _state(job: str) -> str:
    out = subprocess.run(["squeue", "-h", "--states=all", "-j", job, "-o", "%T"], capture_output=True, text=True)
    return out.stdout.strip()


def _wait_state(job: str, wanted: set[str], timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _state(job)
        if state in wanted:
            return state
        time.sleep(0.3)
    raise AssertionError(f"job {job} still {_state(job)!r} after {timeout}s, not {wanted}")


def test_sbatch_runs_a_job_on_this_host(slurm_cluster, tmp_path):
    out = tmp_path / "out.log"
    job = subprocess.run(["sbatch", "--parsable", f"--output={out}", "--wrap", "hostname -s"],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert _wait_state(job, {"COMPLETED", "FAILED"}) == "COMPLETED"
    expected = subprocess.run(["hostname", "-s"], capture_output=True, text=True).stdout
    assert out.read_text() == expected


def test_a_signalled_job_requeues_itself_and_restarts(slurm_cluster, tmp_path):
    out = tmp_path / "out.log"
    script = tmp_path / "job.sh"
    script.write_text(
        "#!/bin/bash\n"
        'echo "start ${SLURM_RESTART_COUNT:-0}"\n'
        'if [ "${SLURM_RESTART_COUNT:-0}" = 0 ]; then\n'
        "  srun bash -c 'trap \"echo got-usr1; exit 0\" USR1; while true; do sleep 0.2; done'\n"
        '  scontrol requeue "$SLURM_JOB_ID"; sleep 30\n'
        "fi\n")
    job = subprocess.run(["sbatch", "--parsable", "--requeue", "--open-mode=append", "--signal=USR1@60",
                          f"--output={out}", str(script)], capture_output=True, text=True, check=True).stdout.strip()
    _wait_state(job, {"RUNNING"})
    deadline = time.monotonic() + 30
    while "start 0" not in (out.read_text() if out.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1)  # the step is up
    subprocess.run(["scancel", "--signal=USR1", job], check=True)
    assert _wait_state(job, {"COMPLETED", "FAILED"}, timeout=120) == "COMPLETED"
    text = out.read_text()
    assert "got-usr1" in text and "start 1" in text, text
