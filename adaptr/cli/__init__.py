"""The `adaptr` command: a thin click front end over the core.

Errors: an :class:`adaptr.AdaptrError` becomes one line on stderr and exit code 2; the traceback
is shown only with ``--debug``.
"""

from __future__ import annotations

import sqlite3
import sys

import click

from .. import plugins
from ..dbfile import damaged_database_error
from ..errors import AdaptrError
from .common import RichReporter, State, echo_json, pass_state  # noqa: F401  (re-exported for plugin commands)


class AdaptrGroup(click.Group):
    """Translates AdaptrError into one line + exit code 2."""

    def invoke(self, ctx):
        try:
            try:
                return super().invoke(ctx)
            except sqlite3.DatabaseError as exc:
                damaged = damaged_database_error(exc)
                if damaged is None:
                    raise
                raise damaged from exc
        except AdaptrError as exc:
            if ctx.obj is not None and getattr(ctx.obj, "debug", False):
                raise
            click.echo(f"error: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""), err=True)
            ctx.exit(2)


@click.group(cls=AdaptrGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--registry", "registry_path", envvar="ADAPTR_REGISTRY", metavar="PATH",
              help="Registry directory or adaptr.db file (default: nearest ./registry upwards).")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="adaptr")
@click.pass_context
def cli(ctx, registry_path, debug):
    """Manage LoRA/PEFT adapters: registry, lineage, training stages, Hub sync."""
    ctx.obj = State(registry_path=registry_path, debug=debug)
    ctx.call_on_close(ctx.obj.close)


def _add_builtin_commands() -> None:
    from . import registry_cmds

    registry_cmds.register(cli)
    for module_name in ("train", "evals", "jobs", "hub", "demo", "tui"):
        try:
            module = __import__(f"adaptr.cli.{module_name}", fromlist=["register"])
        except ModuleNotFoundError as exc:
            if exc.name != f"adaptr.cli.{module_name}":
                raise
            continue
        module.register(cli)


def build_cli() -> click.Group:
    _add_builtin_commands()
    try:
        plugins.load_plugins()
        plugins.pm.hook.register_commands(cli=cli)
    except AdaptrError as exc:
        click.echo(f"error: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""), err=True)
        sys.exit(2)
    return cli


def main(argv: list[str] | None = None) -> None:
    build_cli()
    try:
        code = cli.main(args=argv, prog_name="adaptr", standalone_mode=False)
    except click.UsageError as exc:  # an unknown option, a missing argument, a bad choice
        path = exc.ctx.command_path if exc.ctx else "adaptr"
        _fail(exc.format_message(), f"see `{path} --help`")
    except click.ClickException as exc:
        _fail(exc.format_message(), "see `adaptr --help`")
    except click.Abort:
        click.echo("error: interrupted", err=True)
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


def _fail(message: str, hint: str) -> None:
    """One line on stderr and exit code 2, like every other refusal."""
    click.echo(f"error: {' '.join(message.split())} (hint: {hint})", err=True)
    sys.exit(2)
