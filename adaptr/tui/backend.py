"""Calls the TUI makes into the headless core from worker threads: jobs, runs, CLI commands.

SQLite connections belong to the thread that opened them, so each call here opens its own
:class:`Registry` on the same file. ``adaptr.jobs`` is imported lazily: the TUI still browses a
registry when it is missing, and never imports torch.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import MachineError
from ..registry import Registry
from ..stages import StageRequest

ACTIVE_STATUSES = ("queued", "running")


def jobs_module():
    """``adaptr.jobs``, or a MachineError saying it is not installed in this version."""
    try:
        from .. import jobs
    except ModuleNotFoundError as exc:
        if exc.name != "adaptr.jobs":
            raise
        raise MachineError("running jobs is not available in this version of adaptr",
                           "update adaptr, or run stages with `adaptr train` in a shell") from None
    return jobs


@dataclass
class RunsSnapshot:
    """One poll of the runs table, plus the log tail of the run the user is looking at."""

    runs: list[dict]
    tail_run_id: str | None = None
    tail: list[str] = field(default_factory=list)


def poll_runs(db_path: Path, tail_run_id: str | None, limit: int = 500,
              tail_lines: int = 200) -> RunsSnapshot:
    with Registry(db_path) as registry:
        try:
            jobs = jobs_module()
        except MachineError:
            jobs = None
        if jobs is not None:
            jobs.refresh(registry)
        runs = registry.runs(limit=limit)
        tail: list[str] = []
        run = next((r for r in runs if r["id"] == tail_run_id), None) if tail_run_id else None
        if run is not None and jobs is not None:
            tail = jobs.tail(run, tail_lines)
        return RunsSnapshot(runs=runs, tail_run_id=tail_run_id, tail=tail)


def submit(db_path: Path, request: StageRequest, *, executor: str = "local",
           gpus: str | None = None, options: dict | None = None) -> dict:
    """Start a detached run; raises AdaptrError for bad input (the stage's checks run first)."""
    jobs = jobs_module()
    with Registry(db_path) as registry:
        return jobs.submit(registry, request, executor=executor, gpus=gpus, options=options)


def cancel(db_path: Path, run_id: str) -> dict | None:
    jobs = jobs_module()
    with Registry(db_path) as registry:
        return jobs.cancel(registry, run_id)


@dataclass
class CommandResult:
    args: list[str]
    """What followed ``adaptr`` on the command line (``push sft-v2 --repo ...``)."""
    returncode: int
    stdout: str
    stderr: str

    @property
    def message(self) -> str:
        """The last non-empty line the command printed: its result or its error."""
        for text in (self.stderr, self.stdout) if self.returncode else (self.stdout, self.stderr):
            lines = [line for line in text.strip().splitlines() if line.strip()]
            if lines:
                return lines[-1].removeprefix("error: ")
        return f"exit code {self.returncode}"


def cli_argv(registry_root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "adaptr", "--registry", str(registry_root), *args]


def run_cli(registry_root: Path, *args: str, timeout: float | None = None) -> CommandResult:
    """Run an ``adaptr`` command (push, merge, ...) as a child process and capture its output."""
    argv = cli_argv(registry_root, *args)
    env = {**os.environ, "NO_COLOR": "1"}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    return CommandResult(list(args), proc.returncode, proc.stdout, proc.stderr)


def detect_gpus(timeout: float = 3.0) -> list[tuple[str, str]]:
    """``(index, name)`` of each NVIDIA GPU, asked of nvidia-smi (not torch); empty if none."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return []
    try:
        proc = subprocess.run([exe, "--query-gpu=index,name", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return []
    gpus = []
    for line in proc.stdout.splitlines():
        index, _, name = line.partition(",")
        if index.strip().isdigit():
            gpus.append((index.strip(), name.strip()))
    return gpus
