"""Inside the SLURM job: `python -m adaptr_slurm.job begin|end RUN` (the batch script calls them).

`begin RUN` prints the id of the run this start of the job executes: the newest run recorded
for the job (RUN the first time). On a restart (a requeue) that is the run `end` recorded before
it requeued; if the newest is still `running` or `interrupted` (requeued without warning: a node
failure, `scontrol requeue`), it records the run that continues it here. It prints nothing when
the run has ended (the job then exits).

`end RUN STEP_STATUS` runs after the job's step. A run still active there died without recording
an end (SIGKILL: interrupted; another exit status: failed, with the log's last lines). A run that
stopped on the time-limit warning (SIGUSR1: interrupted) gets the run that continues it (queued,
same job id) and the job is requeued.

The continuation resumes from the newest checkpoint that verifies (the `resume` stage), or, for a
run stopped before its first checkpoint, runs the same request again.
"""

from __future__ import annotations

import os
import sys

from adaptr import ACTIVE_STATUSES, AdaptrError, Registry, RunStatus, jobs

from . import executor as slurm

_RESUMABLE_WHEN_REQUEUED = (RunStatus.INTERRUPTED, *ACTIVE_STATUSES)


def newest_of_chain(registry: Registry, run_id: str) -> dict:
    """The run at the end of RUN's resume chain (RUN, the run that resumed it, ...)."""
    run = registry.run(run_id)
    while True:
        rows = registry.query("SELECT id FROM runs WHERE resumed_from_run = ? ORDER BY created_at DESC, id DESC LIMIT 1",
                              [run["id"]])
        if not rows:
            return run
        run = registry.run(rows[0]["id"])


def newest_in_job(registry: Registry, run_id: str, job_id: str) -> dict:
    """The newest run recorded for this SLURM job since RUN (RUN itself until sbatch's job id
    has been recorded on it)."""
    first = registry.run(run_id)
    rows = registry.query("SELECT id FROM runs WHERE job_id = ? AND created_at >= ? "
                          "ORDER BY created_at DESC, id DESC LIMIT 1", [job_id, first["created_at"]])
    return registry.run(rows[0]["id"]) if rows else first


def record_continuation(registry: Registry, run: dict, job_id: str) -> dict:
    """The queued run that continues ``run`` in this job: its resume from the newest verifying
    checkpoint, or — stopped before its first checkpoint — the same request again."""
    executor, options = jobs.executor_options(run)
    if registry.checkpoints(run["id"]) or run["resumed_from_run"]:
        request = jobs.resume_request(registry, run["id"])
    else:
        from adaptr import StageRequest

        request = StageRequest.from_dict(run["request"])
    return jobs.record_queued(registry, request, executor="slurm", options=options, gpus=run["gpus"],
                              job_id=job_id)


def begin(registry: Registry, run_id: str) -> str | None:
    job_id = os.environ.get("SLURM_JOB_ID", "")
    restarted = int(os.environ.get("SLURM_RESTART_COUNT") or 0) > 0
    if job_id and registry.run(run_id)["job_id"] is None:
        # the host records sbatch's answer only after the job's snapshot was taken
        registry.update_run(run_id, job_id=job_id)
    run = newest_in_job(registry, run_id, job_id)
    if run["status"] == "queued":
        return run["id"]
    if not restarted or run["status"] not in _RESUMABLE_WHEN_REQUEUED:
        print(f"[adaptr] run {run['id']} has ended ({run['status']}); nothing to do", file=sys.stderr)
        return None
    if run["status"] == "running":  # requeued without warning: its worker is gone
        registry.end_run(run["id"], RunStatus.INTERRUPTED,
                         f"its SLURM job {job_id} was requeued before the run recorded an end",
                         only_from=(RunStatus.RUNNING,))
    resumed = record_continuation(registry, registry.run(run["id"]), job_id)
    print(f"[adaptr] SLURM job {job_id} restarted: run {resumed['id']} resumes run {run['id']}", file=sys.stderr)
    return resumed["id"]


def end(registry: Registry, run_id: str, step_status: int = 0) -> int:
    """After the job's step; 0 unless the requeue failed."""
    try:
        return _end(registry, run_id, step_status)
    finally:
        if registry.run(run_id)["status"] not in ACTIVE_STATUSES and not _requeued(registry, run_id):
            _close_journal(registry)


def _requeued(registry: Registry, run_id: str) -> bool:
    """Whether a queued run of this job continues it (the job comes back)."""
    job_id = os.environ.get("SLURM_JOB_ID", "")
    return any(r["status"] == RunStatus.QUEUED and r["job_id"] == job_id for r in registry.active_runs())


def _close_journal(registry: Registry) -> None:
    if isinstance(registry, jobs.JournalRegistry):
        registry.close_journal()


def _end(registry: Registry, run_id: str, step_status: int) -> int:
    run = registry.run(run_id)
    job_id = os.environ.get("SLURM_JOB_ID", "")
    if run["status"] in ACTIVE_STATUSES:  # its worker died before it could record an end
        if step_status in (137, 9):  # SIGKILL (the OOM killer, a node agent): resumable
            status, error = "interrupted", f"its process in SLURM job {job_id} was killed before recording an end"
        else:
            status = "failed"
            error = f"its process in SLURM job {job_id} exited with status {step_status} before recording an end"
            last = [line.strip() for line in jobs.tail(run, 5) if line.strip()]
            if last:
                error += "; log: " + " | ".join(last)
        registry.end_run(run_id, status, error)
        return 0
    if run["status"] != "interrupted" or not (run["error"] or "").startswith(jobs.PREEMPT_PREFIX):
        return 0
    resumed = record_continuation(registry, run, job_id)
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
            else:  # the job exits: nothing more will be journaled
                _close_journal(registry)
            return 0
        return end(registry, run_id, int(rest[0]) if rest and rest[0].isdigit() else 0)
    except AdaptrError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
