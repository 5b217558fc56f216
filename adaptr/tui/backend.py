"""Calls the TUI makes into the headless core from worker threads: jobs, runs, push, resume.

SQLite connections belong to the thread that opened them, so each call here opens its own
:class:`Registry` on the same file. ``adaptr.jobs`` is imported lazily: the TUI still browses a
registry when it is missing, and never imports torch.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import click

from ..errors import MachineError, UsageError
from ..registry import Registry
from ..stages import StageRequest



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


def parse_options(command: click.Command, argv: list[str]) -> dict:
    """A dialog's options parsed by the CLI command's own parser, so both take the same options."""
    try:
        with command.make_context(command.name, list(argv)) as ctx:
            return dict(ctx.params)
    except click.exceptions.Exit:
        raise UsageError(f"{command.name} shows no help here", f"run `adaptr {command.name} --help` in a shell") from None
    except click.ClickException as exc:
        raise UsageError(exc.format_message(), f"see `adaptr {command.name} --help`") from None


def push(db_path: Path, ref: str, options: list[str]) -> list[dict]:
    """``adaptr push REF OPTIONS`` done by the core: one result per version pushed or present."""
    from .. import hub
    from ..cli.hub import push as push_command

    params = parse_options(push_command, [ref, *options])
    with Registry(db_path) as registry:
        return hub.push(registry, ref, params["repo_id"], private=params["private"],
                        with_parents=params["with_parents"])


def resume(db_path: Path, run_id: str, options: list[str]) -> dict:
    """``adaptr resume RUN --detach OPTIONS`` done by the core: the new run."""
    from ..cli.jobs import resume_cmd
    from ..config import parse_sets

    params = parse_options(resume_cmd, [run_id, "--detach", *options])
    jobs = jobs_module()
    with Registry(db_path) as registry:
        jobs.refresh(registry)
        request = jobs.resume_request(registry, run_id, checkpoint=params["step"], inexact=params["inexact"],
                                      overrides=parse_sets(list(params["sets"])))
        return jobs.submit_resume(registry, run_id, request, executor=params["executor"],
                                  processes=params["processes"], gpus=params["gpus"])


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
