"""Runs as processes: start a detached run, watch it, cancel it, notice when it died.

The registry is the single source of truth for run state. :func:`submit` records a run as
``queued`` and starts the executor's command as its own process group (``start_new_session``),
with stdout and stderr going to ``<run_dir>/run.log``; that process runs ``adaptr _worker RUN``
(:func:`work`), which waits for its GPUs, then runs the stage. Nobody watches the process: the
next :func:`refresh` (``adaptr runs``, the TUI, ``cancel``) marks a run whose process is gone as
``interrupted``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO

from . import journal, plugins, stages
from .errors import AdaptrError, ConflictError, MachineError, UsageError
from .entities import ACTIVE_STATUSES, RunStatus
from .journal import JournalRegistry  # noqa: F401  (for executors: a job's process on another host)
from .registry import Registry, now
from .stages import PREEMPT_PREFIX, StageRequest

ACTIVE = ACTIVE_STATUSES  # queued, running
LOG_NAME = "run.log"
JOB_FILE = "job.json"  # how a detached run was started: executor, options, argv
POLL_S = 0.5
# A process created this long after its run was recorded is not the run's (the pid was reused).
_PID_REUSE_SLACK_S = 30.0


# -- starting ------------------------------------------------------------------------------


def submit(registry: Registry, request: StageRequest, *, executor: str = "local",
           gpus: str | None = None, options: dict | None = None) -> dict:
    """Check ``request``, record a queued run and start its process; return the run at once.

    Nothing is written when the request, the executor or its options are bad.
    """
    chosen = plugins.get_executor(executor)
    options = dict(options or {})
    if chosen.resolve:
        options = chosen.resolve(registry, options)
    run = record_queued(registry, request, executor=executor, gpus=gpus, options=options)
    argv = chosen.argv(run, options) if chosen.argv is not None else []
    return _launch(registry, run, argv, executor, options)


def record_queued(registry: Registry, request: StageRequest, *, executor: str = "local",
                  gpus: str | None = None, options: dict | None = None, **fields) -> dict:
    """Check ``request`` and the executor's options, then record the run as queued (with
    ``fields``, e.g. a scheduler's ``job_id``) and its ``job.json``; start nothing.

    :func:`submit` is this plus starting the process; an executor whose scheduler restarts a
    job (a SLURM requeue) records the run that continues it with this.
    """
    ctx = stages.prepare(registry, request)
    chosen = plugins.get_executor(executor)
    options = dict(options or {})
    gpus = parse_gpus(gpus)
    if chosen.check:
        chosen.check(options)
    ctx.request = _with_absolute_paths(request)
    run = stages.record_run(ctx, executor=executor, gpus=gpus, status="queued")
    _write_job_file(run, executor, options, [])
    return registry.update_run(run["id"], **fields) if fields else run


def _write_job_file(run: dict, executor: str, options: dict, argv: list[str]) -> None:
    (Path(run["run_dir"]) / JOB_FILE).write_text(json.dumps(
        {"executor": executor, "options": options, "argv": argv}, indent=1))


def parse_gpus(gpus: str | list | tuple | None) -> str | None:
    """``"0,1"`` (or a list of ints) as a normalised device list; None means no reservation."""
    if gpus is None or gpus == "":
        return None
    items = gpus.split(",") if isinstance(gpus, str) else [str(g) for g in gpus]
    try:
        devices = [int(item.strip()) for item in items]
    except ValueError:
        devices = [-1]
    if any(d < 0 for d in devices) or len(set(devices)) != len(devices):
        raise UsageError(f"--gpus {gpus!r} is not a list of distinct device numbers",
                         "write e.g. --gpus 0 or --gpus 0,1")
    return ",".join(str(d) for d in devices)


def _with_absolute_paths(request: StageRequest) -> StageRequest:
    """Data paths made absolute, so the worker (and a later resume) finds them from anywhere."""
    data = request.to_dict()
    for key in ("data", "eval_data"):
        if data.get(key) and Path(data[key]).exists():
            data[key] = str(Path(data[key]).resolve())
    return StageRequest.from_dict(data)


def _launch(registry: Registry, run: dict, argv: list[str], executor: str, options: dict) -> dict:
    run_dir = Path(run["run_dir"])
    _write_job_file(run, executor, options, argv)
    env = {**os.environ, "ADAPTR_REGISTRY": str(registry.root), "PYTHONUNBUFFERED": "1"}
    if run["gpus"]:
        env["CUDA_VISIBLE_DEVICES"] = run["gpus"]
    chosen = plugins.get_executor(executor)
    if chosen.launch is not None:  # a scheduler starts the process, somewhere
        try:
            if chosen.journal:  # it reports through its run directory (adaptr/journal.py)
                journal.prepare(registry, run)
            recorded = chosen.launch(run, options, env)
        except AdaptrError as exc:
            registry.update_run(run["id"], status="failed", error=f"could not start: {exc}", ended_at=now())
            raise
        return registry.update_run(run["id"], **recorded)
    try:
        with open(run_dir / LOG_NAME, "ab") as log:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                    stderr=subprocess.STDOUT, env=env, start_new_session=True)
    except OSError as exc:
        registry.update_run(run["id"], status="failed", error=f"could not start: {exc}", ended_at=now())
        raise MachineError(f"could not start run {run['id']} with {argv[0]}: {exc.strerror or exc}",
                           f"check that the {executor} executor is installed") from None
    return registry.update_run(run["id"], pid=proc.pid, host=socket.gethostname())


def executor_options(run: dict) -> tuple[str, dict]:
    """The executor and options a detached run was started with (``local``, {} otherwise)."""
    path = Path(run["run_dir"]) / JOB_FILE
    if not path.exists():
        return run.get("executor") or "local", {}
    job = json.loads(path.read_text())
    return job["executor"], job.get("options", {})


def resume_request(registry: Registry, run_id: str, *, checkpoint: int | None = None,
                   inexact: bool = False, overrides: dict | None = None) -> StageRequest:
    """The request for stage ``resume``: the run's own inputs, and which run to continue."""
    run = registry.run(run_id)
    request = StageRequest.from_dict(run["request"])
    request.stage = "resume"
    request.config = {"run": run_id, "checkpoint": checkpoint, "inexact": inexact,
                      "overrides": dict(overrides or {})}
    return request


def submit_resume(registry: Registry, run_id: str, request: StageRequest, *, executor: str | None = None,
                  processes: int | None = None, gpus: str | None = None) -> dict:
    """Start ``request`` (from :func:`resume_request`) detached, by default as the run was started:
    same executor, options and devices."""
    original = registry.run(run_id)
    used_executor, used_options = executor_options(original)
    if executor is None:
        executor, options = used_executor, used_options
    else:
        options = {}
    if processes is not None:
        options = {**options, "processes": processes}
    return submit(registry, request, executor=executor, options=options,
                  gpus=gpus if gpus is not None else original["gpus"])


# -- the worker (`adaptr _worker RUN`, in the detached process) ---------------------------


def work(registry: Registry, run_id: str) -> dict | None:
    """Wait for the run's GPUs, then run its stage here; the body of ``adaptr _worker``."""
    run = registry.run(run_id)
    request = StageRequest.from_dict(run["request"])
    if "LOCAL_RANK" in os.environ:
        _die_with_launcher()
        _cpu_ranks_without_cuda()
    if stages.process_rank() != 0:
        if not _await_rank0(registry, run_id):
            return None
        return stages.run_stage(registry, request, run_id=run_id)
    stop = _StopFlag()
    run = _claim(registry, _await_pid(registry, run), stop)
    if run is None:
        return None
    # run_stage(registry, request, run_id=...), in two halves: a cancel that arrives while the
    # stage is being checked (imports can take seconds) must still reach the stage.
    try:
        ctx = stages.prepare(registry, request, run=run)
    except AdaptrError as exc:  # e.g. the data file changed while the run was queued
        registry.end_run(run_id, RunStatus.FAILED, str(exc))
        raise
    if stop.requested:
        ctx.request_stop(*stop.ending("before training began"))
    return stages.execute(ctx, run)


def _die_with_launcher() -> None:
    """Have the kernel SIGKILL this rank when its launcher dies (Linux).

    torchrun starts each rank in a session of its own, so a SIGKILL to the run's process group
    reaches only the launcher; without this the ranks would live on, holding their GPUs.
    """
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    launcher = os.getppid()
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != launcher:  # it died before the line above
        os._exit(1)


def _cpu_ranks_without_cuda() -> None:
    """Ranks of a launch on a machine without CUDA train on the CPU over gloo."""
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")


def _await_pid(registry: Registry, run: dict, timeout: float = 30.0) -> dict:
    """The row once submit() has recorded the process-group leader's pid, or the scheduler's
    job id (milliseconds)."""
    deadline = time.monotonic() + timeout
    while run["pid"] is None and run["job_id"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
        run = registry.run(run["id"])
    return run


def _claim(registry: Registry, run: dict, stop: "_StopFlag") -> dict | None:
    """Mark the run running once no earlier run holds its GPUs; None if cancelled meanwhile."""
    announced = False
    while True:
        refresh(registry)
        with registry.write():
            if registry.run(run["id"])["status"] != RunStatus.QUEUED:
                return None
            if stop.requested:
                registry.end_run(run["id"], *stop.ending("while queued"))
                return None
            holder = _gpu_holder(registry, run)
            if holder is None:
                registry.start_queued_run(run["id"])
                return registry.run(run["id"])
        if not announced:
            print(f"[adaptr] waiting: GPUs {run['gpus']} are held by run {holder}", flush=True)
            announced = True
        time.sleep(POLL_S)


def _gpu_holder(registry: Registry, run: dict) -> str | None:
    """The id of a running run, or an earlier queued one, that wants any of ``run``'s GPUs."""
    if not run["gpus"]:
        return None
    wanted = set(run["gpus"].split(","))
    others = [r for r in registry.active_runs() if r["gpus"] and r["id"] != run["id"]]
    for other in others:
        if other["host"] not in (None, socket.gethostname()) or not wanted & set(other["gpus"].split(",")):
            continue
        earlier = (other["created_at"], other["id"]) < (run["created_at"], run["id"])
        if other["status"] == "running" or earlier:
            return other["id"]
    return None


def _await_rank0(registry: Registry, run_id: str) -> bool:
    """Other ranks start with rank 0; False if the run ended before it began."""
    while (status := registry.run(run_id)["status"]) == "queued":
        time.sleep(POLL_S)
    return status == "running"


class _StopFlag:
    """Turns SIGTERM into a flag for the queued wait (the stage installs its own handler later)."""

    def __init__(self):
        self.requested = False
        self.signum = signal.SIGTERM
        signal.signal(signal.SIGTERM, self._handle)
        signal.signal(signal.SIGUSR1, self._handle)  # a time-limit warning before training began

    def _handle(self, signum, frame):
        self.requested, self.signum = True, signum

    def ending(self, when: str) -> tuple[str, str | None]:
        """SIGTERM: cancelled; SIGUSR1 (a scheduler's warning): interrupted, to be continued."""
        if self.signum == signal.SIGUSR1:
            return "interrupted", f"{PREEMPT_PREFIX} {when}"
        return "cancelled", f"cancelled {when}"


# -- watching ------------------------------------------------------------------------------


def refresh(registry: Registry) -> list[str]:
    """Mark queued or running runs of this host whose process is gone as interrupted.

    Returns the ids it marked. Runs recorded by another host are left alone. First it ingests
    what runs on other hosts wrote into their journals since the last look (adaptr/journal.py);
    a job's own process there (a :class:`adaptr.journal.JournalRegistry`) judges no run.
    """
    if not registry.ingests:
        return []
    journal.ingest(registry)
    host = socket.gethostname()
    marked = []
    for row in registry.active_runs():
        polled = _poll(registry, row)
        if polled is not None:  # the executor's scheduler knows the run
            if polled is False:
                continue
            status, error = polled
        elif row["host"] not in (None, host) or _process_alive(row):
            continue
        else:
            status, error = "interrupted", "its process ended without recording an end (killed, or the machine stopped)"
        if registry.end_run(row["id"], status, error):
            marked.append(row["id"])
    return marked


def _poll(registry: Registry, row: dict):
    """None: the executor has no scheduler; False: the scheduler still has the run pending or
    running; else the ``(status, error)`` it ended with."""
    if not row["job_id"]:
        return None
    executor = plugins.executors().get(row["executor"])
    if executor is None or executor.poll is None:
        return None
    ended = executor.poll(registry.run(row["id"]))
    return False if ended is None else ended


def _process_alive(row: dict) -> bool:
    import psutil

    recorded = _timestamp(row["created_at"])
    if row["pid"] is None:  # between create_run and Popen in submit(): give it time
        return time.time() - recorded < _PID_REUSE_SLACK_S
    try:
        proc = psutil.Process(row["pid"])
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return proc.create_time() < recorded + _PID_REUSE_SLACK_S
    except psutil.Error:
        return False


def _timestamp(iso: str) -> float:
    return dt.datetime.fromisoformat(iso).timestamp()


def wait(registry: Registry, run_id: str, timeout: float | None = None) -> dict:
    """Block until the run has ended (or ``timeout`` seconds passed); return its row."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        refresh(registry)
        run = registry.run(run_id)
        if run["status"] not in ACTIVE or (deadline is not None and time.monotonic() > deadline):
            return run
        time.sleep(POLL_S)


# -- cancelling ----------------------------------------------------------------------------


def cancel(registry: Registry, run_id: str) -> dict:
    """Ask a queued or running run to stop (SIGTERM): it saves a checkpoint and ends cancelled."""
    refresh(registry)
    run = registry.run(run_id)
    if run["status"] not in ACTIVE:
        raise ConflictError(f"run {run_id} has already ended ({run['status']})",
                            "only queued or running runs can be cancelled; `adaptr runs` shows them")
    executor = plugins.executors().get(run["executor"])
    if run["job_id"] and executor is not None and executor.cancel is not None:
        (Path(run["run_dir"]) / stages.CANCEL_MARKER).touch()
        executor.cancel(run)
        return run
    if run["host"] not in (None, socket.gethostname()):
        raise ConflictError(f"run {run_id} runs on {run['host']}, not on this machine",
                            f"run `adaptr cancel {run_id}` on {run['host']}")
    if run["pid"] is None:
        raise ConflictError(f"run {run_id} is still starting", "try again in a moment")
    _send(run, signal.SIGTERM)
    return run


def _send(run: dict, sig: int) -> None:
    """Signal a detached run's whole process group; a foreground run only its own process."""
    try:
        if (Path(run["run_dir"]) / JOB_FILE).exists():
            os.killpg(run["pid"], sig)
        else:
            os.kill(run["pid"], sig)
    except ProcessLookupError:
        pass  # it ended meanwhile; the next refresh records how


# -- logs ----------------------------------------------------------------------------------


def log_path(run: dict) -> Path:
    return Path(run["run_dir"]) / LOG_NAME


def tail(run: dict, n: int = 20) -> list[str]:
    """The last ``n`` lines of the run's log ([] when it has none)."""
    path = log_path(run)
    if not path.exists() or n <= 0:
        return []
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        block = min(size, max(4096, n * 200))
        while True:
            fh.seek(size - block)
            lines = fh.read(block).splitlines()
            if block == size or len(lines) > n:
                break
            block = min(size, block * 4)
    return [line.decode("utf-8", "replace") for line in lines[-n:]]


def follow(registry: Registry, run_id: str, out: IO[str], offset: int = 0) -> dict:
    """Copy the run's log (from byte ``offset``) to ``out`` as it grows, until the run has
    ended; return its row."""
    path = log_path(registry.run(run_id))
    while True:
        refresh(registry)
        run = registry.run(run_id)
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(offset)
                chunk = fh.read()
            offset += len(chunk)
            out.write(chunk.decode("utf-8", "replace"))
            out.flush()
        if run["status"] not in ACTIVE:
            return run
        time.sleep(POLL_S)
