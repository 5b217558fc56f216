"""`adaptr demo`: train a small lineage on a generated tiny model and print it."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

import click

from .common import pass_state


@click.command("demo")
@click.option("--dir", "directory", default=".", show_default=True,
              help="Directory to run the demo in: its registry goes to DIR/registry, where `adaptr "
                   "init` puts one and every command run in DIR finds it; the generated model and "
                   "the eval sets go to DIR/adaptr-demo/. DIR must not hold a registry yet.")
@pass_state
def demo_cmd(state, directory):
    """Generate a tiny base, run sft then dpo --from sft-v1 (then a merge), print the lineage."""
    from ..demo import BASE_NAME, FILES_DIR, run_demo
    from .common import console
    from .registry_cmds import lineage_tree
    from .common import RichReporter

    reporter = RichReporter()
    try:
        registry = run_demo(directory, reporter=reporter, echo=lambda text: reporter.message(text))
    finally:
        reporter.finish()
    console().print(lineage_tree(registry, BASE_NAME))
    heldout = Path(directory) / FILES_DIR / "preferences-heldout.jsonl"
    prefix = _command_prefix(state, Path(directory), registry.db_path)
    click.echo(f"\nexplore it: {prefix}adaptr ls   (or {prefix}adaptr tui)", err=True)
    click.echo(f"evaluate it: {prefix}adaptr eval sft-v1 dpo-v1 --data "
               f"{shlex.quote(os.path.relpath(heldout, directory))}", err=True)
    registry.close()


def _command_prefix(state, directory: Path, db_path: Path) -> str:
    """What to type before `adaptr ...` to reach the demo's registry from here: nothing when the
    usual discovery already finds it; a ``cd`` into DIR otherwise (or the --registry it overrides)."""
    from ..errors import NotFoundError
    from ..registry import Registry

    def found_from(cwd: Path) -> bool:
        try:
            found = Registry.locate(state.registry_path, cwd)
        except NotFoundError:  # a --registry / ADAPTR_REGISTRY that names nothing
            return False
        return found is not None and found.resolve() == db_path.resolve()

    if found_from(Path.cwd()):
        return ""
    if found_from(directory):
        return f"cd {shlex.quote(str(directory))} && "
    return f"ADAPTR_REGISTRY={shlex.quote(str(db_path.parent))} "


def register(cli) -> None:
    cli.add_command(demo_cmd)
