"""The `slurm` executor: options, the batch script, and sbatch / squeue / scancel."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from adaptr import MachineError, UsageError, jobs

from . import profile

OPTIONS = ("profile", "nodes", "gpus_per_node", "tasks_per_node", "time", "partition", "account", "qos",
           "signal_seconds", "processes")
DEFAULT_SIGNAL_SECONDS = 90
SCRIPT_NAME = "slurm.sbatch"
# squeue's job states: still in the scheduler's hands (the row is left as it is) ...
ALIVE = {"PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "SUSPENDED", "REQUEUED", "REQUEUE_FED",
         "REQUEUE_HOLD", "RESIZING", "SIGNALING", "STAGE_OUT", "RESV_DEL_HOLD", "STOPPED", "SPECIAL_EXIT"}
# ... and how an ended job ends a run whose row is still queued or running (the worker records
# the end itself when it can; these are the ends it could not record).
ENDED = {
    "COMPLETED": ("interrupted", "its SLURM job {job} completed without the run recording an end"),
    "FAILED": ("failed", "its SLURM job {job} failed"),
    "CANCELLED": ("cancelled", "its SLURM job {job} was cancelled"),
    "TIMEOUT": ("interrupted", "its SLURM job {job} hit its time limit; resume it from its last checkpoint"),
    "PREEMPTED": ("interrupted", "its SLURM job {job} was preempted; resume it from its last checkpoint"),
    "NODE_FAIL": ("interrupted", "its SLURM job {job} lost its node (NODE_FAIL); resume it from its last checkpoint"),
    "BOOT_FAIL": ("failed", "its SLURM job {job} could not boot its node (BOOT_FAIL)"),
    "DEADLINE": ("interrupted", "its SLURM job {job} passed its deadline"),
    "OUT_OF_MEMORY": ("failed", "its SLURM job {job} ran out of memory"),
}
# Pending reasons that mean the job can never start as submitted.
HOPELESS = ("PartitionConfig", "PartitionNodeLimit", "PartitionTimeLimit", "BadConstraints", "InvalidAccount",
            "InvalidQOS", "AccountNotAllowed", "QOSJobLimit", "ReqNodeNotAvail")
_NO_CONTROLLER = ("resolve_ctls_from_dns_srv", "Unable to contact slurm controller", "Could not establish a configuration source",
                  "Unable to process configuration file",
                  "Zero Bytes were transmitted", "Connection refused")
_TIME = re.compile(r"^(?:(?P<d>\d+)-)?(?P<a>\d+)(?::(?P<b>\d+))?(?::(?P<c>\d+))?$")


# -- options ---------------------------------------------------------------------------------


def resolve(registry, options: dict) -> dict:
    """The profile's values under the given options (command line wins)."""
    given = {k: v for k, v in options.items() if v is not None}
    base = profile.load(registry.root, given.get("profile"))
    unknown = sorted(set(base) - set(OPTIONS) - {"profile"})
    if unknown:
        raise UsageError(f"unknown key(s) in the SLURM profile: {', '.join(unknown)}",
                         f"known: {', '.join(o for o in OPTIONS if o != 'profile')}")
    return {**base, **given}


def check(options: dict) -> None:
    """Everything knowable before submitting: the options, sbatch on PATH, and `sbatch
    --test-only` (partition, account, node and time limits as this cluster sees them)."""
    unknown = sorted(set(options) - set(OPTIONS))
    if unknown:
        raise UsageError(f"unknown slurm executor option(s): {', '.join(unknown)}", f"known: {', '.join(OPTIONS)}")
    for key in ("nodes", "tasks_per_node", "processes", "gpus_per_node", "signal_seconds"):
        value = options.get(key)
        least = 0 if key == "gpus_per_node" else 1
        if value is not None and (isinstance(value, bool) or not str(value).isdigit() or int(value) < least):
            raise UsageError(f"--{key.replace('_', '-')} {value!r} is not a number of at least {least}",
                             f"write e.g. --{key.replace('_', '-')} 2")
    if options.get("time") is not None:
        limit = time_seconds(options["time"])
        lead = int(options.get("signal_seconds") or DEFAULT_SIGNAL_SECONDS)
        if limit <= 2 * lead:
            raise UsageError(f"--time {options['time']} ({limit} s) leaves no time to train before the "
                             f"checkpoint warning {lead} s before its end",
                             f"ask for more than {2 * lead} s, or lower signal_seconds in the profile")
    for tool in ("sbatch", "squeue", "scancel", "scontrol"):
        if shutil.which(tool) is None:
            raise UsageError(f"the slurm executor needs {tool}, which is not on PATH",
                             "run on a SLURM login node, or install slurm-client and point SLURM_CONF at the cluster")
    conf = os.environ.get("SLURM_CONF")
    if conf and not Path(conf).is_file():  # sbatch would retry for a minute
        raise UsageError(f"SLURM_CONF names {conf}, which does not exist", "point SLURM_CONF at the cluster's slurm.conf")
    probe = _run(["sbatch", "--test-only", *sbatch_options(options), "--wrap", "true"])
    if probe.returncode != 0:
        why = _first_error(probe.stderr) or f"exit code {probe.returncode}"
        if any(words in why for words in _NO_CONTROLLER):
            raise UsageError(f"no SLURM controller answers ({why})",
                             "set SLURM_CONF to the cluster's slurm.conf, or run on a login node of the cluster")
        raise UsageError(f"SLURM refuses this job: {why}",
                         "check --partition, --account, --qos, --nodes and --time against `sinfo`")


def time_seconds(value) -> int:
    """SLURM's time formats: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S."""
    match = _TIME.match(str(value).strip())
    if not match:
        raise UsageError(f"--time {value!r} is not a SLURM time limit", "write e.g. --time 4:00:00 or --time 1-00:00:00")
    d, a, b, c = (int(match[g]) if match[g] else None for g in ("d", "a", "b", "c"))
    if d is not None:  # D-H[:M[:S]]
        return ((d * 24 + a) * 60 + (b or 0)) * 60 + (c or 0)
    if c is not None:
        return (a * 60 + b) * 60 + c
    if b is not None:
        return a * 60 + b
    return a * 60


def tasks_per_node(options: dict) -> int:
    """One rank per GPU; without GPUs, --processes (default 1) ranks per node."""
    explicit = options.get("tasks_per_node") or options.get("processes")
    if explicit:
        return int(explicit)
    return int(options.get("gpus_per_node") or 0) or 1


def sbatch_options(options: dict) -> list[str]:
    out = [f"--nodes={int(options.get('nodes') or 1)}", f"--ntasks-per-node={tasks_per_node(options)}"]
    if options.get("gpus_per_node"):
        out.append(f"--gpus-per-node={int(options['gpus_per_node'])}")
    for key in ("time", "partition", "account", "qos"):
        if options.get(key) is not None:
            out.append(f"--{key}={options[key]}")
    return out


# -- the batch script ------------------------------------------------------------------------


def batch_script(run: dict, options: dict, registry_root: str, python: str = sys.executable) -> str:
    """The job: `begin` picks the run to execute (on a requeue: the resume run), srun starts one
    rank per task (rank env from SLURM, rendezvous at the first node), `end` requeues the job if
    the run stopped on the time-limit warning."""
    lead = int(options.get("signal_seconds") or DEFAULT_SIGNAL_SECONDS)
    run_dir = Path(run["run_dir"])
    nodes, tasks = int(options.get("nodes") or 1), tasks_per_node(options)
    lines = ["#!/bin/bash", f"#SBATCH --job-name=adaptr-{run['id']}", f"#SBATCH --output={run_dir / jobs.LOG_NAME}",
             "#SBATCH --open-mode=append", "#SBATCH --requeue", f"#SBATCH --signal=USR1@{lead}",
             f"#SBATCH --chdir={run_dir}", *(f"#SBATCH {opt}" for opt in sbatch_options(options)),
             f"# Written by adaptr for run {run['id']} (executor slurm). A requeue of this job continues",
             "# the run from its newest checkpoint.",
             "set -uo pipefail",
             f"export ADAPTR_REGISTRY={shlex.quote(str(registry_root))}",
             f"export ADAPTR_JOURNAL={shlex.quote(str(run_dir))}  # a journal, never adaptr.db (docs/jobs.md)",
             "export PYTHONUNBUFFERED=1",
             "export ADAPTR_TERM_INTERRUPTS=1  # SIGTERM without `adaptr cancel` is SLURM's: resumable",
             f"PYTHON={shlex.quote(python)}",
             f'run=$("$PYTHON" -m adaptr_slurm.job begin {run["id"]}) || exit 1',
             '[ -n "$run" ] || exit 0  # the run has ended: nothing left to do']
    if nodes * tasks > 1:
        lines += ['export MASTER_ADDR=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)',
                  "export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))",
                  # torch's env:// rendezvous; each rank gets SLURM's signals itself (no launcher between)
                  "rank_env='export RANK=$SLURM_PROCID LOCAL_RANK=$SLURM_LOCALID WORLD_SIZE=$SLURM_NTASKS "
                  "LOCAL_WORLD_SIZE=$SLURM_NTASKS_PER_NODE;'"]
    else:
        lines += ["rank_env=''"]
    lines += ['srun --kill-on-bad-exit=1 bash -c "$rank_env"\' exec "$0" -m adaptr _worker "$1"\' "$PYTHON" "$run"',
              'exec "$PYTHON" -m adaptr_slurm.job end "$run" "$?"', ""]
    return "\n".join(lines)


# -- the scheduler -----------------------------------------------------------------------------


def launch(run: dict, options: dict, env: dict) -> dict:
    registry_root = env["ADAPTR_REGISTRY"]
    script = Path(run["run_dir"]) / SCRIPT_NAME
    script.write_text(batch_script(run, options, registry_root))
    done = _run(["sbatch", "--parsable", str(script)], env=env)
    if done.returncode != 0:
        raise MachineError(f"sbatch refused run {run['id']}: {_first_error(done.stderr) or done.returncode}",
                           f"the batch script is {script}")
    return {"job_id": done.stdout.strip().split(";")[0], "host": None, "pid": None}


def job_state(job_id: str) -> tuple[str, str] | None:
    """(state, reason) as squeue reports them; None once SLURM has forgotten the job;
    ("UNKNOWN", why) when no SLURM answers here (no squeue on PATH, the controller down)."""
    if shutil.which("squeue") is None:
        return "UNKNOWN", "squeue is not on PATH"
    done = _run(["squeue", "-h", "--states=all", "-j", str(job_id), "-o", "%T|%r"])
    line = done.stdout.strip().splitlines()
    if done.returncode != 0 and "Invalid job id" not in done.stderr:
        return "UNKNOWN", _first_error(done.stderr)
    if not line:
        return None
    state, _, reason = line[0].partition("|")
    return state.strip(), reason.strip()


def poll(run: dict):
    job = run["job_id"]
    seen = job_state(job)
    if seen is None:
        return "interrupted", f"SLURM no longer knows its job {job}; resume it from its last checkpoint"
    state, reason = seen
    if state == "UNKNOWN":  # not knowing is not a reason to end the run: ask again next time
        return None
    if state == "PENDING" and reason in HOPELESS:
        _run(["scancel", str(job)])
        return "failed", f"its SLURM job {job} can never start ({reason}); it was cancelled"
    if state in ("PENDING", "REQUEUED", "REQUEUE_HOLD") and run["status"] == "running":
        # requeued by SLURM (a node failure, a preemption without warning): the worker is gone
        return "interrupted", (f"its SLURM job {job} was requeued ({reason or state}); it resumes from "
                               "its last checkpoint when the job restarts")
    if state in ALIVE:
        return None
    status, text = ENDED.get(state, ("failed", "its SLURM job {job} ended " + state))
    error = text.format(job=job)
    if status == "failed":
        last = jobs.tail(run, 5)
        if last:
            error += "; log: " + " | ".join(line.strip() for line in last if line.strip())
    return status, error


def cancel(run: dict) -> None:
    """A running run gets SIGTERM in its job steps (it saves a checkpoint and ends cancelled);
    a queued one is removed from the queue."""
    seen = job_state(run["job_id"])
    if run["status"] == "running" and seen and seen[0] == "RUNNING":
        done = _run(["scancel", "--signal=TERM", str(run["job_id"])])
    else:
        done = _run(["scancel", str(run["job_id"])])
    if done.returncode != 0:
        raise MachineError(f"scancel {run['job_id']} failed: {_first_error(done.stderr)}",
                           "check the job with `squeue -j JOB`")


def requeue(job_id: str) -> subprocess.CompletedProcess:
    return _run(["scontrol", "requeue", str(job_id)])


def _run(argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60)
    except FileNotFoundError:
        raise UsageError(f"{argv[0]} is not on PATH", "the slurm executor needs the SLURM commands") from None


def _first_error(text: str) -> str:
    for line in (text or "").splitlines():
        line = line.strip()
        if line:
            return re.sub(r"^(sbatch|scancel|squeue): error: ", "", line)
    return ""
