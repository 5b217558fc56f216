"""Job commands: runs, logs, cancel, resume, and the hidden `_worker` a detached run executes."""

from __future__ import annotations

import sys

import click

from .. import config as config_mod
from .. import jobs
from ..entities import RunStatus
from .common import State, echo_err, echo_json, pass_state

RUN_FIELDS = ("id", "stage", "status", "progress_step", "progress_total", "output_ref", "executor",
              "gpus", "pid", "host", "resumed_from_run", "resumed_from_step", "error",
              "created_at", "started_at", "ended_at", "run_dir", "job_id")


def run_json(run: dict) -> dict:
    return {key: run.get(key) for key in RUN_FIELDS}


def _progress(run: dict) -> str:
    if run["progress_total"]:
        return f"{run['progress_step']}/{run['progress_total']}"
    return str(run["progress_step"] or "")


def _runs_table(runs: list[dict]):
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("ID", "STAGE", "STATUS", "PROGRESS", "OUTPUT", "CREATED"):
        table.add_column(column, no_wrap=True)
    for run in runs:
        output = run["output_ref"] or ""
        if run["resumed_from_run"]:
            output = f"{output} (resumed {run['resumed_from_run']}@{run['resumed_from_step']})".strip()
        table.add_row(run["id"], run["stage"], run["status"], _progress(run), output,
                      (run["created_at"] or "")[:19].replace("T", " "))
    return table


@click.command("runs")
@click.option("--json", "as_json", is_flag=True, help="Print JSON on stdout.")
@click.option("--status", type=click.Choice([s.value for s in RunStatus]), help="Only runs with this status.")
@click.option("--limit", type=int, default=None, help="At most this many runs, newest first.")
@pass_state
def runs_cmd(state: State, as_json, status, limit):
    """List runs, newest first (a run whose process died shows as interrupted)."""
    registry = state.registry
    jobs.refresh(registry)
    runs = registry.runs(status=status, limit=limit)
    if as_json:
        echo_json([run_json(r) for r in runs])
    elif runs:
        from .common import console

        console().print(_runs_table(runs))
    else:
        echo_err("no runs yet; start one with `adaptr train STAGE ... --detach`")


@click.command("logs")
@click.argument("run_id", metavar="RUN")
@click.option("-f", "--follow", is_flag=True, help="Keep printing as the log grows, until the run ends.")
@click.option("-n", "--lines", type=int, default=None, help="Only the last N lines.")
@pass_state
def logs_cmd(state: State, run_id, follow, lines):
    """Print a detached run's log."""
    registry = state.registry
    run = registry.run(run_id)
    path = jobs.log_path(run)
    if not path.exists() and not follow:
        echo_err(f"run {run_id} has no log file (only detached runs write {path.name})")
        return
    offset = 0
    if lines is not None:
        offset = path.stat().st_size if path.exists() else 0
        for line in jobs.tail(run, lines):
            click.echo(line)
    elif not follow:
        sys.stdout.write(path.read_text(errors="replace"))
    if follow:
        jobs.follow(registry, run_id, sys.stdout, offset)


@click.command("cancel")
@click.argument("run_id", metavar="RUN")
@click.option("--wait", is_flag=True, help="Wait until the run has ended.")
@pass_state
def cancel_cmd(state: State, run_id, wait):
    """Stop a queued or running run: it saves a checkpoint and ends cancelled."""
    registry = state.registry
    jobs.cancel(registry, run_id)
    echo_err(f"asked run {run_id} to stop; it saves a checkpoint and ends cancelled")
    if wait:
        run = jobs.wait(registry, run_id)
        echo_err(f"run {run_id} ended {run['status']}")


@click.command("resume")
@click.argument("run_id", metavar="RUN")
@click.option("--checkpoint", "step", type=int, default=None,
              help="Resume from this step's checkpoint (default: the newest that verifies).")
@click.option("--inexact", is_flag=True,
              help="Allow changed data or config (recorded on the version).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Change a config value of the run (makes the resume inexact).")
@click.option("--detach", is_flag=True, help="Run as a background process; print the run id.")
@click.option("--executor", default=None, help="How a detached run starts (default: as the run did).")
@click.option("--processes", type=int, default=None, help="Processes for --executor accelerate.")
@click.option("--gpus", default=None, help="Devices for a detached run, e.g. 0,1.")
@pass_state
def resume_cmd(state: State, run_id, step, inexact, sets, detach, executor, processes, gpus):
    """Continue an interrupted or cancelled run from its newest checkpoint that verifies."""
    registry = state.registry
    jobs.refresh(registry)
    request = jobs.resume_request(registry, run_id, checkpoint=step, inexact=inexact,
                                  overrides=config_mod.parse_sets(list(sets)))
    if detach:
        run = jobs.submit_resume(registry, run_id, request, executor=executor, processes=processes, gpus=gpus)
        click.echo(run["id"])
        echo_err(f"resuming {run_id} as run {run['id']}; follow it with `adaptr logs -f {run['id']}`")
        return
    from ..stages import run_stage

    run = run_stage(registry, request)
    click.echo(run["id"])
    echo_err(f"run {run['id']} {run['status']}" + (f": {run['output_ref']}" if run["output_ref"] else ""))


@click.command("_worker", hidden=True)
@click.argument("run_id", metavar="RUN")
@pass_state
def worker_cmd(state: State, run_id):
    """Run a queued run in this process (what a detached run's process executes)."""
    jobs.work(state.registry, run_id)


def register(cli: click.Group) -> None:
    for command in (runs_cmd, logs_cmd, cancel_cmd, resume_cmd, worker_cmd):
        cli.add_command(command)
