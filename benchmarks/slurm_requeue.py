"""SLURM executor costs on a one-node local cluster, against the local executor in the same run.

- submit-to-running: seconds from `jobs.submit` returning to the run's row saying `running`
  (the worker has started and claimed it), for `--executor slurm` and `--executor local`;
- signal-to-first-step-after-resume: seconds from the stop signal to the first training step the
  resumed run records. SLURM: `scancel --signal=USR1` (what `--signal=USR1@90` sends) -> the run
  saves a checkpoint, records its resume run, requeues the job, the job restarts and resumes.
  Local: `adaptr cancel` (SIGTERM) -> checkpoint -> `jobs.submit` of the resume right away.

Tiny SFT on the CPU model (tests' generator). Starts its own cluster with tests/slurm/cluster.sh
(root, the SLURM packages). Prints one JSON object. Usage::

    python benchmarks/slurm_requeue.py [--trials 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SFT = {"max_steps": 60, "per_device_train_batch_size": 2, "r": 4, "lora_alpha": 8, "max_length": 48,
       "logging_steps": 1, "learning_rate": 1e-3}


def poll(predicate, timeout=300.0, every=0.02):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise RuntimeError("timed out")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--executors", default="slurm,local")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = Path(tempfile.mkdtemp(prefix="adaptr-slurm-bench-"))
    started = subprocess.run(["bash", str(REPO / "tests/slurm/cluster.sh"), "start", str(work / "cluster")],
                             capture_output=True, text=True, env={**os.environ, "SLURM_TEST_PORT": "17817"})
    if started.returncode != 0:
        sys.exit(f"no cluster: {started.stderr.strip()}")
    os.environ["SLURM_CONF"] = str(work / "cluster" / "slurm.conf")
    try:
        print(json.dumps(measure(work, args.trials, args.executors.split(",")), indent=1))
    finally:
        subprocess.run(["bash", str(REPO / "tests/slurm/cluster.sh"), "stop", str(work / "cluster")])


def measure(work: Path, trials: int, executors: list[str]) -> dict:
    from adaptr import Registry, StageRequest, jobs
    from adaptr.bases import add_local_base
    from adaptr.hf.tiny import make_tiny_base
    from adaptr_slurm.job import newest_of_chain

    registry = Registry.init(work / "registry")
    add_local_base(registry, "tiny", make_tiny_base(work / "tiny"))
    data = work / "train.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Q{i}: {i}+{i}?", "completion": f" {2 * i}."}) + "\n"
                            for i in range(48)))

    def request(**config):
        return StageRequest(stage="sft", base="tiny", data=str(data), config={**SFT, **config})

    out = {"trials": trials, "submit_to_running_s": {}, "signal_to_first_step_after_resume_s": {}}
    for executor in executors:
        latencies, resumes = [], []
        for _ in range(trials):
            run = jobs.submit(registry, request(), executor=executor)
            t0 = time.monotonic()
            poll(lambda: registry.run(run["id"])["status"] != "queued")
            latencies.append(time.monotonic() - t0)
            poll(lambda: registry.run(run["id"])["progress_step"] >= 3)
            t0 = time.monotonic()
            if executor == "slurm":
                subprocess.run(["scancel", "--signal=USR1", run["job_id"]], check=True)
                poll(lambda: registry.run(run["id"])["status"] not in jobs.ACTIVE)
                resumed = poll(lambda: (r := newest_of_chain(registry, run["id"]))["id"] != run["id"] and r)
            else:
                jobs.cancel(registry, run["id"])
                poll(lambda: registry.run(run["id"])["status"] not in jobs.ACTIVE)
                resumed = jobs.submit(registry, jobs.resume_request(registry, run["id"]), executor="local")
            step = registry.run(resumed["id"])["resumed_from_step"]
            poll(lambda: registry.run(resumed["id"])["progress_step"] > (step or 0))
            resumes.append(time.monotonic() - t0)
            final = jobs.wait(registry, resumed["id"], timeout=600)
            assert final["status"] == "succeeded", final["error"]
        out["submit_to_running_s"][executor] = {"median": statistics.median(latencies), "all": latencies}
        out["signal_to_first_step_after_resume_s"][executor] = {"median": statistics.median(resumes), "all": resumes}
    out["cluster"] = {"cred_expire_s": 10, "sched_interval_s": 2, "bf_interval_s": 2,
                      "note": "a requeued job may start again only after AuthInfo cred_expire (10 s here, "
                              "SLURM's default 120 s), at the next scheduling pass"}
    return out


if __name__ == "__main__":
    main()
