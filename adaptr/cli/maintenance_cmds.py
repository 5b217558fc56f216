"""Upkeep commands: plugins, doctor, gc."""

from __future__ import annotations

import platform
import sqlite3
import sys

import click

from ..errors import IntegrityError, NotFoundError, UsageError
from .common import State, console, echo_err, echo_json, pass_state


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print JSON objects to stdout.")
def plugins_cmd(as_json):
    """List loaded plugins with the stages, executors, evaluators and hooks they provide."""
    from .. import plugins

    described = plugins.describe()
    if as_json:
        echo_json(described)
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAME", "STAGES", "EXECUTORS", "EVALUATORS", "HOOKS", "MODULE"):
        table.add_column(column)
    for p in described:
        module = p["module"] if not p.get("error") else f"failed to load: {p['error']}"
        table.add_row(p["name"], ", ".join(p["stages"]), ", ".join(p["executors"]),
                      ", ".join(p["evaluators"]), ", ".join(p["hooks"]), module)
    console().print(table)


def _installed() -> dict[str, str | None]:
    """Every library adaptr reports, its version or None when it is not installed."""
    from ..records import LIBRARIES, library_versions

    found = library_versions()
    return {name: found.get(name) for name in LIBRARIES}


def torch_report() -> dict:
    """CUDA as torch sees it (imports torch: seconds)."""
    try:
        import torch
    except ImportError as exc:
        return {"error": f"torch does not import: {exc}"}
    report = {"cuda_available": torch.cuda.is_available(), "cuda_version": torch.version.cuda,
              "devices": []}
    if report["cuda_available"]:
        report["devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        report["bf16"] = torch.cuda.is_bf16_supported()
    try:
        import bitsandbytes  # noqa: F401

        report["bitsandbytes_imports"] = True
    except Exception as exc:  # bitsandbytes raises more than ImportError on CPU-only machines
        report["bitsandbytes_imports"] = f"no ({type(exc).__name__})"
    return report


@click.command("doctor")
@click.option("--torch", "check_torch", is_flag=True, help="Also import torch to check CUDA (slower).")
@click.option("--quick", is_flag=True, help="Compare file presence and sizes only; hash nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON to stdout.")
@pass_state
def doctor_cmd(state: State, check_torch, quick, as_json):
    """Report the environment and verify every artifact in the registry (exit 2 on a problem)."""
    from ..maintenance import check_health

    report = {"python": sys.version.split()[0], "platform": platform.platform(),
              "sqlite": sqlite3.sqlite_version, "libraries": _installed()}
    if check_torch:
        report["torch"] = torch_report()
    problems = []
    try:
        registry = state.registry
    except NotFoundError as exc:
        report["registry"] = {"path": None, "note": exc.message}
    else:
        checked, problems = check_health(registry, hashes=not quick)
        report["registry"] = {"path": str(registry.root), "checked": checked,
                              "problems": [{"ref": p.ref, "message": p.message} for p in problems]}
    if as_json:
        echo_json(report)
    else:
        _print_report(report)
    if problems:
        raise IntegrityError(f"{len(problems)} artifact(s) failed verification",
                             "restore the files, or remove the damaged versions with `adaptr rm REF`")


def _print_report(report: dict) -> None:
    from .render import fields_table

    rows = [("python", report["python"]), ("platform", report["platform"]), ("sqlite", report["sqlite"])]
    for name, version in report["libraries"].items():
        note = version or "not installed"
        if name == "torch" and version and "+cpu" in version:
            note += " (CPU-only build)"
        rows.append((name, note))
    if "torch" in report:
        torch_info = report["torch"]
        rows += [(f"torch.{k}", v) for k, v in torch_info.items()]
    else:
        rows.append(("cuda", "not checked (pass --torch)"))
    registry = report["registry"]
    rows.append(("registry", registry["path"] or registry["note"]))
    if registry["path"]:
        rows.append(("verified", f"{registry['checked'] - len(registry['problems'])}/{registry['checked']}"))
    rows += [(f"problem {p['ref']}", p["message"]) for p in registry.get("problems", [])]
    console().print(fields_table(rows))


GC_CONFIRM_ABOVE = 5  # removing more than this many items needs --yes


@click.command("gc")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@click.option("--yes", is_flag=True, help=f"Remove even when there are more than {GC_CONFIRM_ABOVE} items.")
@pass_state
def gc_cmd(state: State, dry_run, yes):
    """Remove leftovers: dead staging dirs, crashed publishes, unsealed checkpoints of ended runs.

    A directory under adapters/ or bases/ that the registry has no record of is listed and kept.
    """
    from ..maintenance import collect_garbage

    registry = state.registry
    found = collect_garbage(registry, dry_run=True)
    doomed = [item for item in found if not item.keep]
    if not dry_run and len(doomed) > GC_CONFIRM_ABOVE and not yes:
        _list_leftovers(registry, found, "would remove")
        raise UsageError(f"gc would remove {len(doomed)} items (listed above)",
                         "check the list, then run `adaptr gc --yes`")
    if not dry_run:
        found = collect_garbage(registry)
    _list_leftovers(registry, found, "would remove" if dry_run else "removed")
    if not found:
        echo_err("nothing to remove")


def _list_leftovers(registry, leftovers, verb: str) -> None:
    for item in leftovers:
        click.echo(f"{'kept' if item.keep else verb} {registry.store.relative(item.path)}  ({item.reason})")


def register(cli: click.Group) -> None:
    for command in (plugins_cmd, doctor_cmd, gc_cmd):
        cli.add_command(command)
