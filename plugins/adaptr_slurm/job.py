"""Inside the SLURM job: `python -m adaptr_slurm.job begin|end RUN` (the batch script calls them).

`begin RUN` prints the id of the run this start of the job executes: RUN itself the first time,
on a restart (a requeue) the resume run of RUN's newest run — recorded by `end` before it
requeued, or recorded here when the job was requeued without warning (a node failure), from the
newest checkpoint that verifies. It prints nothing when the run has ended (the job then exits).

`end RUN` runs after the job's step: if the run stopped on the time-limit warning (SIGUSR1, it
ended `interrupted` with a checkpoint), it records the run that resumes it (queued, same job id)
and requeues the job.
"""

from __future__ import annotations

import os
import sys

from adaptr import AdaptrError, Registry, jobs

from . import executor as slurm

_RESUMABLE_WHEN_REQUEUED = ("interrupted", "queued", "running")


def newest_of_chain(registry: Registry, run_id: str) -> dict:
    """The run at the end of RUN's resume chain (RUN, the run that resumed it, ...)."""
    run = registry.run(run_id)
    while True:
        rows = registry.query("SELECT id FROM runs WHERE resumed_from_run = ? ORDER BY created_at DESC, id DESC LIMIT 1",
                              [run["id"]])
        if not rows:
            return run
        run = registry.run(rows[0]["id"])


def record_resume(registry: Registry, run: dict, job_id: str) -> dict:
    """The queued run that continues ``run`` from its newest verifying checkpoint, in this job."""
    executor, options = jobs.executor_options(run)
    request = jobs.resume_request(registry, run["id"])
    return jobs.record_queued(registry, request, executor="slurm", options=options, gpus=run["gpus"],
                              job_id=job_id)


def begin(registry: Registry, run_id: str) -> str | None:
    job_id = os.environ.get("SLURM_JOB_ID", "")
    restarted = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    run = newest_of_chain(registry, run_id)
    if run["status"] == "queued":
        return run["id"]
    if not restarted or run["status"] not in _RESUMABLE_WHEN_REQUEUED:
        print(f"[adaptr] run {run['id']} has ended ({run['status']}); nothing to do", file=sys.stderr)
        return None
    if run["status"] == "running":  # requeued without warning: its worker is gone
        with registry.write() as db:
            db.execute("UPDATE runs SET status = 'interrupted', ended_at = ?, error = ? WHERE id = ? AND status = 'running'",
                       [jobs.now(), f"its SLURM job {job_id} was requeued before the run recorded an end", run["id"]])
    if not registry.checkpoints(run["id"]) and not run["resumed_from_run"]:
        print(f"[adaptr] run {run['id']} has no checkpoint to resume from", file=sys.stderr)
        return None
    resumed = record_resume(registry, registry.run(run["id"]), job_id)
    print(f"[adaptr] SLURM job {job_id} restarted: run {resumed['id']} resumes run {run['id']}", file=sys.stderr)
    return resumed["id"]


def end(registry: Registry, run_id: str, step_status: int = 0) -> int:
    run = registry.run(run_id)
    job_id = os.environ.get("SLURM_JOB_ID", "")
    if run["status"] in ("queued", "running"):  # its worker died before it could record an end
        if step_status in (137, 9):  # SIGKILL (the OOM killer, a node agent): resumable
            status, error = "interrupted", f"its process in SLURM job {job_id} was killed before recording an end"
        else:
            status = "failed"
            error = f"its process in SLURM job {job_id} exited with status {step_status} before recording an end"
            last = [line.strip() for line in jobs.tail(run, 5) if line.strip()]
            if last:
                error += "; log: " + " | ".join(last)
        with registry.write() as db:
            db.execute("UPDATE runs SET status = ?, ended_at = ?, error = ? WHERE id = ? "
                       "AND status IN ('queued', 'running')", [status, jobs.now(), error, run_id])
        return 0
    if run["status"] != "interrupted" or run["error"] != jobs.PREEMPT_REASON:
        return 0
    resumed = record_resume(registry, run, job_id)
    print(f"[adaptr] run {run_id} saved a checkpoint on SLURM's warning; run {resumed['id']} resumes it "
          f"after requeueing job {job_id}", file=sys.stderr, flush=True)
    done = slurm.requeue(job_id)
    if done.returncode != 0:
        registry.update_run(resumed["id"], status="failed", ended_at=jobs.now(),
                            error=f"scontrol requeue {job_id} failed: {done.stderr.strip()}")
        print(f"[adaptr] scontrol requeue {job_id} failed: {done.stderr.strip()}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str]) -> int:
    what, run_id, *rest = argv
    registry = Registry.discover()
    try:
        if what == "begin":
            chosen = begin(registry, run_id)
            if chosen:
                print(chosen)
            return 0
        return end(registry, run_id, int(rest[0]) if rest and rest[0].isdigit() else 0)
    except AdaptrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
